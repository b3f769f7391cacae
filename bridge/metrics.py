"""Prometheus metrics (``GET /metrics``).

Counters and histograms are updated where things happen; the queue gauges are
read from the store when scraped.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

WEBHOOKS = Counter(
    "bridge_webhooks_received",
    "Webhooks received, by source and outcome "
    "(accepted, duplicate, ignored, skipped, bad_signature, too_large, invalid, unavailable).",
    ["source", "outcome"],
)
DELIVERIES = Counter(
    "bridge_deliveries",
    "Delivery attempts finished, by destination and outcome "
    "(delivered, retry, dead, not_recorded, skipped, dry_run, mapping_error).",
    ["destination", "outcome"],
)
ATTEMPT_LATENCY = Histogram(
    "bridge_attempt_latency_seconds",
    "How long a sent delivery took to its answer, its timeout or its connection error, "
    "by destination.",
    ["destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge(
    "bridge_queue_depth", "Deliveries pending or in flight, by destination.", ["destination"]
)
OLDEST_PENDING = Gauge(
    "bridge_oldest_pending_age_seconds",
    "Age of the oldest unfinished delivery (since its creation or last redrive), by destination.",
    ["destination"],
)
DEAD = Gauge(
    "bridge_dead_letters",
    "Deliveries that are dead (until redriven), by destination.",
    ["destination"],
)
INGEST_BATCH = Histogram(
    "bridge_ingest_commit_batch_size",
    "Webhooks whose events shared one commit (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


@functools.lru_cache(maxsize=1024)
def webhooks(source: str, outcome: str) -> Any:
    """WEBHOOKS' counter for a source and an outcome (found once: ``labels()`` checks and
    looks up its labels on every call)."""
    return WEBHOOKS.labels(source, outcome)


def set_queue(
    queue: dict[str, tuple[int, float | None]], dead: dict[str, int], destinations: list[str]
) -> None:
    """Gauges from the store's view: (depth, when the oldest began waiting) and dead count
    per destination."""
    now = time.time()
    for name in destinations:
        depth, oldest = queue.get(name, (0, None))
        QUEUE_DEPTH.labels(name).set(depth)
        OLDEST_PENDING.labels(name).set(0 if oldest is None else max(0.0, now - oldest))
        DEAD.labels(name).set(dead.get(name, 0))


def render() -> bytes:
    return generate_latest()
