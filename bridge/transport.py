"""HTTP/1.1 keep-alive transport for the destinations, behind httpx's transport seam.

One ``Http1Transport`` per destination: a pool of at most ``max_connections``
persistent connections, httptools (the parser uvicorn uses) reading the
answers, asyncio writing the requests. It does only what a webhook relay
needs and nothing per request that it doesn't: no cookie jar, no redirects, no
auth flow, no content decoding (it asks for ``identity``), no proxy. It reads
at most ``answer_limit`` bytes of an answer and then drops the connection, so
a huge answer never fills memory. Errors are httpx's: ``ConnectError``,
``ConnectTimeout``, ``ReadTimeout``, ``PoolTimeout``, ``ReadError``,
``RemoteProtocolError``, ``LocalProtocolError``.

Timeouts come from the request's ``timeout`` extension (``httpx.Timeout``'s
dict): ``connect`` to open a connection (TLS included), ``pool`` to wait for a
free one, ``read`` for the whole answer once the request is written.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import cast

import httptools
import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}
HEAD_LIMIT = 100 * 1024  # an answer's status line and headers, at most (httpcore's limit too)
_Key = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One persistent connection; one exchange at a time."""

    def __init__(self, answer_limit: int) -> None:
        self.answer_limit = answer_limit
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._answer: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.truncated = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False
        self.head_size = 0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.done():  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))
        if not self.headers_done:  # headers without end must not fill memory either
            self.head_size += len(data)
            if self.head_size > HEAD_LIMIT:
                self._fail(httpx.RemoteProtocolError("the answer's headers are too large"))

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended()

    def _ended(self) -> None:
        """The server closed: an answer delimited by the close is complete, any other is cut."""
        answer = self._answer
        if answer is None or answer.done():
            return
        if self.headers_done and not self._delimited():
            self.complete = True
            answer.set_result(None)
        elif self.received:
            self._fail(httpx.ReadError("the server closed the connection mid-answer"))
        else:
            self._fail(httpx.RemoteProtocolError("server disconnected without sending a response"))

    def _delimited(self) -> bool:
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return True
        return False

    # --- httptools callbacks ----------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        room = self.answer_limit - len(self.body)
        if len(body) > room:
            self.body += body[: max(room, 0)]
            self.truncated = True
            self.complete = True  # enough to classify; the rest is not read
            if self._answer is not None and not self._answer.done():
                self._answer.set_result(None)
            self.close()
            return
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it after the call
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    # --- use --------------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and self.complete
            and not self.truncated
            and self.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    async def exchange(self, data: bytes, timeout: float | None) -> None:
        """Write one request and wait for its whole answer (or the limit)."""
        assert self.transport is not None
        self._reset()
        loop = asyncio.get_running_loop()
        answer = self._answer = loop.create_future()
        # a timer on the answer itself: cheaper than a timeout scope around the wait
        timer = None if timeout is None else loop.call_later(timeout, self._time_out, timeout)
        self.transport.write(data)
        try:
            await answer
        finally:
            if timer is not None:
                timer.cancel()
            self._answer = None

    def _time_out(self, timeout: float) -> None:
        self._fail(httpx.ReadTimeout(f"no complete answer within {timeout:g}s"))


class Http1Transport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        max_connections: int = 10,
        *,
        keepalive_expiry: float = 5.0,
        answer_limit: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.answer_limit = answer_limit
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._clock = clock
        self._slots = asyncio.Semaphore(max_connections)  # requests in flight: at most this
        self._idle: dict[_Key, list[_Connection]] = {}
        self._open: set[_Connection] = set()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()  # certifi's roots, SSL_CERT_FILE honoured
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        data = _serialize(request)
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        key = (url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme])
        if self._slots.locked():  # wait for a slot, within the pool timeout
            try:  # a timeout scope, not wait_for: no task of its own
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in time") from None
        else:
            await self._slots.acquire()  # a slot is free: taken at once, nothing to time
        try:
            conn = self._take_idle(key) or await self._connect(key, timeouts.get("connect"))
            try:
                await conn.exchange(data, timeouts.get("read"))
            except BaseException:
                self._discard(conn)
                raise
            status = conn.parser.get_status_code()
            response = httpx.Response(
                status,
                headers=conn.headers,
                content=bytes(conn.body),
                request=request,
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason},
            )
            if conn.reusable:
                conn.idle_since = self._clock()
                self._idle.setdefault(key, []).append(conn)
            else:
                self._discard(conn)
            return response
        finally:
            self._slots.release()

    def _take_idle(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        now = self._clock()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed
            if conn.reusable and now - conn.idle_since < self.keepalive_expiry:
                return conn
            self._discard(conn)
        return None

    async def _connect(self, key: _Key, timeout: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self.answer_limit),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                ),
                timeout,
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"could not connect within {timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        if conn.transport is None:  # uvloop calls connection_made a moment later
            conn.connection_made(transport)
        self._open.add(conn)
        return conn

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def aclose(self) -> None:
        for conn in list(self._open):
            self._discard(conn)
        self._idle.clear()


def _serialize(request: httpx.Request) -> bytes:
    """The request's bytes: request line, headers, body. Host and Content-Length are among the
    headers: httpx adds them to a request built from content, a destination sets them itself
    on one built from a stream."""
    body = request.content  # the bridge's requests always carry their body in memory
    fields = request.headers.raw
    head = b"".join([b"%s: %s\r\n" % field for field in fields])
    # each field ends in the only CR LF it may hold: any other is a header injected
    if head.count(b"\r") != len(fields) or head.count(b"\n") != len(fields):
        raise httpx.LocalProtocolError("a header holds a line break")
    line = b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)
    return b"".join((line, head, b"\r\n", body))
