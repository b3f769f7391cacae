"""A verified webhook's way in: its body read as JSON, its event checked, the table's plan for
it, and what the store keeps of it; answered as a ``Verdict``.

The signature is checked before (on the event loop, where the secrets are); what follows
``admit``s the body. Two ways run it, with the same verdicts:
- ``Inline``: here, on the event loop, then ``Store.ingest`` (PostgreSQL, any store);
- a store that admits webhooks itself (``Admits``): SQLite's writer process parses and plans
  each webhook inside the transaction that stores it, on the machine's other core, and the
  event loop only verifies and answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import msgspec
from starlette.datastructures import Headers

from bridge.model import ProviderEvent
from bridge.sources.base import BadEvent

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.pipeline import Pipeline
    from bridge.store.base import Ingest, Store

RawHeaders = list[tuple[bytes, bytes]]  # as the ASGI scope holds them


class TooDeep(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
# msgspec's decoder reads what the standard library's reads, to the same values (integers of
# any size included), about three times as fast (a 3 KB Stripe event: 7.6 against 22 us); on
# anything it refuses, the standard library's decides, and says why
_FAST = msgspec.json.Decoder()


def _decode(text: str | bytes, standard: Callable[[Any], Any]) -> Any:
    """``text`` read by msgspec; refused, or too deep for it, read by ``standard`` (the
    standard library's reading), which then says why."""
    try:
        return _FAST.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return standard(text)


def loads(text: str | bytes) -> Any:
    """JSON as the standard library reads it (``json.loads``), faster on valid input."""
    return _decode(text, json.loads)


def parse_json(text: str, max_depth: int) -> Any:
    """One parse per request; NaN/Infinity, numbers that overflow a float (1e999), a byte order
    mark and nesting deeper than ``max_depth`` are refused."""
    try:
        value = _decode(text, _DECODER.decode)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels") from None
    if text.count("{") + text.count("[") <= max_depth:
        return value  # fewer brackets than levels allowed: it can't be too deep (most bodies)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise TooDeep(f"JSON nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            stack.extend(
                (child, depth + 1) for child in node.values() if isinstance(child, (dict, list))
            )
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return value


def checked(event: ProviderEvent) -> ProviderEvent:
    """Ids and types every store can hold: printable text, at most 255 characters."""
    for what, value in (("id", event.id), ("type", event.type)):
        if not value or len(value) > 255 or not value.isprintable():
            raise BadEvent(f"event {what} must be printable text of 1 to 255 characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadEvent(f"event {what} is not valid text") from None
    return event


class Verdict(NamedTuple):
    """What became of a verified webhook: ``invalid`` (nothing stored; ``reason`` says why),
    ``ignored`` (no route wants it), ``skipped`` (routes want it, none has anything to send),
    ``accepted`` (stored with its deliveries) or ``duplicate`` (stored before)."""

    outcome: str
    event_id: str = ""
    event_type: str = ""
    reason: str = ""
    deliveries: tuple[str, ...] = ()  # the destinations that will hear of it
    skipped: tuple[str, ...] = ()  # the routes that send nothing, and why


def admit(
    pipe: Pipeline, source: str, body: bytes, headers: Mapping[str, str], max_depth: int
) -> tuple[Verdict, Ingest | None]:
    """The verdict on a verified body, and what to store when there is something to send (its
    verdict is then ``accepted``, ``duplicate`` if the store had it already)."""
    from bridge.store.base import Ingest

    try:
        text = body.decode("utf-8")  # strict: not UTF-8 is a 400, and what is stored is text
        payload = parse_json(text, max_depth)
        event = checked(pipe.sources[source].event(payload, headers))
    except (ValueError, UnicodeDecodeError, BadEvent) as exc:
        reason = str(exc) if isinstance(exc, (TooDeep, BadEvent)) else "body is not valid JSON"
        return Verdict("invalid", reason=reason), None
    plan = pipe.plan(event)
    if not plan.matched:
        return Verdict("ignored", event.id, event.type), None
    if not plan.deliveries:
        return Verdict("skipped", event.id, event.type, skipped=tuple(plan.skipped)), None
    verdict = Verdict(
        "accepted",
        event.id,
        event.type,
        deliveries=tuple(d.destination for d in plan.deliveries),
        skipped=tuple(plan.skipped),
    )
    item = Ingest(
        event=event,
        body=text,
        deliveries=plan.deliveries,
        remember=plan.remember,
        purchase=plan.purchase,
        link_refs=plan.link_refs,
        cumulative=plan.cumulative,
    )
    return verdict, item


class Intake(Protocol):
    async def __call__(
        self, source: str, body: bytes, headers: RawHeaders, now: float
    ) -> Verdict: ...


@runtime_checkable
class Admits(Protocol):
    """A store that admits verified webhooks itself, with the table given here."""

    def intake(self, config: Config) -> Intake: ...


class Inline:
    """``admit`` on the event loop, then the store's ``ingest``."""

    def __init__(self, pipe: Pipeline, store: Store) -> None:
        self.pipe = pipe
        self.store = store
        self.max_depth = pipe.config.server.max_depth

    async def __call__(self, source: str, body: bytes, headers: RawHeaders, now: float) -> Verdict:
        verdict, item = admit(self.pipe, source, body, Headers(raw=headers), self.max_depth)
        if item is None or await self.store.ingest(item, now):
            return verdict
        return verdict._replace(outcome="duplicate")
