"""Load generators, each a process of its own: wrk (closed loop) and a fixed-rate asyncio client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import uvloop

HERE = Path(__file__).parent
FIXTURE = HERE.parent / "fixtures" / "stripe" / "invoice.paid.json"


# Stripe's ids, as its API reference's examples show them: after the prefix and a digit, the
# second the object was made in (five base-62 characters, counted from STRIPE_EPOCH), ten of
# the account, then eight random ones. ch_3MmlLrLkdIwHu7ix0snN0B15 was created at 1679090539
# and pi_3MtwBwLkdIwHu7ix28a3tqPa at 1680800504: MmlLr and MtwBw are those seconds less
# STRIPE_EPOCH. So one account's keys sort by the second they were made in, and are random
# within it.
STRIPE_EPOCH = 1_342_389_380
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ACCOUNT = "BnchAcct01"
# The bench's events are made at this rate from when it starts: about the verify-only app's
# req/s here, and 80 times Stripe's default live-mode limit of 100 API operations a second. The
# fewer keys share a second, the more leaves of an index a batch's keys share (WAL pages a
# webhook stored by the writer: 9.4 with keys random throughout, 7.0 made at 16,000 a second,
# 6.8 at 8,000, 4.2 at 1,000), and the README's ingest ratio depends on it (0.56 at 8,000,
# 0.48 at 16,000)
RATE = 8_000
MADE = int(time.time())
INVOICED_BEFORE = 3600  # seconds from an invoice to its payment (a subscription's: an hour)


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def stripe_id(kind: str, version: str, second: int, prefix: str, n: int) -> str:
    """A Stripe-shaped id of an object made in ``second``: random, given the second, for each
    kind, run prefix and n."""
    digest = int.from_bytes(hashlib.blake2b(f"{prefix}:{n}:{kind}".encode()).digest()[:8])
    tail = _base62(digest, 8)
    return f"{kind}_{version}{_base62(second - STRIPE_EPOCH, 5)}{ACCOUNT}{tail}"


def made(n: int) -> int:
    """The second the n-th event of a run was made in."""
    return MADE + n // RATE


def invoice_id(prefix: str, n: int) -> str:
    """The n-th invoice of a run, made ``INVOICED_BEFORE`` seconds before its payment."""
    return stripe_id("in", "1", made(n) - INVOICED_BEFORE, prefix, n)


def _event(event: dict[str, Any], prefix: str, n: int) -> None:
    """The n-th event: its own id, invoice, charge and payment intent (the bridge remembers
    the last three, each a key of its own, so that a refund finds its sale)."""
    second = made(n)
    event["id"] = stripe_id("evt", "1", second, prefix, n)
    event["created"] = second
    paid = event["data"]["object"]
    paid["id"] = invoice_id(prefix, n)
    paid["created"] = second - INVOICED_BEFORE
    paid["charge"] = stripe_id("ch", "3", second, prefix, n)
    paid["payment_intent"] = stripe_id("pi", "3", second, prefix, n)


def signed(secret: str, prefix: str, n: int, timestamp: int | None = None) -> tuple[str, bytes]:
    """A unique compact invoice.paid (about 3 KB) and its Stripe-Signature."""
    event = json.loads(FIXTURE.read_text())
    _event(event, prefix, n)
    body = json.dumps(event, separators=(",", ":")).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}", body


def write_requests(path: Path, secret: str, prefix: str, count: int) -> None:
    ts = int(time.time())
    with path.open("wb") as out:
        for n in range(count):
            signature, body = signed(secret, prefix, n, ts)
            out.write(signature.encode() + b"\t" + body + b"\n")


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    assert match, text
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str, requests_file: Path, *, connections: int, seconds: int, threads: int = 2
) -> dict[str, Any]:
    """Closed-loop load with wrk; req/s and latency percentiles (seconds)."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "wrk.lua"),
        url,
        "--",
        str(requests_file),
        str(threads),
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 120
    ).stdout
    result: dict[str, Any] = {"tool": "wrk 4.1", "connections": connections, "seconds": seconds}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        result[f"p{pct}"] = _seconds(match.group(1)) if match else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(errors.group(1)) if errors else 0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = socket_errors.group(1) if socket_errors else ""
    return result


