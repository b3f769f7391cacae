"""bridge.transport against real servers on loopback that say exactly the bytes each case needs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trustme

from bridge import worker
from bridge.transport import Http1Transport
from tests import h2answer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
TIMEOUTS = httpx.Timeout(2.0).as_dict()


class Server:
    """A loopback server: counts connections and keeps every request's bytes."""

    def __init__(self, answer: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    def url(self, path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


async def read_request(reader: asyncio.StreamReader, server: Server) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    request = head + await reader.readexactly(length)
    server.requests.append(request)
    return request


def keep_answering(answer: bytes, delay: float = 0.0) -> Callable[[Server], Handler]:
    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await read_request(reader, server)
                if delay:
                    await asyncio.sleep(delay)
                writer.write(answer)
                await writer.drain()

        return handler

    return make


def answer_once(answer: bytes, close: bool = True) -> Callable[[Server], Handler]:
    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader, server)
            writer.write(answer)
            await writer.drain()
            if not close:
                await asyncio.sleep(30)

        return handler

    return make


def serving(make: Callable[[Server], Handler], tls: ssl.SSLContext | None = None) -> Server:
    server = Server(lambda r, w: asyncio.sleep(0), tls)
    server.answer = make(server)
    return server


def post(url: str, headers: dict[str, str] | None = None) -> httpx.Request:
    body = b'{"a":1}'
    request = httpx.Request(
        "POST", url, content=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    request.extensions["timeout"] = TIMEOUTS
    return request


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_keep_alive_reuses_one_connection_and_sends_exact_bytes() -> None:
    async def go() -> None:
        async with serving(keep_answering(OK)) as server:
            transport = Http1Transport(4)
            for _ in range(5):
                response = await transport.handle_async_request(post(server.url("/a?b=c")))
                assert response.status_code == 200
                assert response.json() == {"ok": True}
                assert response.headers["content-type"] == "application/json"
            assert server.connections == 1
            assert server.requests[0] == (
                b"POST /a?b=c HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                b'Content-Length: 7\r\n\r\n{"a":1}' % server.port
            )
            await transport.aclose()

    run(go())


def test_an_answer_ended_by_the_close_is_whole_and_its_connection_not_kept() -> None:
    async def go() -> None:
        answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"
        async with serving(answer_once(answer)) as server:
            transport = Http1Transport(4)
            for _ in range(2):
                response = await transport.handle_async_request(post(server.url()))
                assert response.content == b"all of it"
            assert server.connections == 2

    run(go())


def test_chunked_answers_are_joined() -> None:
    async def go() -> None:
        answer = (
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n"
            b"retry-after: 7\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        async with serving(keep_answering(answer)) as server:
            transport = Http1Transport(4)
            response = await transport.handle_async_request(post(server.url()))
            assert (response.status_code, response.content) == (503, b"hello world")
            assert response.headers["retry-after"] == "7"
            assert response.extensions["reason_phrase"] == b"Service Unavailable"
            await transport.handle_async_request(post(server.url()))
            assert server.connections == 1

    run(go())


def test_a_huge_answer_is_cut_at_the_limit_and_its_connection_dropped() -> None:
    async def go() -> None:
        size = 5 * 1024 * 1024
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size
        async with serving(keep_answering(answer)) as server:
            transport = Http1Transport(4, answer_limit=1000)
            response = await transport.handle_async_request(post(server.url()))
            assert response.content == b"x" * 1000
            await transport.handle_async_request(post(server.url()))
            assert server.connections == 2

    run(go())


@pytest.mark.parametrize(
    "head",
    [
        b"".join(b"x-pad-%d: %s\r\n" % (n, b"a" * 1000) for n in range(2048)),  # many headers
        b"x-pad: " + b"a" * (2 * 1024 * 1024),  # one header without end
    ],
    ids=["many", "endless"],
)
def test_headers_past_the_limit_are_an_error_not_memory_held_until_the_timeout(
    head: bytes,
) -> None:
    async def go() -> None:
        answer = b"HTTP/1.1 200 OK\r\n" + head  # never ends its headers, never closes
        async with serving(answer_once(answer, close=False)) as server:
            transport = Http1Transport(4)
            with pytest.raises(httpx.RemoteProtocolError, match="headers are too large"):
                await transport.handle_async_request(post(server.url()))
            assert transport._open == set()

    run(go())


def test_a_refused_connection_is_a_connect_error() -> None:
    async def go() -> None:
        async with serving(keep_answering(OK)) as server:
            url = server.url()
        transport = Http1Transport(4)
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(post(url))

    run(go())


def test_no_answer_is_a_read_timeout_and_the_connection_is_dropped() -> None:
    async def go() -> None:
        async with serving(keep_answering(OK, delay=5)) as server:
            transport = Http1Transport(4)
            request = post(server.url())
            request.extensions["timeout"] = httpx.Timeout(0.2).as_dict()
            with pytest.raises(httpx.ReadTimeout):
                await transport.handle_async_request(request)
            assert transport._open == set()

    run(go())


@pytest.mark.parametrize(
    ("answer", "close", "error"),
    [
        (b"", True, httpx.RemoteProtocolError),  # closed without a byte
        (b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nhalf", True, httpx.ReadError),
        (b"SMTP ready\r\n\r\n", False, httpx.RemoteProtocolError),  # not HTTP
    ],
)
def test_broken_answers_are_httpx_errors(
    answer: bytes, close: bool, error: type[Exception]
) -> None:
    async def go() -> None:
        async with serving(answer_once(answer, close=close)) as server:
            transport = Http1Transport(4)
            with pytest.raises(error):
                await transport.handle_async_request(post(server.url()))
            assert transport._open == set()

    run(go())


def test_a_switch_of_protocols_is_an_answer_like_any_other_and_the_connection_is_dropped() -> None:
    async def go() -> None:
        answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        async with serving(answer_once(answer, close=False)) as server:
            transport = Http1Transport(4)
            response = await transport.handle_async_request(post(server.url()))
            assert response.status_code == 101  # the worker's classification makes it dead
            assert transport._open == set()

    run(go())


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def go() -> None:
        async with serving(answer_once(OK)) as server:  # closes after each answer, no header
            transport = Http1Transport(4)
            for _ in range(3):
                response = await transport.handle_async_request(post(server.url()))
                assert response.status_code == 200
                await asyncio.sleep(0.05)  # the close reaches the client while idle
            assert server.connections == 3

    run(go())


def test_an_idle_connection_older_than_the_keepalive_expiry_is_not_reused() -> None:
    async def go() -> None:
        now = [100.0]
        async with serving(keep_answering(OK)) as server:
            transport = Http1Transport(4, keepalive_expiry=5.0, clock=lambda: now[0])
            await transport.handle_async_request(post(server.url()))
            now[0] += 4.9
            await transport.handle_async_request(post(server.url()))
            assert server.connections == 1
            now[0] += 5.1
            await transport.handle_async_request(post(server.url()))
            assert server.connections == 2

    run(go())


def test_at_most_max_connections_and_a_pool_timeout() -> None:
    async def go() -> None:
        async with serving(keep_answering(OK, delay=0.2)) as server:
            transport = Http1Transport(2)
            answers = await asyncio.gather(
                *(transport.handle_async_request(post(server.url())) for _ in range(6))
            )
            assert [a.status_code for a in answers] == [200] * 6
            assert server.most_open == 2 and server.connections == 2

            waiting = post(server.url())
            waiting.extensions["timeout"] = {**TIMEOUTS, "pool": 0.05}
            busy = [
                asyncio.create_task(transport.handle_async_request(post(server.url())))
                for _ in range(2)
            ]
            await asyncio.sleep(0.02)
            with pytest.raises(httpx.PoolTimeout):
                await transport.handle_async_request(waiting)
            await asyncio.gather(*busy)

    run(go())


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async def go() -> None:
        async with serving(keep_answering(OK)) as server:
            transport = Http1Transport(4)
            request = post(server.url(), {"X-Api-Key": "a\r\nInjected: 1"})  # httpx lets it by
            with pytest.raises(httpx.LocalProtocolError):
                await transport.handle_async_request(request)
            assert server.connections == 0

    run(go())


def test_https_with_a_trusted_certificate_and_refused_with_an_unknown_one() -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_tls)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)

    async def go() -> None:
        async with serving(keep_answering(OK), tls=server_tls) as server:
            transport = Http1Transport(4, ssl_context=trusting)
            for _ in range(2):
                response = await transport.handle_async_request(post(server.url(scheme="https")))
                assert response.json() == {"ok": True}
            assert server.connections == 1
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await Http1Transport(4).handle_async_request(post(server.url(scheme="https")))

    run(go())


def test_other_schemes_are_refused() -> None:
    async def go() -> None:
        with pytest.raises(httpx.UnsupportedProtocol):
            await Http1Transport(1).handle_async_request(post("ftp://127.0.0.1/x"))

    run(go())


@pytest.mark.parametrize("http2", [False, True])
def test_the_workers_exchange_reads_at_most_the_answer_limit_through_either_transport(
    http2: bool,
) -> None:
    async def go() -> None:
        size = 200_000
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"y" * size
        async with serving(keep_answering(answer)) as server:
            transport = worker._transport(2, http2)  # True: httpx's own pool (HTTP/1.1 here)
            for _ in range(2):
                response = await worker._exchange(transport, post(server.url()))
                assert response.status_code == 200
                assert response.content == b"y" * worker.ANSWER_LIMIT
            await transport.aclose()

    run(go())


def test_the_workers_exchange_cuts_a_body_a_transport_already_read() -> None:
    async def go() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"z" * 200_000))
        response = await worker._exchange(transport, post("http://127.0.0.1:9/hook"))
        assert response.status_code == 200
        assert response.content == b"z" * worker.ANSWER_LIMIT

    run(go())


