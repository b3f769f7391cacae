"""The Store protocol: what the pipeline and the worker need from storage, nothing more.

Every backend keeps the same promises:
- ``ingest`` stores an event and its deliveries (and what a later refund needs
  to find its purchase) in ONE transaction, and returns only after it commits;
  a second event with the same (source, event id) creates nothing.
- ``claim`` leases due deliveries of one destination to one worker; a lease
  that runs out makes the delivery due again. A delivery is not claimed while
  an earlier one with the same destination and order key is unfinished.
- ``finish`` records an attempt and the delivery's new state, only while the
  caller still holds the claim (a lease that ran out without another worker
  taking the delivery over still counts: nobody else has sent it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridge.model import Attempt, Delivery, NewDelivery, ProviderEvent, Purchase, Status

# webhooks being received at once that make a burst (at a steady load the requests come and
# go one or two at a time): the worker yields to it, and SQLite's writer process leaves the
# request bodies of a batch's claims to the worker when the batch holds that many webhooks
BURST = 8


@dataclass(frozen=True)
class Ingest:
    event: ProviderEvent
    body: str  # the raw JSON text, stored as received
    deliveries: list[NewDelivery]
    # sale: the refs under which to remember this purchase
    remember: list[str] = field(default_factory=list)
    purchase: Purchase | None = None
    # refund without a known purchase id: refs to resolve into the order key
    link_refs: list[str] = field(default_factory=list)
    # a refund that carries its order's CUMULATIVE refunded total: (order key, total); the
    # store records what was refunded before it as the event's baseline, in the same commit
    cumulative: tuple[str, int] | None = None

    @property
    def looks_up(self) -> bool:
        """Whether storing it reads what is stored (a refund's purchase, a refunded total):
        then it is written on its own, after the new events it may name."""
        return bool(self.link_refs) or self.cumulative is not None


@dataclass(frozen=True)
class StoredEvent:
    pk: int
    source: str
    event_id: str
    type: str
    received_at: float
    deliveries: dict[str, int]  # status -> count


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest: float | None
    dead: int


@dataclass(frozen=True)
class Finish:
    delivery_id: int
    worker: str
    status: Status
    next_at: float
    attempt: Attempt | None  # None: released, not attempted (shutdown, skipped before sending)
    error: str | None = None


class StoreUnavailable(RuntimeError):
    """The database can't take the write now (locked, full, down): answer 503, keep nothing."""


class Store(Protocol):
    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever new or redriven deliveries are committed."""

    async def open(self) -> None:
        """Connect, and migrate the schema (unless the store was made with migrate=False)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the database can't be used."""

    async def ingest(self, item: Ingest, now: float) -> bool:
        """Store the event and its deliveries; False when (source, event id) was seen before."""

    async def purchase(self, source: str, refs: list[str]) -> Purchase | None:
        """The first remembered sale any of ``refs`` names."""

    async def claim(
        self, destination: str, limit: int, now: float, lease: float, worker: str
    ) -> list[Delivery]: ...

    async def finish(self, item: Finish, now: float) -> bool:
        """Record the attempt and new state; False when the lease was lost meanwhile."""

    async def release(self, worker: str | None, now: float) -> int:
        """Make claims due again: ``worker``'s own (a claim token, ``NAME/BOOT``), every
        incarnation's of a worker NAME, or every claim for None; how many."""

    async def next_due(self, destinations: Sequence[str]) -> float | None:
        """The earliest time one of these destinations' unfinished deliveries is due."""

    async def get(self, delivery_id: int) -> tuple[Delivery, list[Attempt]] | None: ...

    async def deliveries(
        self,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Delivery]: ...

    async def redrive(self, ids: list[int], now: float) -> list[int]:
        """Make finished deliveries due now; the ids that were redriven."""

    async def counts(self) -> dict[str, int]: ...

    async def queue(self) -> dict[str, QueueStats]:
        """Per destination: unfinished deliveries, when the oldest one began waiting (its
        creation, or its last redrive), dead ones."""

    async def events(self, limit: int = 100) -> list[StoredEvent]:
        """The newest events, with how many deliveries each has in each status."""

    async def prune(self, events_before: float, refs_before: float) -> int: ...
