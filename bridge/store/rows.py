"""Rows (sqlite3.Row or psycopg dict rows, same column names) to model objects."""

from __future__ import annotations

from typing import Any

from bridge.model import Attempt, Delivery, Status


def delivery_from_row(row: Any) -> Delivery:
    return Delivery(
        id=row["id"],
        event_pk=row["event_pk"],
        source=row["source"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        route=row["route"],
        destination=row["destination"],
        order_key=row["order_key"],
        status=Status(row["status"]),
        attempts=row["attempts"],
        next_at=row["next_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        window_at=row["window_at"],
        last_error=row["last_error"],
        body=row["payload"],
        refund_baseline=row["refund_baseline"],
        prepared=row.get("prepared"),
    )


def attempt_from_row(row: Any) -> Attempt:
    return Attempt(
        delivery_id=row["delivery_id"],
        started_at=row["started_at"],
        latency_ms=row["latency_ms"],
        outcome=row["outcome"],
        status_code=row["status_code"],
        error=row["error"],
        response_excerpt=row["response_excerpt"],
    )