# --- http2: true: HTTP/2 where the destination offers it ----------------------------------------


def answer_h2(server: Server) -> Handler:
    """An HTTP/2 server answering each stream 200, recording each request's headers."""

    def record(headers: list[tuple[bytes, bytes]]) -> None:
        server.requests.append(repr(dict(headers)).encode())

    return lambda reader, writer: h2answer.answer_h2(reader, writer, record)


def tls_offering(protocols: list[str], ca_file: Path) -> ssl.SSLContext:
    """A server context whose certificate the client trusts through ``SSL_CERT_FILE``."""
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(protocols)
    return context


def test_with_http2_true_a_destination_that_offers_http2_gets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    tls = tls_offering(["h2", "http/1.1"], tmp_path / "ca.pem")

    async def go() -> None:
        async with serving(answer_h2, tls=tls) as server:
            url = server.url(scheme="https")
            transport = worker._transport(2, True)
            for _ in range(3):
                response = await worker._exchange(transport, post(url))
                assert response.http_version == "HTTP/2"
                assert response.json() == {"ok": True}
            assert server.connections == 1  # one connection, a stream each
            assert len(server.requests) == 3
            await transport.aclose()

    run(go())


def test_with_http2_true_a_destination_that_offers_only_http11_gets_http11(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    tls = tls_offering(["http/1.1"], tmp_path / "ca.pem")

    async def go() -> None:
        async with serving(keep_answering(OK), tls=tls) as server:
            url = server.url(scheme="https")
            transport = worker._transport(2, True)
            response = await worker._exchange(transport, post(url))
            assert response.http_version == "HTTP/1.1"
            assert response.json() == {"ok": True}
            await transport.aclose()

    run(go())


def test_the_default_is_the_lean_http11_transport() -> None:
    assert isinstance(worker._transport(2, False), Http1Transport)
    assert isinstance(worker._transport(2, True), httpx.AsyncHTTPTransport)
