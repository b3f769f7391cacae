"""Expressions and the mapping engine: JMESPath compiled once, a few pure functions.

Two stages, both declarative:
- ``TransactionRule``: a processor's raw event -> canonical ``Transaction``
  (the built-in rules live in ``bridge/defaults/<kind>.yaml``; a route's
  ``fields`` override them one field at a time).
- ``Template``: a ``Transaction`` -> a destination's JSON body
  (``bridge/defaults/destinations.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from numbers import Number
from typing import Any, TypeGuard

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser
import jmespath.visitor

from bridge import money
from bridge.model import UNSTORABLE, Customer, Item, ProviderEvent, Transaction

# What routing at ingest needs to know of a transaction (the rest waits for delivery).
PLAN_FIELDS = frozenset(
    {
        "id",
        "amount",
        "currency",
        "customer_id",
        "customer_external_id",
        "customer_email",
        "customer_name",
        "refs",
    }
)

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
    "click_id",
    "refs",
    "metadata",
)


class ExpressionError(ValueError):
    """An expression that does not compile."""


class MappingError(ValueError):
    """A transaction or body that cannot be built from this event; names field and expression."""


def _exact_sum(values: list[int | float]) -> int | float:
    """The sum of numbers with no float arithmetic: floats through their decimal text."""
    if all(isinstance(value, int) for value in values):
        return sum(values)
    return float(sum(Decimal(str(value)) for value in values))


class _Functions(jmespath.functions.Functions):
    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_lower(self, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_upper(self, value: str | None) -> str | None:
        return None if value is None else value.upper()

    @jmespath.functions.signature({"types": ["number"]}, {"types": ["number"]})
    def _func_sub(self, left: int | float, right: int | float) -> int | float:
        """``left - right``, exactly (19.99 - 5 is 14.99)."""
        return _exact_sum([left, -right])

    @jmespath.functions.signature({"types": ["array-number"]})
    def _func_sum(self, values: list[int | float]) -> int | float:
        """JMESPath's sum, exactly (1.1 + 2.2 is 3.3)."""
        return _exact_sum(values)

    @jmespath.functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_after(self, value: str | None, prefix: str) -> str | None:
        """What follows ``prefix`` in ``value`` (null when it does not start with it, or nothing
        follows): ``after('dub_id_abc', 'dub_id_')`` is ``'abc'``."""
        if value is None or not value.startswith(prefix) or len(value) == len(prefix):
            return None
        return value[len(prefix) :]

    @jmespath.functions.signature({"types": ["array"]})
    def _func_same(self, values: list[Any]) -> Any:
        """The one value every element of ``values`` has (null for none); an error if they
        differ: a refund's transactions in two currencies are not one amount."""
        if not values:
            return None
        first = values[0]
        if any(value != first or type(value) is not type(first) for value in values[1:]):
            shown = ", ".join(sorted({repr(value)[:40] for value in values})[:5])
            raise jmespath.exceptions.JMESPathError(f"same(): the values differ ({shown})")
        return first

    @jmespath.functions.signature({"types": ["string", "number", "null"]})
    def _func_str(self, value: str | int | float | None) -> str | None:
        return None if value is None else str(value)

    @jmespath.functions.signature(
        {"types": ["string", "number", "null"]}, {"types": ["string", "null"]}
    )
    def _func_minor(self, amount: str | int | float | None, currency: str | None) -> int | None:
        """A major-unit amount (``"19.99"``, ``4.99``) in minor units, with ISO 4217 exponents."""
        if amount is None or currency is None:
            return None
        try:
            return money.to_minor(amount, currency)
        except money.MoneyError as exc:
            raise jmespath.exceptions.JMESPathError(str(exc)) from None

    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_unix(self, value: str | None) -> int | None:
        """An ISO 8601 / RFC 3339 time as unix seconds."""
        if value is None:
            return None
        seconds = unix_seconds(value)
        if seconds is None:
            raise jmespath.exceptions.JMESPathError(f"not an ISO 8601 time: {value[:40]!r}")
        return seconds

    @jmespath.functions.signature({"types": ["number", "null"]})
    def _func_unix_ms(self, value: int | float | None) -> int | None:
        """Unix milliseconds as unix seconds (rounded down)."""
        if value is None:
            return None
        if value != value or value in (float("inf"), float("-inf")):
            raise jmespath.exceptions.JMESPathError("not a finite number of milliseconds")
        return int(value // 1000)


def unix_seconds(value: object) -> int | None:
    """An ISO 8601 / RFC 3339 time (``2024-04-12T10:18:48.294633Z``) as unix seconds, else None.

    A time without an offset is read as UTC.
    """
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return int(parsed.timestamp())
    except (OverflowError, ValueError, OSError):
        return None


_FUNCTIONS = _Functions()
_OPTIONS = jmespath.Options(custom_functions=_FUNCTIONS, dict_cls=dict)
_INTERPRETER = jmespath.visitor.TreeInterpreter(_OPTIONS)

Evaluate = Callable[[Any], Any]


@dataclass(frozen=True)
class Expression:
    """A JMESPath expression, parsed once and compiled into Python closures.

    The closures implement the common node types with the interpreter's exact
    semantics (null propagation, JMESPath truthiness, number-only ordering);
    anything else is handed to jmespath's own TreeInterpreter.
    """

    text: str
    _evaluate: Evaluate = field(repr=False, compare=False)

    def search(self, data: Any) -> Any:
        try:
            return self._evaluate(data)
        except jmespath.exceptions.JMESPathError as exc:
            raise MappingError(f"expression {self.text!r} failed: {exc}") from None
        except (TypeError, ValueError, ArithmeticError) as exc:  # e.g. contains() on a number
            raise MappingError(f"expression {self.text!r} failed: {type(exc).__name__}") from None

    def __reduce__(self) -> tuple[Callable[[str], Expression], tuple[str]]:
        """Pickled as its text, compiled again where it is read (closures don't pickle): the
        table crosses to SQLite's writer process this way."""
        return compile_expression, (self.text,)


def compile_expression(text: str) -> Expression:
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("an expression must be a non-empty string")
    try:
        parsed = jmespath.compile(text)
    except jmespath.exceptions.JMESPathError as exc:
        message = str(exc).replace("\n", " ")
        raise ExpressionError(f"invalid JMESPath {text!r}: {message}") from None
    tree: Any = parsed.parsed
    return Expression(text, _compile(tree))


# the longest transaction id or payment reference kept: ids and references are indexed, and
# PostgreSQL refuses an index row over about 2.7 KB (500 characters are at most 2,000 bytes)
MAX_REF = 500


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty string/list/object are false (0 is true)."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


_equals: Callable[[Any, Any], bool] = jmespath.visitor._equals  # type: ignore[attr-defined]


def _whole(value: Any) -> TypeGuard[int]:
    """A whole number, not a boolean (JSON's true is no count, id or time)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _textual(value: Any) -> bool:
    """Text, or a whole number that an id or reference is written as."""
    return isinstance(value, str) or _whole(value)


def _number(value: Any) -> bool:
    # any number but a boolean, as the interpreter reads it: the Decimal major-unit amounts too
    return isinstance(value, Number) and not isinstance(value, bool)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
}


def _field_path(node: dict[str, Any]) -> tuple[str, ...] | None:
    """The names of a subexpression made of fields only (``a.b.c``), else None."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] != "subexpression":
        return None
    names: tuple[str, ...] = ()
    for child in node.get("children", []):
        part = _field_path(child)
        if part is None:
            return None
        names += part
    return names


def _path(names: tuple[str, ...]) -> Evaluate:
    def path(value: Any) -> Any:
        for name in names:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value

    return path


def _compile(node: dict[str, Any]) -> Evaluate:
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        name = node["value"]
        return lambda value: value.get(name) if isinstance(value, dict) else None
    if kind == "subexpression":
        names = _field_path(node)
        if names is not None:  # a.b.c: one loop, not a closure per step
            return _path(names)
        steps = [_compile(child) for child in children]

        def chain(value: Any) -> Any:
            # no stop at null: a function after the dot sees it (a.not_null(@, 'x') is 'x')
            for step in steps:
                value = step(value)
            return value

        return chain
    if kind == "literal":
        constant = node["value"]
        return lambda value: constant
    if kind in ("current", "identity"):
        return lambda value: value
    if kind == "or_expression":
        left, right = (_compile(child) for child in children)

        def either(value: Any) -> Any:
            result = left(value)
            return result if truthy(result) else right(value)

        return either
    if kind == "and_expression":
        left, right = (_compile(child) for child in children)

        def both(value: Any) -> Any:
            result = left(value)
            return right(value) if truthy(result) else result

        return both
    if kind == "not_expression":
        inner = _compile(children[0])
        return lambda value: not truthy(inner(value))
    if kind == "comparator":
        left, right = (_compile(child) for child in children)
        op = node["value"]
        if op in ("eq", "ne"):
            negate = op == "ne"
            return lambda value: _equals(left(value), right(value)) != negate
        order = _ORDER[op]

        def compare(value: Any) -> Any:
            # numbers with numbers, strings with strings; anything else is null (where the
            # interpreter itself would raise TypeError comparing a number with a string)
            a, b = left(value), right(value)
            if (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str)):
                return order(a, b)
            return None

        return compare
    if kind in ("pipe", "index_expression"):  # each step takes the previous one's result
        steps = [_compile(child) for child in children]

        def pipe(value: Any) -> Any:
            for step in steps:
                value = step(value)
            return value

        return pipe
    if kind == "index":
        position = node["value"]

        def index(value: Any) -> Any:
            if not isinstance(value, list):
                return None
            try:
                return value[position]
            except IndexError:
                return None

        return index
    if kind == "flatten":
        inner = _compile(children[0])

        def flatten(value: Any) -> Any:
            base = inner(value)
            if not isinstance(base, list):
                return None
            merged: list[Any] = []
            for element in base:
                if isinstance(element, list):
                    merged.extend(element)
                else:
                    merged.append(element)
            return merged

        return flatten
    if kind == "projection":
        base_of, each = (_compile(child) for child in children)

        def project(value: Any) -> Any:
            base = base_of(value)
            if not isinstance(base, list):
                return None
            return [r for r in (each(element) for element in base) if r is not None]

        return project
    if kind == "value_projection":  # a.*: each value of an object
        base_of, each = (_compile(child) for child in children)

        def project_values(value: Any) -> Any:
            base = base_of(value)
            if not isinstance(base, dict):
                return None
            return [r for r in (each(element) for element in base.values()) if r is not None]

        return project_values
    if kind == "filter_projection":  # compiled, so that its comparisons order as above
        base_of, each, condition = (_compile(child) for child in children)

        def select(value: Any) -> Any:
            base = base_of(value)
            if not isinstance(base, list):
                return None
            return [
                r
                for r in (each(element) for element in base if truthy(condition(element)))
                if r is not None
            ]

        return select
    if kind == "multi_select_list":
        items = [_compile(child) for child in children]
        return lambda value: None if value is None else [item(value) for item in items]
    if kind == "multi_select_dict":
        pairs = [(child["value"], _compile(child["children"][0])) for child in children]
        return lambda value: None if value is None else {key: item(value) for key, item in pairs}
    if kind == "function_expression":
        name = node["value"]
        args = [_compile(child) for child in children]
        call = _FUNCTIONS.call_function
        return lambda value: call(name, [arg(value) for arg in args])
    # slices, expression references: the interpreter itself
    tree: Any = node
    return lambda value: _INTERPRETER.visit(tree, value)


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
    # the amount is the order's refunded total so far: the bridge sends the delta from what it
    # recorded before (the order key is the transaction id, else its first reference)
    cumulative: bool = False


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
    only: frozenset[str] | None = None,
) -> Transaction:
    """Evaluate the rule (then a route's overrides, which also see ``txn``) into a Transaction.

    ``only``: evaluate just these fields (the rest stay empty), for a cheap look at an event.
    """
    context: dict[str, Any] = {"event": event.payload}
    values = _evaluate(rule.fields, context, only, frozenset(overrides or ()))
    if not overrides:
        return _transaction(rule, event, processor, convention, values, rule.fields)
    try:
        context["txn"] = _transaction(
            rule, event, processor, convention, values, rule.fields
        ).view()
    except MappingError:
        context["txn"] = None  # the route's own fields may be what completes the transaction
    values.update(_evaluate(overrides, context, only))
    return _transaction(rule, event, processor, convention, values, {**rule.fields, **overrides})


