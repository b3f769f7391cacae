"""The rows both backends write, built once: the SQL differs, the parameters don't."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.model import UNSTORABLE
from bridge.store.base import Finish, Ingest

EVENT_COLUMNS = ("source", "event_id", "type", "received_at", "payload")
DELIVERY_COLUMNS = ("event_pk", "route", "destination", "order_key", "now")
REF_COLUMNS = ("source", "ref", "txn_id", "customer_id", "external_id", "email", "name", "now")
FINISH_COLUMNS = ("id", "worker", "status", "counted", "next_at", "error", "now")
ATTEMPT_COLUMNS = (
    "delivery_id",
    "started_at",
    "latency_ms",
    "outcome",
    "status_code",
    "error",
    "response_excerpt",
)


def storable(text: str | None) -> str | None:
    """A destination's words (its error text, an excerpt of its answer) as every store can hold
    them: NUL and lone surrogates become U+FFFD."""
    return UNSTORABLE.sub("\ufffd", text) if text else text


def firsts(keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Where each (source, event id) first appears: of one event sent twice in a batch, only
    the first is written (the others are duplicates)."""
    first: dict[tuple[str, str], int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    return first


def event_values(item: Ingest, now: float) -> tuple[Any, ...]:
    event = item.event
    return (event.source, event.id, event.type, now, item.body)


def delivery_values(
    item: Ingest, event_pk: int, resolved: str | None, now: float
) -> list[tuple[Any, ...]]:
    """A refund whose purchase id was not in its payload takes the remembered purchase's id (or
    its first payment reference) as its order key, so it queues behind that purchase."""
    routes = [(d.route, d.destination, d.order_key) for d in item.deliveries]
    return ordered_deliveries(routes, event_pk, resolved or order_fallback(item), now)


def ordered_deliveries(
    routes: Sequence[tuple[int, str, str | None]], event_pk: int, fallback: str, now: float
) -> list[tuple[Any, ...]]:
    """Delivery rows from (route, destination, order key): one that names no order key takes
    ``fallback``."""
    return [(event_pk, route, name, key or fallback, now) for route, name, key in routes]


def order_fallback(item: Ingest) -> str:
    """The order key of a delivery that names none, when its refund's purchase is not found:
    the refund's first payment reference, or its own event id."""
    return item.link_refs[0] if item.link_refs else item.event.id


def ref_values(item: Ingest, now: float) -> list[tuple[Any, ...]]:
    if item.purchase is None:
        return []
    txn_id, customer, source = item.purchase.txn_id, item.purchase.customer, item.event.source
    return [
        (source, ref, txn_id, customer.id, customer.external_id, customer.email, customer.name, now)
        for ref in item.remember
    ]


def event_row(item: Ingest, now: float) -> dict[str, Any]:
    return dict(zip(EVENT_COLUMNS, event_values(item, now), strict=True))


def delivery_rows(
    item: Ingest, event_pk: int, resolved: str | None, now: float
) -> list[dict[str, Any]]:
    return [
        dict(zip(DELIVERY_COLUMNS, v, strict=True))
        for v in delivery_values(item, event_pk, resolved, now)
    ]


def ref_rows(item: Ingest, now: float) -> list[dict[str, Any]]:
    return [dict(zip(REF_COLUMNS, v, strict=True)) for v in ref_values(item, now)]


def finish_row(item: Finish, now: float) -> dict[str, Any]:
    return {
        "id": item.delivery_id,
        "worker": item.worker,
        "status": str(item.status),
        "counted": 1 if item.attempt is not None else 0,
        "next_at": item.next_at,
        "error": storable(item.error),
        "now": now,
    }


def attempt_row(item: Finish) -> dict[str, Any] | None:
    a = item.attempt
    if a is None:
        return None
    return {
        "delivery_id": a.delivery_id,
        "started_at": a.started_at,
        "latency_ms": a.latency_ms,
        "outcome": a.outcome,
        "status_code": a.status_code,
        "error": storable(a.error),
        "response_excerpt": storable(a.response_excerpt),
    }
