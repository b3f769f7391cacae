"""Several `bridge serve` replicas on one PostgreSQL database, and the database going away."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BridgeProcess, numbered_invoice, stripe_headers, table_yaml
from tests.sinks import Sinks, invoice_key

pytestmark = pytest.mark.slow

DESTINATIONS = ("dub", "umami", "shop", "voucherify")


def received(sinks: Sinks) -> Counter[tuple[str, str]]:
    return Counter((r.destination, invoice_key(r.destination, r.body)) for r in sinks.received)


def wait_delivered(sinks: Sinks, invoices: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = received(sinks)
        if all((d, i) in got for d in DESTINATIONS for i in invoices):
            return
        time.sleep(0.1)
    got = received(sinks)
    missing = [(d, i) for d in DESTINATIONS for i in invoices if (d, i) not in got]
    raise AssertionError(f"{len(missing)} deliveries never arrived, e.g. {missing[:5]}")


def table(tmp_path: Path, sinks: Sinks) -> Path:
    path = tmp_path / "bridge.yaml"
    text = (
        table_yaml(sinks.url, tmp_path / "unused.db")
        .replace(
            "delivery:\n  poll_interval: 0.05\n", "delivery:\n  poll_interval: 0.05\n  lease: 3\n"
        )
        .replace("    retry: ", "    timeout: 0.5\n    retry: ")
    )
    path.write_text(text)
    return path


def test_two_replicas_share_the_work_and_survive_a_kill_9(tmp_path: Path, pg_url: str) -> None:
    with Sinks() as sinks:
        config = table(tmp_path, sinks)
        a = BridgeProcess(config, {"BRIDGE_DATABASE_URL": pg_url, "BRIDGE_WORKER_ID": "a"}).start()
        b = BridgeProcess(config, {"BRIDGE_DATABASE_URL": pg_url, "BRIDGE_WORKER_ID": "b"}).start()
        try:
            # both alive: events spread over both, the same event sent to both at once
            acked: set[str] = set()
            with httpx.Client(timeout=10) as client:
                for n in range(40):
                    body = numbered_invoice(n, "both")
                    for bridge in (a, b) if n % 5 == 0 else ((a, b)[n % 2],):
                        response = client.post(
                            f"{bridge.url}/webhooks/stripe",
                            content=body,
                            headers=stripe_headers(body),
                        )
                        assert response.status_code == 200
                        acked.add(f"in_both_{n}")
            wait_delivered(sinks, acked)
            time.sleep(0.5)
            counts = received(sinks)
            assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1][:5]
            assert len(counts) == 40 * 4

            # one replica killed mid-run: the other takes its claims over when the leases end
            sinks.default_delay = 0.05
            before_kill = len(sinks.received)
            stop = threading.Event()
            acked_b: set[str] = set()

            def post_to(bridge: BridgeProcess, prefix: str, into: set[str]) -> None:
                with httpx.Client(timeout=5) as client:
                    for n in range(60):
                        if stop.is_set():
                            return
                        body = numbered_invoice(n, prefix)
                        try:
                            response = client.post(
                                f"{bridge.url}/webhooks/stripe",
                                content=body,
                                headers=stripe_headers(body),
                            )
                        except httpx.HTTPError:
                            return
                        if response.status_code == 200:
                            into.add(f"in_{prefix}_{n}")

            acked_a: set[str] = set()
            threads = [
                threading.Thread(target=post_to, args=(a, "a", acked_a)),
                threading.Thread(target=post_to, args=(b, "b", acked_b)),
            ]
            for thread in threads:
                thread.start()
            time.sleep(0.4)
            assert a.proc is not None
            a.proc.send_signal(signal.SIGKILL)
            killed_at = time.time()
            a.proc.wait(timeout=10)
            for thread in threads:
                thread.join(timeout=30)
            assert acked_a and acked_b
            wait_delivered(sinks, acked_a | acked_b, timeout=60)
            time.sleep(0.5)
            # a delivery sent twice is one the killed replica had sent but not recorded
            late = [r for r in sinks.received[before_kill:]]
            twice = Counter((r.destination, invoice_key(r.destination, r.body)) for r in late)
            for (destination, invoice), count in twice.items():
                if count > 1:
                    times = [
                        r.at
                        for r in late
                        if r.destination == destination
                        and invoice_key(destination, r.body) == invoice
                    ]
                    assert count == 2 and times[0] - 1.0 <= killed_at <= times[1], (
                        destination,
                        invoice,
                        times,
                    )
        finally:
            for bridge in (a, b):
                if bridge.proc is not None and bridge.proc.poll() is None:
                    assert bridge.stop() == 0


def test_the_database_restarting_gives_503s_and_loses_nothing(
    tmp_path: Path, pg_url: str, pg_cluster: Any
) -> None:
    with Sinks() as sinks:
        config = table(tmp_path, sinks)
        bridge = BridgeProcess(config, {"BRIDGE_DATABASE_URL": pg_url}).start()
        statuses: Counter[int] = Counter()
        acked: set[str] = set()
        try:
            with httpx.Client(timeout=10) as client:

                def post(n: int) -> int:
                    body = numbered_invoice(n, "restart")
                    response = client.post(
                        f"{bridge.url}/webhooks/stripe", content=body, headers=stripe_headers(body)
                    )
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        acked.add(f"in_restart_{n}")
                    return response.status_code

                for n in range(10):
                    assert post(n) == 200
                pg_cluster.stop("fast")
                try:
                    down = [post(n) for n in range(10, 20)]
                    assert set(down) == {503}, down
                    assert client.get(f"{bridge.url}/readyz").status_code == 503
                finally:
                    pg_cluster.start()
                deadline = time.monotonic() + 30
                while client.get(f"{bridge.url}/readyz").status_code != 200:
                    assert time.monotonic() < deadline, "the bridge did not recover"
                    time.sleep(0.2)
                for n in range(20, 30):
                    assert post(n) == 200
                # the events refused while down are retried by the processor: now they land
                for n in range(10, 20):
                    assert post(n) == 200
            wait_delivered(sinks, acked)
            assert 500 not in statuses
            assert len(acked) == 30
        finally:
            assert bridge.stop() == 0
        assert "Traceback" not in bridge.logs()
