"""JSON views of events, deliveries and attempts, shared by the CLI and the admin API.

Secrets are masked here, once, for both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.logging import mask
from bridge.model import Attempt, Delivery


def iso(ts: float | None) -> str | None:
    return (
        None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    )


def timestamp(text: str) -> float:
    """An ISO date or time as unix seconds (UTC when it names no zone); ValueError if not ISO."""
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def delivery(d: Delivery, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "id": d.id,
        "source": d.source,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "destination": d.destination,
        "status": str(d.status),
        "attempts": d.attempts,
        "next_at": iso(d.next_at) if not d.status.terminal else None,
        "created_at": iso(d.created_at),
        "updated_at": iso(d.updated_at),
        "last_error": mask(d.last_error, secrets) if d.last_error else None,
    }


def attempt(a: Attempt, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "started_at": iso(a.started_at),
        "outcome": a.outcome,
        "status_code": a.status_code,
        "latency_ms": a.latency_ms,
        "error": mask(a.error, secrets) if a.error else None,
        "response_excerpt": mask(a.response_excerpt, secrets) if a.response_excerpt else None,
    }


def delivery_detail(
    d: Delivery, attempts: list[Attempt], secrets: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {**delivery(d, secrets), "attempts_log": [attempt(a, secrets) for a in attempts]}
