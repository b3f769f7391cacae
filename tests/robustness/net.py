"""Loopback tools for the robustness suite: a raw HTTP/1.1 client (duplicate headers, any bytes,
paths sent as written), destinations that misbehave at the socket level, the store's row counts,
a log reader and a process's resident memory. Everything binds or connects to 127.0.0.1 only."""

from __future__ import annotations

import select
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TABLES = ("events", "deliveries", "attempts", "payment_refs")


# --- a raw HTTP/1.1 client ------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def _read_response(sock: socket.socket, deadline: float, head_only: bool) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full answer: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
    if head_only:
        return RawResponse(status, headers, b"")
    chunked = any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in headers)
    if chunked:
        while not rest.endswith(b"0\r\n\r\n"):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        body, buffer = b"", rest
        while buffer:
            size_line, _, buffer = buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            body, buffer = body + buffer[:size], buffer[size + 2 :]
        return RawResponse(status, headers, body)
    while length is not None and len(rest) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, headers, rest[:length] if length is not None else rest)


def raw_request(
    port: int,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes | None = None,
    *,
    chunks: Sequence[bytes] | None = None,
    endless: bool = False,
    timeout: float = 15.0,
) -> RawResponse:
    """Send one request exactly as given and read the answer.

    ``body``: sent with a Content-Length (unless ``headers`` has one); ``chunks``: sent with
    ``Transfer-Encoding: chunked``; ``endless``: the chunked body is never finished (after the
    given chunks the client only waits for an answer: one that arrives was given early)."""
    deadline = time.monotonic() + timeout
    head = [method + b" " + target + b" HTTP/1.1", b"Host: " + HOST.encode(), b"Connection: close"]
    names = {name.lower() for name, _ in headers}
    head += [name + b": " + value for name, value in headers]
    payload = b""
    if chunks is not None:
        head.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks if c)
        if not endless:
            payload += b"0\r\n\r\n"
    elif body is not None:
        if b"content-length" not in names:
            head.append(b"Content-Length: " + str(len(body)).encode())
        payload = body
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
            view = memoryview(payload)
            while view:  # the server may answer (and stop reading) before the body is sent
                if select.select([sock], [], [], 0)[0]:
                    break
                sent = sock.send(view[:16384])
                view = view[sent:]
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _read_response(sock, deadline, head_only=method == b"HEAD")


# --- destinations that misbehave -------------------------------------------------------------


def read_http_request(conn: socket.socket, timeout: float = 5.0) -> bytes:
    """One request's head and Content-Length body (what a destination is sent)."""
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def reset(conn: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def http_answer(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, content_type, len(body))
        + body
    )


Behaviour = Callable[[socket.socket, bytes], None]


@dataclass
class FaultServer:
    """A destination on 127.0.0.1 whose behaviour can be switched while the bridge runs.

    ``behaviour(conn, request)`` answers (or not) one request; ``None`` means down: nothing
    listens on the port (connection refused) until a behaviour is set again."""

    behaviour: Behaviour | None = None
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    _sock: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    def __post_init__(self) -> None:
        probe = socket.socket()
        probe.bind((HOST, 0))
        self.port = probe.getsockname()[1]
        probe.close()
        if self.behaviour is not None:
            self._listen()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.listen(64)
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = read_http_request(conn)
            if not request:
                return
            with self._lock:
                self.requests.append(request)
                behaviour = self.behaviour
            if behaviour is not None:
                behaviour(conn, request)
        except OSError:
            pass
        finally:
            conn.close()

    def set(self, behaviour: Behaviour | None) -> None:
        with self._lock:
            self.behaviour = behaviour
        if behaviour is None and self._sock is not None:
            self._sock.close()
            self._sock = None
        elif behaviour is not None and self._sock is None and not self._stopped:
            self._listen()

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self._stopped = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --- the store, the log, the process ----------------------------------------------------------


def row_counts(database: Path) -> dict[str, int]:
    """Rows in each of the store's tables (0 for a file or table not there yet)."""
    if not database.exists():
        return dict.fromkeys(TABLES, 0)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        return {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] if t in present else 0
            for t in TABLES
        }


def rows(database: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


class LogTail:
    """The lines a process wrote to its log since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_lines(self) -> list[str]:
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [line for line in complete.decode("utf-8", "replace").splitlines() if line.strip()]


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` (VmRSS in /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    if not check():
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
