"""The domain: what a processor sent, what it means, and what the bridge owes each destination."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from bridge import money

TxnKind = Literal["sale", "refund"]


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One verified webhook: the processor's event id and type, and the parsed body."""

    source: str
    id: str
    type: str
    created: int | None
    payload: dict[str, Any]


@dataclass(slots=True)
class Customer:
    id: str | None = None
    external_id: str | None = None
    email: str | None = None
    name: str | None = None


@dataclass(slots=True)
class Item:
    id: str | None
    name: str | None
    unit_amount: int | None
    quantity: int | None


@dataclass(slots=True)
class Transaction:
    """A sale or refund in one shape whatever the processor: amounts in minor units."""

    kind: TxnKind
    processor: str
    event_id: str
    id: str | None
    amount: int
    currency: str
    convention: money.Convention = "iso"
    occurred_at: int | None = None
    event_name: str | None = None
    customer: Customer = field(default_factory=Customer)
    items: list[Item] = field(default_factory=list)
    coupon_code: str | None = None
    discount: int | None = None
    tax: int | None = None
    shipping: int | None = None
    subscription_id: str | None = None
    refund_id: str | None = None
    referral_code: str | None = None
    click_id: str | None = None  # the link click the sale came from (Dub's dub_id cookie)
    # sale: the payment references a later refund may name (charge, payment intent);
    # refund: the references of the purchase it refunds.
    refs: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def major(self, minor: int | None) -> Decimal | None:
        return None if minor is None else money.to_major(minor, self.currency, self.convention)

    def view(self) -> dict[str, Any]:
        """The transaction as expressions see it: minor amounts and their exact major twins."""
        return {
            "kind": self.kind,
            "processor": self.processor,
            "event_id": self.event_id,
            "id": self.id,
            "amount": self.amount,
            "amount_major": self.major(self.amount),
            "currency": self.currency,
            "occurred_at": self.occurred_at,
            "event_name": self.event_name,
            "customer": {
                "id": self.customer.id,
                "external_id": self.customer.external_id,
                "email": self.customer.email,
                "name": self.customer.name,
            },
            "items": [
                {
                    "id": item.id,
                    "name": item.name,
                    "unit_amount": item.unit_amount,
                    "price_major": self.major(item.unit_amount),
                    "quantity": item.quantity,
                }
                for item in self.items
            ],
            "coupon_code": self.coupon_code,
            "discount": self.discount,
            "discount_major": self.major(self.discount),
            "tax": self.tax,
            "tax_major": self.major(self.tax),
            "shipping": self.shipping,
            "shipping_major": self.major(self.shipping),
            "subscription_id": self.subscription_id,
            "refund_id": self.refund_id,
            "referral_code": self.referral_code,
            "click_id": self.click_id,
            "refs": list(self.refs),
            "metadata": self.metadata,
        }


@dataclass(frozen=True, slots=True)
class Purchase:
    """What the bridge remembers of a sale so that a later refund can name it."""

    txn_id: str
    customer: Customer


# text no store can hold: NUL (PostgreSQL's text refuses it) and lone surrogates (no UTF-8
# encoder writes them, nor a JSON encoder)
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Status(enum.StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    DRY_RUN = "dry_run"
    NOT_RECORDED = "not_recorded"  # Dub answered 200 with sale: null
    SKIPPED = "skipped"  # the destination's required fields can't be filled
    DEAD = "dead"

    @property
    def terminal(self) -> bool:
        return self not in (Status.PENDING, Status.IN_FLIGHT)


@dataclass(frozen=True, slots=True)
class NewDelivery:
    route: int
    destination: str
    order_key: str


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    event_pk: int
    source: str
    event_id: str
    event_type: str
    route: int
    destination: str
    order_key: str
    status: Status
    attempts: int
    next_at: float
    created_at: float
    updated_at: float
    window_at: float  # when the current retry window opened (creation, or the last redrive)
    last_error: str | None
    body: str | None = None  # the event's JSON text, as received
    # for a cumulative refund: what its order had refunded before it (the delta is sent)
    refund_baseline: int | None = None
    # a sale's request body, built by the store as it claimed the delivery (the SQLite
    # writer process: ``Pipeline.prepare``); None: the worker builds it
    prepared: bytes | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: int
    started_at: float
    latency_ms: float
    outcome: str
    status_code: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
