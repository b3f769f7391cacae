"""What a delivery costs through each transport over TLS: the reason `http2` is off by default.

    python -m bench.transports [--requests N]

A loopback TLS server (its own process; a trustme certificate the client trusts through
SSL_CERT_FILE) answers every request 200 at once: over HTTP/1.1 keep-alive when it offers only
http/1.1 by ALPN, over HTTP/2 (the h2 package's state machine) when it offers only h2. This
process sends through the worker's own exchange, 8 requests in flight, and prints its CPU per
request for the bridge's HTTP/1.1 transport and for httpx's (`http2: true`) over each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import trustme
import uvloop

from bench.__main__ import PY, free_port
from bridge import worker
from tests.h2answer import answer_h2

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
BODY = b'{"customerExternalId":"cus_1","amount":1999,"currency":"usd","invoiceId":"in_1"}'
IN_FLIGHT = 8


async def _h1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


async def serve(protocol: str, port: int, pem: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem)
    context.set_alpn_protocols([protocol])
    server = await asyncio.start_server(
        answer_h2 if protocol == "h2" else _h1, "127.0.0.1", port, ssl=context
    )
    async with server:
        await server.serve_forever()


async def measure(transport: httpx.AsyncBaseTransport, url: str, count: int) -> tuple[float, str]:
    gate = asyncio.Semaphore(IN_FLIGHT)
    timeouts = httpx.Timeout(10.0).as_dict()

    async def one() -> str:
        async with gate:
            request = httpx.Request("POST", url, content=BODY)
            request.extensions["timeout"] = timeouts
            response = await worker._exchange(transport, request)
            if response.status_code != 200:
                raise RuntimeError(f"answer {response.status_code}")
            return response.http_version

    await asyncio.gather(*(one() for _ in range(200)))  # connections made, code warm
    start = time.thread_time()
    versions = await asyncio.gather(*(one() for _ in range(count)))
    spent = time.thread_time() - start
    await transport.aclose()
    return spent / count * 1e6, "/".join(sorted(set(versions)))


async def compare(count: int, folder: Path) -> list[tuple[str, float, str]]:
    authority = trustme.CA()
    pem = folder / "server.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    authority.cert_pem.write_to_path(str(folder / "ca.pem"))
    os.environ["SSL_CERT_FILE"] = str(folder / "ca.pem")
    rows = []
    for protocol, cases in (
        ("http/1.1", [("bridge HTTP/1.1 transport", False), ("httpx transport", True)]),
        ("h2", [("httpx transport", True)]),
    ):
        port = free_port()
        server = subprocess.Popen(
            [PY, "-m", "bench.transports", "--serve", protocol, str(port), str(pem)]
        )
        try:
            await asyncio.sleep(1.0)
            url = f"https://127.0.0.1:{port}/track/sale"
            for name, http2 in cases:
                cpu, version = await measure(worker._transport(IN_FLIGHT, http2), url, count)
                rows.append((f"{name}, server offers {protocol}", cpu, version))
        finally:
            server.kill()
            server.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        protocol, port, pem = args.serve
        asyncio.run(serve(protocol, int(port), pem))
        return
    with tempfile.TemporaryDirectory(prefix="bench-transports-") as folder:
        rows = uvloop.run(compare(args.requests, Path(folder)))
    print(f"sender's CPU per request over TLS, {IN_FLIGHT} in flight (us)")
    for name, cpu, version in rows:
        print(f"  {name:<52}{cpu:7.1f}  {version}")


if __name__ == "__main__":
    main()