def _evaluate(
    fields: Mapping[str, Expression],
    context: Mapping[str, Any],
    only: frozenset[str] | None,
    overridden: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Each field's value; an expression that fails names its field too (unless a route's
    own expression for that field replaces it: then it is just left out)."""
    values: dict[str, Any] = {}
    for name, expr in fields.items():
        if only is None or name in only:
            try:
                values[name] = expr.search(context)
            except MappingError as exc:
                if name in overridden:
                    continue
                raise MappingError(f"field {name}: {exc}") from None
    return values


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
        if not _textual(value):
            raise fail(name, f"expected text, got {type(value).__name__}")
        if isinstance(value, str) and UNSTORABLE.search(value):
            raise fail(name, "not valid text (a NUL or a lone surrogate)")
        return str(value)

    def minor(name: str, required: bool = False) -> int | None:
        value = values.get(name)
        if value is None:
            if required:
                raise fail(name, "missing from the event")
            return None
        if isinstance(value, Decimal):  # only txn's *_major amounts are Decimals
            raise fail(name, f"{value} is in major units; this field takes minor units")
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
    if occurred is not None and not _whole(occurred):
        raise fail("occurred_at", "expected unix seconds")

    items: list[Item] = []
    raw_items = values.get("items") or []
    if not isinstance(raw_items, list):
        raise fail("items", f"expected an array of objects, got {type(raw_items).__name__}")
    for raw in raw_items:
        if not isinstance(raw, dict):
            raise fail("items", "each item must be an object")
        for key in ("id", "name"):
            if raw.get(key) is not None and not _textual(raw[key]):
                raise fail("items", f"an item's {key} must be text, got {type(raw[key]).__name__}")
        quantity = raw.get("quantity")
        unit = raw.get("unit_amount")
        try:
            unit_amount = None if unit is None else money.minor_amount(unit)
        except money.MoneyError:
            unit_amount = None  # a line's price is detail (Stripe allows sub-cent unit prices)
        items.append(
            Item(
                id=None if raw.get("id") is None else str(raw["id"]),
                name=None if raw.get("name") is None else str(raw["name"]),
                unit_amount=unit_amount,
                quantity=quantity if _whole(quantity) and quantity >= 0 else None,
            )
        )

    refs = values.get("refs") or []
    if not isinstance(refs, list):
        refs = [refs]
    # a reference that is a number is its text, as an id is (the sale's id 123 is "123")
    refs = [str(ref) if _whole(ref) else ref for ref in refs]
    metadata = values.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise fail("metadata", "expected an object")

    txn_id = text("id")
    if txn_id is not None and len(txn_id) > MAX_REF:
        raise fail("id", f"longer than {MAX_REF} characters")
    return Transaction(
        kind="refund" if rule.kind == "refund" else "sale",
        processor=processor,
        event_id=event.id,
        id=txn_id,
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
        click_id=text("click_id"),
        refs=list(
            dict.fromkeys(
                ref
                for ref in refs
                if isinstance(ref, str) and 0 < len(ref) <= MAX_REF and not UNSTORABLE.search(ref)
            )
        ),
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
