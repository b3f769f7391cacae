"""The rows both backends write, built once: the SQL differs, the parameters don't."""

from __future__ import annotations

from typing import Any

from bridge.store.base import Finish, Ingest


def event_row(item: Ingest, now: float) -> dict[str, Any]:
    event = item.event
    return {
        "source": event.source,
        "event_id": event.id,
        "type": event.type,
        "received_at": now,
        "payload": item.body,
    }


def delivery_rows(
    item: Ingest, event_pk: int, resolved: str | None, now: float
) -> list[dict[str, Any]]:
    """A refund whose purchase id was not in its payload takes the remembered purchase's id (or
    its first payment reference) as its order key, so it queues behind that purchase."""
    fallback = resolved or (item.link_refs[0] if item.link_refs else item.event.id)
    return [
        {
            "event_pk": event_pk,
            "route": d.route,
            "destination": d.destination,
            "order_key": d.order_key or fallback,
            "now": now,
        }
        for d in item.deliveries
    ]


def ref_rows(item: Ingest, now: float) -> list[dict[str, Any]]:
    if item.purchase is None:
        return []
    customer = item.purchase.customer
    return [
        {
            "source": item.event.source,
            "ref": ref,
            "txn_id": item.purchase.txn_id,
            "customer_id": customer.id,
            "external_id": customer.external_id,
            "email": customer.email,
            "name": customer.name,
            "now": now,
        }
        for ref in item.remember
    ]


def finish_row(item: Finish, now: float) -> dict[str, Any]:
    return {
        "id": item.delivery_id,
        "worker": item.worker,
        "status": str(item.status),
        "counted": 1 if item.attempt is not None else 0,
        "next_at": item.next_at,
        "error": item.error,
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
        "error": a.error,
        "response_excerpt": a.response_excerpt,
    }
