"""Expressions and the mapping engine: JMESPath compiled once, a few pure functions.

Two stages, both declarative:
- ``TransactionRule``: a processor's raw event -> canonical ``Transaction``
  (the built-in rules live in ``bridge/defaults/<kind>.yaml``; a route's
  ``fields`` override them one field at a time).
- ``Template``: a ``Transaction`` -> a destination's JSON body
  (``bridge/defaults/destinations.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser

from bridge import money
from bridge.model import Customer, Item, ProviderEvent, Transaction

TXN_FIELDS = (
    "id",
    "amount",
    "currency",
    "occurred_at",
    "event_name",
    "customer_id",
    "customer_external_id",
    "customer_email",
    "customer_name",
    "items",
    "coupon_code",
    "discount",
    "tax",
    "shipping",
    "subscription_id",
    "refund_id",
    "referral_code",
    "refs",
    "metadata",
)


class ExpressionError(ValueError):
    """An expression that does not compile."""


class MappingError(ValueError):
    """A transaction or body that cannot be built from this event; names field and expression."""


class _Functions(jmespath.functions.Functions):
    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_lower(self, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_upper(self, value: str | None) -> str | None:
        return None if value is None else value.upper()

    @jmespath.functions.signature({"types": ["number"]}, {"types": ["number"]})
    def _func_sub(self, left: int | float, right: int | float) -> int | float:
        return left - right

    @jmespath.functions.signature({"types": ["string", "number", "null"]})
    def _func_str(self, value: str | int | float | None) -> str | None:
        return None if value is None else str(value)


_OPTIONS = jmespath.Options(custom_functions=_Functions(), dict_cls=dict)


@dataclass(frozen=True)
class Expression:
    text: str
    _parsed: jmespath.parser.ParsedResult = field(repr=False, compare=False)

    def search(self, data: Mapping[str, Any]) -> Any:
        try:
            return self._parsed.search(data, options=_OPTIONS)
        except jmespath.exceptions.JMESPathError as exc:
            raise MappingError(f"expression {self.text!r} failed: {exc}") from None


def compile_expression(text: str) -> Expression:
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("an expression must be a non-empty string")
    try:
        return Expression(text, jmespath.compile(text))
    except jmespath.exceptions.JMESPathError as exc:
        message = str(exc).replace("\n", " ")
        raise ExpressionError(f"invalid JMESPath {text!r}: {message}") from None


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty string/list/object are false."""
    return value not in (None, False, "", [], {})


@dataclass(frozen=True)
class Skip:
    when: Expression
    reason: str


@dataclass(frozen=True)
class TransactionRule:
    """How one processor event type becomes a canonical transaction."""

    kind: str  # "sale" | "refund"
    fields: Mapping[str, Expression]
    skips: tuple[Skip, ...] = ()


def skip_reason(rule: TransactionRule, event: ProviderEvent) -> str | None:
    context = {"event": event.payload}
    for skip in rule.skips:
        if truthy(skip.when.search(context)):
            return skip.reason
    return None


def build_transaction(
    rule: TransactionRule,
    event: ProviderEvent,
    processor: str,
    convention: money.Convention,
    overrides: Mapping[str, Expression] | None = None,
) -> Transaction:
    """Evaluate the rule (then a route's overrides, which also see ``txn``) into a Transaction."""
    context: dict[str, Any] = {"event": event.payload}
    values = {name: expr.search(context) for name, expr in rule.fields.items()}
    txn = _transaction(rule, event, processor, convention, values, rule.fields)
    if overrides:
        context["txn"] = txn.view()
        values.update({name: expr.search(context) for name, expr in overrides.items()})
        txn = _transaction(rule, event, processor, convention, values, {**rule.fields, **overrides})
    return txn


