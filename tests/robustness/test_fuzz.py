"""A fuzz run: at least 10,000 generated requests against one running ``bridge serve``.

From a bounded asyncio/httpx client (16 at a time, a deadline on the whole run): signed events of
every kind mutated at random, signed bodies that are no events, unsigned and badly signed
requests, unknown sources, odd paths and methods. Afterwards: no 500, every stored event is one
that was sent with a valid signature, the process alive and ready, its memory flat.

Run it alone (prints the counts):

    .venv/bin/pytest tests/robustness/test_fuzz.py -s

Known bugs are left out of the generator, each with a strict xfail test of its own (a Stripe
v1 signature that is not ASCII; a major-unit amount such as "1e5000");
``BRIDGE_FUZZ_KNOWN_BUGS=1`` puts them back in.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import BridgeProcess
from tests.robustness import corpus
from tests.robustness.corpus import KINDS, MAX_DEPTH
from tests.robustness.net import rows, rss_kib

pytestmark = pytest.mark.slow

REQUESTS = 10_000
CONCURRENCY = 16
DEADLINE = 240.0  # seconds for the whole run, a bound and no target
WARM_UP = 3_000  # memory is measured from here (caches fill first: 4096 transactions)
RSS_GROWTH_KIB = 24 * 1024
KNOWN_BUGS = os.environ.get("BRIDGE_FUZZ_KNOWN_BUGS") == "1"


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.serial = 0

    def text(self, size: int) -> str:
        # printable and some awkward characters, never a lone surrogate
        alphabet = "abcxyz019 _-.:/\"'\\{}[],\u00e9\u00b2\u4e2d\U0001f600\t\n"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, size)))

    def header_text(self, ascii_only: bool = False) -> bytes:
        text = self.text(8).encode().replace(b"\n", b"").replace(b"\r", b"")
        return text.decode().encode("ascii", "ignore") if ascii_only else text

    def value(self, depth: int = 0) -> Any:
        roll = self.rng.random()
        if depth > 3 or roll < 0.5:
            return self.rng.choice(
                [
                    None,
                    True,
                    False,
                    self.rng.randint(-(10**12), 10**12),
                    self.rng.uniform(-1e9, 1e9),
                    self.text(12),
                    self.rng.choice(["USD", "jpy", "KWD", "XXX", "", "19.99", "-1", "0", "1e3"]),
                    self.rng.choice(["1e5000", "-1e4400"] if KNOWN_BUGS else ["1e15", "9" * 16]),
                    "2025-06-03T14:22:09Z",
                ]
            )
        if roll < 0.75:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 3))]
        return {self.text(6): self.value(depth + 1) for _ in range(self.rng.randint(0, 3))}

    def mutate(self, payload: Any, times: int) -> Any:
        for _ in range(times):
            node, path = payload, []
            while isinstance(node, (dict, list)) and node and self.rng.random() < 0.8:
                keys = list(node) if isinstance(node, dict) else list(range(len(node)))
                step = self.rng.choice(keys)
                path.append(step)
                node = node[step]
            if not path:
                continue
            parent = payload
            for step in path[:-1]:
                parent = parent[step]
            if self.rng.random() < 0.15 and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = self.value()
        return payload

    def hostile_body(self) -> bytes:
        makers: list[Callable[[], bytes]] = [
            lambda: b"",
            lambda: os.urandom(self.rng.randint(1, 200)),
            lambda: self.text(80).encode(),
            lambda: b"[" * self.rng.choice([MAX_DEPTH + 1, 5000, 20_000]) + b"]" * 3,
            lambda: b'{"a":' * self.rng.choice([MAX_DEPTH + 1, 3000]) + b"1" + b"}" * 3,
            lambda: json.dumps(self.value()).encode(),
            lambda: b'{"id": "x", "type": "y", "data": {"n": NaN}}',
            lambda: b'{"x": Infinity}',
            lambda: b'{"x": ' + b"9" * self.rng.choice([10, 400, 5000]) + b"}",
            lambda: b'{"id": "' + b"x" * self.rng.choice([256, 100_000]) + b'"}',
            lambda: b'{"a": 1, "a": 2, "data": {}, "data": 3}',
            lambda: b'{"id": "evt", "type": "x", "data": {}, "x": 1e999}',
            lambda: json.dumps({"id": "evt_\ud800", "type": "x", "data": {}}).encode(),
            lambda: json.dumps(corpus.fixture("stripe")).encode("utf-16"),
            lambda: b"\xef\xbb\xbf" + json.dumps(corpus.fixture("stripe")).encode(),
        ]
        return self.rng.choice(makers)()

    def request(self, now: float) -> tuple[str, str, corpus.Headers, bytes, str | None]:
        """method, path, headers, body, and the source the request is validly signed for."""
        self.serial += 1
        kind = self.rng.choice(KINDS)
        roll = self.rng.random()
        if roll < 0.2:  # a signed event, mutated
            tag = f"fz{self.serial}" if self.rng.random() < 0.5 else f"fz{self.serial % 50}"
            payload, extra = corpus.event(kind, tag)
            payload = self.mutate(payload, self.rng.randint(0, 3))
            body = json.dumps(payload).encode()
            msg_id = f"msg_{tag}" if kind in ("polar", "standard_webhooks") else None
            headers = corpus.sign(kind, body, now, msg_id=msg_id) + extra
            return "POST", f"/webhooks/{kind}", headers, body, kind
        if roll < 0.45:  # signed, but not an event
            body = self.hostile_body()
            return "POST", f"/webhooks/{kind}", corpus.sign(kind, body, now), body, kind
        if roll < 0.85:  # unsigned, badly signed, mangled
            payload, extra = corpus.event(kind, f"bad{self.serial}")
            body = json.dumps(payload).encode()
            how = self.rng.choice(["none", "secret", "stale", "future", "mangle", "other-body"])
            if how == "none":
                headers = [(b"Content-Type", b"application/json")]
            elif how == "secret":
                headers = corpus.sign(kind, body, now, secret=corpus.wrong_secret(kind))
            elif how in ("stale", "future") and kind in corpus.TIMED:
                shift = (corpus.TOLERANCE[kind] + self.rng.randint(1, 10**6)) * (
                    -1 if how == "stale" else 1
                )
                headers = corpus.sign(kind, body, now, ts=str(int(now) + shift))
            elif how == "other-body" and kind != "revenuecat":
                headers = corpus.sign(kind, body + b" ", now)
            else:
                # a wrong secret's headers, then cut and spliced: never a valid signature
                ascii_only = kind == "stripe" and not KNOWN_BUGS
                headers = [
                    (name, (value[: self.rng.randint(0, len(value))] + junk).strip())
                    for name, value in corpus.sign(
                        kind, body, now, secret=corpus.wrong_secret(kind)
                    )
                    for junk in [self.header_text(ascii_only)]
                ]
            return "POST", f"/webhooks/{kind}", headers + extra, body, None
        path = self.rng.choice(
            [
                f"/webhooks/{quote(self.text(10), safe='')}",
                "/webhooks/../admin/events",
                "/webhooks/%2e%2e%2fadmin",
                f"/webhooks/{kind}/x",
                "/webhooks/",
                "/admin/deliveries",
            ]
        )
        method = self.rng.choice(["POST", "GET", "PUT", "DELETE", "OPTIONS"])
        return method, path, [(b"Content-Type", b"application/json")], b"{}", None


def test_10000_generated_requests(tmp_path: Path) -> None:
    table = tmp_path / "bridge.yaml"
    table.write_text(corpus.table_yaml(tmp_path / "bridge.db", dry_run=True))
    bridge = BridgeProcess(table).start()
    assert bridge.proc is not None
    pid = bridge.proc.pid
    generator = Generator(seed=20261123)
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    signed: dict[str, set[bytes]] = {kind: set() for kind in KINDS}
    memory: dict[str, int] = {"start": rss_kib(pid)}

    async def run() -> None:
        semaphore = asyncio.Semaphore(CONCURRENCY)
        # a pooled connection is dropped after 2 s idle: httpx's default (5 s) is uvicorn's own
        # keep-alive timeout, so on a loaded machine the client could send on a connection the
        # server was closing that instant (a ReadError that no server could avoid)
        limits = httpx.Limits(
            max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY, keepalive_expiry=2
        )
        async with httpx.AsyncClient(base_url=bridge.url, timeout=30, limits=limits) as client:

            async def one(n: int) -> None:
                async with semaphore:
                    method, path, headers, body, kind = generator.request(time.time())
                    if kind is not None:
                        signed[kind].add(body)
                    try:
                        response = await client.request(method, path, content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        failures[type(exc).__name__] += 1
                        return
                    statuses[response.status_code] += 1
                    if n == WARM_UP:
                        memory["warm"] = rss_kib(pid)

            await asyncio.wait_for(
                asyncio.gather(*(one(n) for n in range(REQUESTS))), timeout=DEADLINE
            )

    started = time.monotonic()
    try:
        asyncio.run(run())
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # the worker's dry runs of the last events
        memory["end"] = rss_kib(pid)
        alive = bridge.proc.poll() is None
        health = httpx.get(f"{bridge.url}/healthz", timeout=5).status_code
        ready = httpx.get(f"{bridge.url}/readyz", timeout=5).json()
        stored = rows(tmp_path / "bridge.db", "SELECT source, payload FROM events")
        unverified = [
            (source, payload[:80])
            for source, payload in stored
            if str(payload).encode() not in signed[str(source)]
        ]
        print(
            f"\nfuzz: {sum(statuses.values())} answers in {elapsed:.1f} s, by status "
            f"{dict(sorted(statuses.items()))}; client errors {dict(failures)}; "
            f"{len(stored)} events stored, {len(unverified)} unverified; "
            f"RSS start {memory['start'] // 1024} MiB, after {WARM_UP} requests "
            f"{memory.get('warm', 0) // 1024} MiB, end {memory['end'] // 1024} MiB"
        )
        assert sum(statuses.values()) + sum(failures.values()) == REQUESTS
        assert not failures, failures
        assert statuses[500] == 0, statuses
        # 307: Starlette's redirect of a path with a trailing slash (the source name ends in %2F)
        assert set(statuses) <= {200, 307, 400, 404, 405, 413}, statuses
        assert not unverified, unverified[:5]
        assert stored, "the run stored signed events"
        assert alive and health == 200 and ready == {"status": "ready"}
        assert memory["end"] - memory["warm"] < RSS_GROWTH_KIB, memory
    finally:
        if bridge.proc.poll() is None:
            bridge.stop()
    assert "Traceback" not in bridge.logs()
