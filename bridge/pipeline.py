"""The pipeline between the webhook and the destinations.

At ingest, ``plan`` decides from the table which destinations hear about an
event (routes, ``when``, the processor's skip rules, zero amounts) and what to
remember of a sale. At delivery, the transaction is built again from the stored
raw event with the table as it is NOW (so a fixed table and a redrive repair a
dead delivery), a refund is linked to its purchase, and the destination's
request is rendered: by the worker, or, for a sale claimed from SQLite, by
``prepare`` in the store's writer process as it claims the delivery.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from bridge import destinations, intake, mapping, sources
from bridge.config import Config, Route
from bridge.destinations.base import Skipped
from bridge.destinations.common import TemplateDestination
from bridge.model import Customer, NewDelivery, ProviderEvent, Purchase, Transaction
from bridge.sources.base import BadEvent, Source

log = structlog.get_logger("bridge.pipeline")

# a stored event's deliveries are built close together (claimed together, used at once): its
# parse and its transactions are kept for the others
EVENTS = 256  # stored events kept parsed
TRANSACTIONS = 4096  # transactions kept, by event and route


@dataclass
class Plan:
    matched: bool = False
    deliveries: list[NewDelivery] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    remember: list[str] = field(default_factory=list)
    purchase: Purchase | None = None
    link_refs: list[str] = field(default_factory=list)
    cumulative: tuple[str, int] | None = None


class Pipeline:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.sources: dict[str, Source] = {
            name: sources.create(name, cfg) for name, cfg in config.sources.items()
        }
        self.destinations: dict[str, TemplateDestination] = {
            name: destinations.create(name, cfg) for name, cfg in config.destinations.items()
        }
        self._events: OrderedDict[tuple[str, str], ProviderEvent] = OrderedDict()
        self._txns: OrderedDict[tuple[str, str, int], Transaction] = OrderedDict()

    def rule(self, route: Route, event: ProviderEvent) -> mapping.TransactionRule | None:
        kind = self.sources[event.source].kind
        rule = sources.rules(kind).get(event.type)
        if rule is None and route.kind is not None:
            return mapping.TransactionRule(route.kind, {})
        return rule

    def transaction(
        self, route: Route, event: ProviderEvent, only: frozenset[str] | None = None
    ) -> Transaction:
        """The canonical transaction for this route; MappingError names route, field, expression."""
        rule = self.rule(route, event)
        if rule is None:
            raise mapping.MappingError(f"{route.name}: no transaction rule for {event.type!r}")
        source = self.sources[event.source]
        try:
            return mapping.build_transaction(
                rule, event, source.processor, source.convention, route.fields, only
            )
        except mapping.MappingError as exc:
            raise mapping.MappingError(f"{route.name}: {exc}") from None

    def routes_for(self, event: ProviderEvent) -> list[Route]:
        return [route for route in self.config.routes if route.matches(event.source, event.type)]

    def plan(self, event: ProviderEvent) -> Plan:
        plan = Plan()
        seen: set[str] = set()
        for route in self.routes_for(event):
            try:
                if not self.holds(route, event):
                    continue
            except mapping.MappingError:
                pass  # the table's error: stored, the delivery dies saying why, visibly
            rule = self.rule(route, event)
            if rule is None:
                continue
            plan.matched = True
            reason = mapping.skip_reason(rule, event)
            txn: Transaction | None = None
            if reason is None:
                try:
                    txn = self.transaction(route, event, mapping.PLAN_FIELDS)
                except mapping.MappingError:
                    txn = None  # the delivery is stored and dies with the error, visibly
                else:
                    if txn.amount == 0:
                        reason = "amount is 0: nothing to send"
            if reason is not None:
                plan.skipped.append(f"{route.name}: {reason}")
                continue
            order_key = ""
            if txn is not None:
                order_key = txn.id or ""
                if txn.kind == "sale" and txn.id and plan.purchase is None:
                    plan.purchase = Purchase(txn.id, txn.customer)
                    plan.remember = list(dict.fromkeys(purchase_refs(txn)))
                elif txn.kind == "refund" and not txn.id:
                    plan.link_refs = txn.refs
                order = txn.id or (txn.refs[0] if txn.refs else None)
                if rule.cumulative and order and plan.cumulative is None:
                    plan.cumulative = (order, txn.amount)
            for name in route.to:
                if name not in seen:
                    seen.add(name)
                    plan.deliveries.append(NewDelivery(route.index, name, order_key))
        return plan

    def holds(self, route: Route, event: ProviderEvent) -> bool:
        """Whether the route's ``when`` holds for the event; MappingError when it cannot be
        evaluated on it (naming the route)."""
        if route.when is None:
            return True
        try:
            return mapping.truthy(route.when.search(event.payload))
        except mapping.MappingError as exc:
            raise mapping.MappingError(f"{route.name}: when: {exc}") from None

    def route_for(self, event: ProviderEvent, destination: str, stored: int) -> Route | None:
        """The route that sends this event to ``destination`` in the table as it is now."""
        candidates = [r for r in self.routes_for(event) if destination in r.to]
        for route in candidates:
            if route.index == stored:
                return route
        return candidates[0] if candidates else None

    def stored_event(
        self, source: str, event_id: str, event_type: str, body: str | None
    ) -> ProviderEvent:
        """A stored event as its deliveries see it: its JSON parsed, and its time as the source
        read it at ingest (a Stripe "created" that is not unix seconds is none; other
        processors put it elsewhere), not the payload's "created". Parsed once for all its
        deliveries (the latest ``EVENTS`` events are kept)."""
        key = (source, event_id)
        event = self._events.get(key)
        if event is None:
            payload = intake.loads(body) if body else {}
            created = None
            found = self.sources.get(source)
            if found is not None:
                with contextlib.suppress(BadEvent):  # the stored event passed this at ingest
                    created = found.event(payload, {}).created
            event = ProviderEvent(source, event_id, event_type, created, payload)
            self._events[key] = event
            if len(self._events) > EVENTS:
                self._events.popitem(last=False)
        return event

    def stored_transaction(self, route: Route, event: ProviderEvent) -> Transaction:
        """``transaction`` for a stored event, built once for all its destinations (by the
        processor's event id, not the row id: SQLite may reuse a pruned row's id). Shared: a
        caller that changes it (linking a refund rewrites its id and customer) copies it."""
        key = (event.source, event.id, route.index)
        txn = self._txns.get(key)
        if txn is None:
            txn = self.transaction(route, event)
            self._txns[key] = txn
            if len(self._txns) > TRANSACTIONS:
                self._txns.popitem(last=False)
        return txn

    def prepare(self, event: ProviderEvent, destination: str, stored_route: int) -> bytes | None:
        """The body of a sale's request to ``destination``, built where the stored event is at
        hand: by the SQLite store's writer process as it claims the delivery, so that the
        event loop only sends it. None whenever the worker must see to it itself, as it does
        for every delivery claimed from PostgreSQL: a refund (its purchase is looked up first),
        a route gone or whose ``when`` no longer holds, a mapping error, a destination that
        takes nothing."""
        route = self.route_for(event, destination, stored_route)
        if route is None or destination not in self.destinations:
            return None
        try:
            if not self.holds(route, event):
                return None
            txn = self.stored_transaction(route, event)
            if txn.kind != "sale":
                return None
            return self.destinations[destination].content(txn, event)
        except (mapping.MappingError, Skipped):
            return None

    def request(
        self,
        txn: Transaction,
        event: ProviderEvent,
        destination: str,
        purchase: Purchase | None,
        logger: Any = None,
    ) -> httpx.Request:
        """The destination's request; destinations.Skipped when it gets none. ``logger``: the
        delivery's bound logger, so that a line about it names the delivery."""
        link_refund(txn, purchase, event, logger)
        return self.destinations[destination].request(txn, event)


def link_refund(
    txn: Transaction, purchase: Purchase | None, event: ProviderEvent, logger: Any = None
) -> None:
    """A refund names its purchase: remembered sale, else the payload's own id, else the charge."""
    if txn.kind != "refund":
        return
    if purchase is not None:
        txn.id = txn.id or purchase.txn_id
        txn.customer = Customer(
            id=purchase.customer.id or txn.customer.id,
            external_id=purchase.customer.external_id or txn.customer.external_id,
            email=purchase.customer.email or txn.customer.email,
            name=purchase.customer.name or txn.customer.name,
        )
    if not txn.id and txn.refs:
        txn.id = txn.refs[0]
        (logger or log.bind(source=event.source, event_id=event.id)).warning(
            "refund of an unseen purchase: using the payment reference as its transaction id",
            transaction_id=txn.id,
        )


def purchase_refs(txn: Transaction) -> list[str]:
    return [ref for ref in [txn.id, *txn.refs] if ref]