def _transaction(
    rule: TransactionRule,
    event: ProviderEvent,
    processor: str,
    convention: money.Convention,
    values: Mapping[str, Any],
    exprs: Mapping[str, Expression],
) -> Transaction:
    def fail(name: str, problem: str) -> MappingError:
        expr = exprs.get(name)
        where = f"{name} ({expr.text})" if expr else name
        return MappingError(f"field {where}: {problem}")

    def text(name: str) -> str | None:
        value = values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise fail(name, f"expected text, got {type(value).__name__}")
        return str(value)

    def minor(name: str, required: bool = False) -> int | None:
        value = values.get(name)
        if value is None:
            if required:
                raise fail(name, "missing from the event")
            return None
        try:
            return money.minor_amount(value)
        except money.MoneyError as exc:
            raise fail(name, str(exc)) from None

    raw_currency = values.get("currency")
    if raw_currency is None:
        raise fail("currency", "missing from the event")
    try:
        currency = money.currency_code(raw_currency)
    except money.MoneyError as exc:
        raise fail("currency", str(exc)) from None
    amount = minor("amount", required=True)
    assert amount is not None
    if amount < 0:
        raise fail("amount", f"negative amount {amount}")

    occurred = values.get("occurred_at", event.created)
    if occurred is not None and (isinstance(occurred, bool) or not isinstance(occurred, int)):
        raise fail("occurred_at", "expected unix seconds")

    items: list[Item] = []
    for raw in values.get("items") or []:
        if not isinstance(raw, dict):
            raise fail("items", "each item must be an object")
        quantity = raw.get("quantity")
        unit = raw.get("unit_amount")
        try:
            unit_amount = None if unit is None else money.minor_amount(unit)
        except money.MoneyError as exc:
            raise fail("items", str(exc)) from None
        items.append(
            Item(
                id=None if raw.get("id") is None else str(raw["id"]),
                name=None if raw.get("name") is None else str(raw["name"]),
                unit_amount=unit_amount,
                quantity=quantity if isinstance(quantity, int) and quantity >= 0 else None,
            )
        )

    refs = values.get("refs") or []
    if not isinstance(refs, list):
        refs = [refs]
    metadata = values.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise fail("metadata", "expected an object")

    return Transaction(
        kind="refund" if rule.kind == "refund" else "sale",
        processor=processor,
        event_id=event.id,
        id=text("id"),
        amount=amount,
        currency=currency,
        convention=convention,
        occurred_at=occurred,
        event_name=text("event_name"),
        customer=Customer(
            id=text("customer_id"),
            external_id=text("customer_external_id"),
            email=text("customer_email"),
            name=text("customer_name"),
        ),
        items=items,
        coupon_code=text("coupon_code"),
        discount=minor("discount"),
        tax=minor("tax"),
        shipping=minor("shipping"),
        subscription_id=text("subscription_id"),
        refund_id=text("refund_id"),
        referral_code=text("referral_code"),
        refs=list(dict.fromkeys(str(ref) for ref in refs if isinstance(ref, str) and ref)),
        metadata=metadata,
    )


Template = Mapping[str, Any]  # nested objects whose leaves are Expressions


def compile_template(raw: Any, path: str = "") -> Any:
    if isinstance(raw, dict):
        return {
            key: compile_template(value, f"{path}.{key}" if path else key)
            for key, value in raw.items()
        }
    if isinstance(raw, str):
        try:
            return compile_expression(raw)
        except ExpressionError as exc:
            raise ExpressionError(f"{path}: {exc}") from None
    raise ExpressionError(f"{path}: a template leaf must be an expression string")


def render(template: Any, context: Mapping[str, Any]) -> Any:
    """Evaluate every leaf; null leaves and empty objects or lists are dropped."""
    if isinstance(template, Expression):
        return template.search(context)
    result = {}
    for key, sub in template.items():
        value = render(sub, context)
        if value is None or value == {} or value == []:
            continue
        result[key] = value
    return result


def json_ready(value: Any) -> Any:
    """Decimal -> float at the very last step, for APIs that take major units as JSON numbers."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: json_ready(sub) for key, sub in value.items()}
    if isinstance(value, list):
        return [json_ready(sub) for sub in value]
    return value