def _bodies(prefix: str, count: int) -> list[bytes]:
    """Unique compact invoice.paid bodies, built before the clock starts."""
    event = json.loads(FIXTURE.read_text())
    out = []
    for n in range(count):
        _event(event, prefix, n)
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


async def _read_status(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 answer off the connection (uvicorn always sends a Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def _fixed_rate(
    url: str, secret: str, prefix: str, rate: float, count: int, warmup: int = 0
) -> dict[str, Any]:
    """Open loop: request n is due at start + n / rate, whatever became of the others; its ack
    time runs from when it was due (a late answer delays nothing else: up to 128 connections).
    Raw HTTP/1.1 on persistent connections, bodies built beforehand, each signed when sent:
    a few tens of microseconds a request, so that the generator is never what is measured.

    A request takes the connection that was idle last (a new one only when every open one is
    busy), as an HTTP client's pool does: at a low rate one connection carries them all, well
    within the server's keep-alive (uvicorn's 5 s), where taking 128 connections in turn would
    leave each idle for longer than that and time a reconnect into every ack.

    ``warmup`` more requests go first, at the same rate and on the same connections, and are
    not timed: a fresh server's first request pays for what it does once (imports, a new
    connection), and one request in 300 is the p99's."""
    parts = urllib.parse.urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    bodies = _bodies(prefix, warmup + count)
    key = secret.encode()
    acks: list[float] = []
    due: dict[int, float] = {}
    statuses: dict[int, int] = {}
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []  # last in, first out
    slots = asyncio.Semaphore(128)
    opened = 0

    def request(n: int) -> bytes:
        body = bodies[n]
        ts = int(time.time())
        digest = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        return (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nStripe-Signature: t={ts},v1={digest}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def send(n: int) -> None:
        nonlocal opened
        async with slots:
            status = 0  # 0: no answer
            for _try in range(2):  # a keep-alive connection the server just closed: once more
                stream = idle.pop() if idle else None
                try:
                    if stream is None:
                        stream = await asyncio.open_connection(host, port)
                        opened += 1
                    stream[1].write(request(n))
                    status = await _read_status(stream[0])
                except (OSError, asyncio.IncompleteReadError):
                    if stream is not None:
                        stream[1].close()
                    continue
                idle.append(stream)
                break
            if n >= warmup:
                acks.append(time.time() - due[n])
                statuses[status] = statuses.get(status, 0) + 1

    tasks = []
    begin = time.time()
    for n in range(warmup + count):
        at = begin + n / rate
        # never before it is due: uvloop's timers round to whole milliseconds and may wake
        # early, and an early request would be timed from a moment it had not reached yet
        while (delay := at - time.time()) > 0:
            await asyncio.sleep(delay)
        due[n] = at
        tasks.append(asyncio.create_task(send(n)))
    await asyncio.gather(*tasks)
    for _reader, writer in idle:
        writer.close()
    acks.sort()
    return {
        "tool": "uvloop raw HTTP/1.1 client, up to 128 persistent connections, the last idle one "
        "reused first (fixed rate, open loop)",
        "rate": rate,
        "count": count,
        "warmup": warmup,
        "connections_opened": opened,
        "statuses": statuses,
        "ack_p50": acks[len(acks) // 2],
        "ack_p99": acks[int(len(acks) * 0.99) - 1],
        "sent": {invoice_id(prefix, n): t for n, t in due.items() if n >= warmup},
    }


def main(argv: list[str]) -> None:
    """python -m bench.load URL SECRET PREFIX RATE COUNT OUT.json [WARMUP]"""
    url, secret, prefix, rate, count, out = argv[1:7]
    warmup = int(argv[7]) if len(argv) > 7 else 0
    # uvloop: the same loop as the servers measured; asyncio's own added about 0.9 ms to each
    # ack (p50) of its own scheduling, and more to the p99 (README, Performance)
    result = uvloop.run(_fixed_rate(url, secret, prefix, float(rate), int(count), warmup))
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
