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
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
FIXTURE = HERE.parent / "fixtures" / "stripe" / "invoice.paid.json"


def signed(secret: str, prefix: str, n: int, timestamp: int | None = None) -> tuple[str, bytes]:
    """A unique compact invoice.paid (about 3 KB) and its Stripe-Signature."""
    event = json.loads(FIXTURE.read_text())
    event["id"] = f"evt_{prefix}_{n}"
    event["data"]["object"]["id"] = f"in_{prefix}_{n}"
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


async def _fixed_rate(
    url: str, secret: str, prefix: str, rate: float, count: int
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    acks: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(n: int) -> None:
            signature, body = signed(secret, prefix, n)
            start = time.time()
            sent[f"in_{prefix}_{n}"] = start
            headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
            for _try in range(2):  # a keep-alive connection the server just closed: once more
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.TransportError:
                    continue
                acks.append(time.time() - start)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                return
            statuses[0] = statuses.get(0, 0) + 1  # 0: no answer

        tasks = []
        begin = time.monotonic()
        for n in range(count):
            delay = begin + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    acks.sort()
    return {
        "tool": "asyncio httpx client (fixed rate)",
        "rate": rate,
        "count": count,
        "statuses": statuses,
        "ack_p50": acks[len(acks) // 2],
        "ack_p99": acks[int(len(acks) * 0.99) - 1],
        "sent": sent,
    }


def main(argv: list[str]) -> None:
    """python -m bench.load URL SECRET PREFIX RATE COUNT OUT.json"""
    url, secret, prefix, rate, count, out = argv[1:7]
    result = asyncio.run(_fixed_rate(url, secret, prefix, float(rate), int(count)))
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
