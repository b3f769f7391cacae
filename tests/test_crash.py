"""kill -9 under load: every acknowledged event reaches every destination.

Duplicates appear only across a kill (answered by the destination, not yet recorded).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests.conftest import BridgeProcess, numbered_invoice, stripe_headers
from tests.sinks import Sinks, invoice_key

pytestmark = pytest.mark.slow

KILLS = 4
PER_ROUND = 25
SLACK = 1.0


def test_kill_9_loses_no_acknowledged_event(tmp_path: Path, sinks: Sinks, table: Path) -> None:
    # slow answers keep deliveries in flight when the kill lands
    sinks.default_delay = 0.02
    rng = random.Random(20261123)
    acked: set[int] = set()
    kills: list[float] = []
    n = 0
    for _round in range(KILLS):
        bridge = BridgeProcess(table).start()
        stop = threading.Event()

        def post_many(
            bridge: BridgeProcess = bridge, stop: threading.Event = stop, start: int = n
        ) -> None:
            with httpx.Client(timeout=5) as client:
                for i in range(start, start + PER_ROUND):
                    if stop.is_set():
                        return
                    body = numbered_invoice(i, "crash")
                    try:
                        response = client.post(
                            f"{bridge.url}/webhooks/stripe",
                            content=body,
                            headers=stripe_headers(body),
                        )
                    except httpx.HTTPError:
                        return
                    if response.status_code == 200:
                        acked.add(i)

        poster = threading.Thread(target=post_many)
        poster.start()
        time.sleep(rng.uniform(0.1, 0.6))
        assert bridge.proc is not None
        bridge.proc.send_signal(signal.SIGKILL)
        kills.append(time.time())
        bridge.proc.wait(timeout=10)
        stop.set()
        poster.join(timeout=10)
        n += PER_ROUND

    final = BridgeProcess(table).start()
    try:
        expected = {f"in_crash_{i}" for i in acked}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = {
                d: {invoice_key(d, b) for b in sinks.bodies(d)}
                for d in ("dub", "umami", "shop", "voucherify")
            }
            if all(expected <= keys for keys in got.values()):
                break
            time.sleep(0.1)
        for destination, keys in got.items():
            missing = expected - keys
            assert not missing, (
                f"{destination} never got {sorted(missing)[:5]} "
                f"({len(missing)} acknowledged events)"
            )
        assert len(acked) >= KILLS  # the test really posted under load
        # duplicates only where a kill fell between the destination's answer and the bridge's record
        seen: dict[tuple[str, str], list[float]] = defaultdict(list)
        for received in sinks.received:
            seen[(received.destination, invoice_key(received.destination, received.body))].append(
                received.at
            )
        for (destination, k), times in seen.items():
            if len(times) > 1:
                # (the sink stamps a request when its thread gets to it, which can be a moment
                # after the bridge sent it: a kill up to SLACK before the first stamp counts)
                assert len(times) - 1 <= sum(1 for kill in kills if times[0] - SLACK <= kill), (
                    destination,
                    k,
                    times,
                )
                assert any(times[0] - SLACK <= kill <= times[-1] for kill in kills), (
                    destination,
                    k,
                    times,
                )
        assert all(r.valid for r in sinks.received)
    finally:
        assert final.stop() == 0
