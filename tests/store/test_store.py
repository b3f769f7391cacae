"""The Store protocol, tested through every backend the ``store`` fixture knows.

Each test runs its body on one event loop (the ``runner`` fixture), the same loop that
opened the store, so that backends whose connections belong to a loop work too. To add a
backend, add a factory to ``BACKENDS`` (and skip it there when its server is unavailable).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bridge.model import Attempt, Customer, Delivery, NewDelivery, ProviderEvent, Purchase, Status
from bridge.store import Finish, Ingest, SQLiteStore, Store, StoreUnavailable
from bridge.store.base import QueueStats

NOW = 1_700_000_000.0
LEASE = 30.0
DUE = ["dub", "shop", "umami"]  # the destinations next_due is asked about


def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(f"sqlite:///{tmp_path}/t.db")


BACKENDS = ("sqlite", "postgres")


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A factory of unopened stores; every call reaches the same (fresh) database."""
    if request.param == "postgres":
        from bridge.store.postgres import PostgresStore

        url: str = request.getfixturevalue("pg_url")
        return lambda: PostgresStore(url)
    return lambda: _sqlite(tmp_path)


@pytest.fixture
def store(make_store: Callable[[], Store], runner: asyncio.Runner) -> Iterator[Store]:
    backend = make_store()
    runner.run(backend.open())
    try:
        yield backend
    finally:
        runner.run(backend.close())


# --- building what the pipeline would hand the store -----------------------------------------


def event(event_id: str, source: str = "stripe", type_: str = "invoice.paid") -> ProviderEvent:
    payload = {"id": event_id, "type": type_}
    return ProviderEvent(source, event_id, type_, 1_699_999_000, payload)


def ingest_of(
    event_id: str,
    destinations: Sequence[str] = ("dub",),
    order_key: str | None = None,
    *,
    source: str = "stripe",
    type_: str = "invoice.paid",
    remember: Sequence[str] = (),
    purchase: Purchase | None = None,
    link_refs: Sequence[str] = (),
) -> Ingest:
    ev = event(event_id, source, type_)
    key = f"txn_{event_id}" if order_key is None else order_key
    return Ingest(
        event=ev,
        body=json.dumps(ev.payload),
        deliveries=[NewDelivery(i, name, key) for i, name in enumerate(destinations)],
        remember=list(remember),
        purchase=purchase,
        link_refs=list(link_refs),
    )


def attempt(
    delivery_id: int,
    outcome: str = "delivered",
    status_code: int | None = 200,
    error: str | None = None,
    excerpt: str | None = '{"ok": true}',
    started_at: float = NOW,
) -> Attempt:
    return Attempt(delivery_id, started_at, 12.5, outcome, status_code, error, excerpt)


async def by_event(store: Store, event_id: str, destination: str | None = None) -> Delivery:
    found = [
        d
        for d in await store.deliveries(destination=destination, limit=10_000)
        if d.event_id == event_id
    ]
    assert len(found) == 1, found
    return found[0]


async def status_of(store: Store, delivery_id: int) -> Status:
    got = await store.get(delivery_id)
    assert got is not None
    return got[0].status


async def claim_one(store: Store, destination: str, now: float, worker: str = "w1") -> Delivery:
    claimed = await store.claim(destination, 10, now, LEASE, worker)
    assert len(claimed) == 1, claimed
    return claimed[0]


async def settle(
    store: Store,
    destination: str,
    status: Status,
    now: float = NOW,
    next_at: float | None = None,
    worker: str = "w1",
) -> Delivery:
    """Claim the first due delivery of ``destination`` and finish it with ``status``."""
    claimed = await store.claim(destination, 1, now, LEASE, worker)
    assert len(claimed) == 1, claimed
    d = claimed[0]
    finish = Finish(d.id, worker, status, now if next_at is None else next_at, attempt(d.id))
    assert await store.finish(finish, now)
    return d


# --- ingest -----------------------------------------------------------------------------------


def test_ingest_is_idempotent_per_source_and_event_id(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        assert await store.ingest(ingest_of("evt_1", ["dub", "shop"]), NOW) is True
        # the same event again, even planned differently, creates nothing
        again = ingest_of("evt_1", ["dub", "shop", "umami"], order_key="other")
        assert await store.ingest(again, NOW + 5) is False

        rows = await store.deliveries()
        assert sorted(d.destination for d in rows) == ["dub", "shop"]
        assert {d.order_key for d in rows} == {"txn_evt_1"}
        assert {d.created_at for d in rows} == {NOW}
        assert all(d.status is Status.PENDING and d.attempts == 0 for d in rows)
        assert all(d.next_at == NOW and d.window_at == NOW for d in rows)
        assert await store.counts() == {"pending": 2}

    runner.run(body())


def test_the_commit_batch_histogram_counts_webhooks_and_nothing_else(
    store: Store, runner: asyncio.Runner
) -> None:
    """``bridge_ingest_commit_batch_size`` observes how many webhooks' events shared a commit:
    concurrent ingests together, a refund that looks up its purchase as one; the worker's
    claims and finishes, the admin's reads and redrives are no webhooks and add nothing."""

    def histogram() -> tuple[float, float]:
        count = REGISTRY.get_sample_value("bridge_ingest_commit_batch_size_count") or 0.0
        total = REGISTRY.get_sample_value("bridge_ingest_commit_batch_size_sum") or 0.0
        return count, total

    async def body() -> None:
        count, total = histogram()
        stored = await asyncio.gather(
            *(store.ingest(ingest_of(f"evt_b{n}"), NOW) for n in range(5))
        )
        assert stored == [True] * 5
        after = histogram()
        assert after[1] - total == 5  # five webhooks, each counted once
        assert 1 <= after[0] - count <= 5  # in as few commits as the store could share
        refund = ingest_of("evt_refund", type_="charge.refunded", link_refs=["ch_1"])
        assert await store.ingest(refund, NOW)
        count, total = histogram()
        assert (count - after[0], total - after[1]) == (1, 1)

        [d] = await store.claim("dub", 1, NOW, LEASE, "w1")
        assert await store.finish(Finish(d.id, "w1", Status.DEAD, NOW, attempt(d.id)), NOW)
        await store.redrive([d.id], NOW)
        await store.release("w1", NOW)
        await store.purchase("stripe", ["ch_1"])
        await store.next_due(DUE)
        await store.get(d.id)
        await store.deliveries()
        await store.counts()
        await store.queue()
        await store.events()
        assert histogram() == (count, total)

    runner.run(body())


def test_same_event_id_from_different_sources_is_distinct(
    store: Store, runner: asyncio.Runner
) -> None:
    async def body() -> None:
        assert await store.ingest(ingest_of("evt_1", source="stripe"), NOW)
        assert await store.ingest(ingest_of("evt_1", source="paddle"), NOW)
        assert not await store.ingest(ingest_of("evt_1", source="paddle"), NOW)
        rows = await store.deliveries()
        assert sorted(d.source for d in rows) == ["paddle", "stripe"]
        assert {d.event_id for d in rows} == {"evt_1"}

    runner.run(body())


def test_ping(store: Store, runner: asyncio.Runner) -> None:
    runner.run(store.ping())


def test_what_ingest_returned_for_survives_a_reopen(
    make_store: Callable[[], Store], runner: asyncio.Runner
) -> None:
    async def body() -> None:
        first = make_store()
        await first.open()
        customer = Customer("cus_1")
        sale = ingest_of("evt_1", ["dub"], remember=["ch_1"], purchase=Purchase("pi_1", customer))
        assert await first.ingest(sale, NOW)
        await first.close()

        second = make_store()
        await second.open()
        try:
            assert await second.ingest(sale, NOW) is False
            assert [d.event_id for d in await second.deliveries()] == ["evt_1"]
            assert await second.purchase("stripe", ["ch_1"]) == Purchase("pi_1", customer)
        finally:
            await second.close()

    runner.run(body())


# --- claim and leases -------------------------------------------------------------------------


def test_claim_leases_only_due_deliveries_of_the_destination(
    store: Store, runner: asyncio.Runner
) -> None:
    async def body() -> None:
        await store.ingest(ingest_of("evt_1", ["dub", "shop"]), NOW)
        await store.ingest(ingest_of("evt_2", ["dub"]), NOW + 1)
        await store.ingest(ingest_of("evt_3", ["dub"]), NOW + 10)

        # nothing is due before it was created
        assert await store.claim("dub", 10, NOW - 1, LEASE, "w1") == []

        claimed = await store.claim("dub", 10, NOW + 2, LEASE, "w1")
        assert [d.event_id for d in claimed] == ["evt_1", "evt_2"]
        for d in claimed:
            assert d.destination == "dub"
            assert d.status is Status.IN_FLIGHT
            assert d.source == "stripe"
            assert d.event_type == "invoice.paid"
            assert json.loads(d.body or "") == {"id": d.event_id, "type": "invoice.paid"}
            assert d.updated_at == NOW + 2
            assert await status_of(store, d.id) is Status.IN_FLIGHT

        # the lease holds: nothing more is due yet
        assert await store.claim("dub", 10, NOW + 3, LEASE, "w2") == []
        # another destination's delivery was untouched
        shop = await by_event(store, "evt_1", "shop")
        assert shop.status is Status.PENDING
        assert [d.id for d in await store.claim("shop", 10, NOW + 3, LEASE, "w2")] == [shop.id]

        # limit is respected, and evt_3 is due once its time comes
        await store.ingest(ingest_of("evt_4", ["dub"]), NOW + 10)
        first = await store.claim("dub", 1, NOW + 10, LEASE, "w1")
        assert [d.event_id for d in first] == ["evt_3"]
        assert await store.counts() == {"in_flight": 4, "pending": 1}

    runner.run(body())


def test_expired_lease_is_claimable_again_and_the_old_holder_loses_it(
    store: Store, runner: asyncio.Runner
) -> None:
    async def body() -> None:
        await store.ingest(ingest_of("evt_1"), NOW)
        held = await claim_one(store, "dub", NOW, "w1")

        assert await store.claim("dub", 10, NOW + LEASE - 1, LEASE, "w2") == []
        retaken = await claim_one(store, "dub", NOW + LEASE + 1, "w2")
        assert retaken.id == held.id
        assert retaken.status is Status.IN_FLIGHT

        late = Finish(held.id, "w1", Status.DELIVERED, NOW + LEASE + 2, attempt(held.id))
        assert await store.finish(late, NOW + LEASE + 2) is False
        got = await store.get(held.id)
        assert got is not None
        delivery, attempts = got
        assert delivery.status is Status.IN_FLIGHT
        assert delivery.attempts == 0
        assert attempts == []

        # the new holder still can
        now = NOW + LEASE + 3
        fin = Finish(held.id, "w2", Status.DELIVERED, now, attempt(held.id, started_at=now))
        assert await store.finish(fin, now) is True
        assert await status_of(store, held.id) is Status.DELIVERED

    runner.run(body())


# --- finish -----------------------------------------------------------------------------------


def test_finish_by_the_holder_records_the_attempt_and_the_new_state(
    store: Store, runner: asyncio.Runner
) -> None:
    async def body() -> None:
        await store.ingest(ingest_of("evt_1", ["dub", "shop"]), NOW)

        dub = await claim_one(store, "dub", NOW)
        sent = attempt(dub.id, "delivered", 201, None, '{"sale": {"id": "s_1"}}', NOW + 1)
        assert await store.finish(Finish(dub.id, "w1", Status.DELIVERED, NOW + 2, sent), NOW + 2)
        got = await store.get(dub.id)
        assert got is not None
        delivery, attempts = got
        assert attempts == [sent]
        assert delivery.status is Status.DELIVERED
        assert delivery.attempts == 1
        assert delivery.last_error is None
        assert delivery.updated_at == NOW + 2
        assert json.loads(delivery.body or "") == {"id": "evt_1", "type": "invoice.paid"}
        # finished: a second finish is refused and records nothing
        again = Finish(dub.id, "w1", Status.DEAD, NOW + 3, attempt(dub.id))
        assert await store.finish(again, NOW + 3) is False
        got = await store.get(dub.id)
        assert got is not None
        assert got[0].status is Status.DELIVERED
        assert got[1] == [sent]

        shop = await claim_one(store, "shop", NOW)
        failed = attempt(shop.id, "rejected", 422, "HTTP 422", '{"error": "bad"}', NOW + 1)
        fin = Finish(shop.id, "w1", Status.DEAD, NOW + 2, failed, "HTTP 422: bad")
        assert await store.finish(fin, NOW + 2)
        got = await store.get(shop.id)
        assert got is not None
        assert got[0].status is Status.DEAD
        assert got[0].attempts == 1
        assert got[0].last_error == "HTTP 422: bad"
        assert got[1] == [failed]

        assert await store.get(10_000) is None

    runner.run(body())


def test_a_destination_answer_with_nul_or_a_lone_surrogate_is_recorded(
    store: Store, runner: asyncio.Runner
) -> None:
    """PostgreSQL's text cannot hold NUL, and no UTF-8 encoder writes a lone surrogate: a
    destination's words holding them are recorded with U+FFFD, never refused (a finish that
    failed each time would leave the delivery to be sent again)."""

    async def body() -> None:
        await store.ingest(ingest_of("evt_1"), NOW)
        d = await claim_one(store, "dub", NOW)
        said = attempt(d.id, "rejected", 400, "HTTP 400: bad\x00id", 'accepted\x00 "\ud800"')
        fin = Finish(d.id, "w1", Status.DEAD, NOW + 1, said, "HTTP 400: bad\x00id \udfff")
        assert await store.finish(fin, NOW + 1)
        got = await store.get(d.id)
        assert got is not None
        assert got[0].status is Status.DEAD
        assert got[0].last_error == "HTTP 400: bad\ufffdid \ufffd"
        assert got[1][0].error == "HTTP 400: bad\ufffdid"
        assert got[1][0].response_excerpt == 'accepted\ufffd "\ufffd"'

    runner.run(body())


def test_a_row_the_database_refuses_fails_only_its_own_webhook(
    store: Store, runner: asyncio.Runner
) -> None:
    """An order key PostgreSQL cannot index (over about 2.7 KB) is that webhook's failure, not
    the failure of every webhook sharing its commit (SQLite stores it)."""

    # hex of a hash chain: nothing PostgreSQL's compression could shrink into an index row
    incompressible = "".join(hashlib.sha256(str(n).encode()).hexdigest() for n in range(150))

    async def body() -> None:
        results = await asyncio.gather(
            store.ingest(ingest_of("evt_good_1"), NOW),
            store.ingest(ingest_of("evt_huge", order_key=incompressible), NOW),
            store.ingest(ingest_of("evt_good_2"), NOW),
            return_exceptions=True,
        )
        assert results[0] is True and results[2] is True, results
        assert results[1] is True or not isinstance(results[1], StoreUnavailable), results
        stored = {d.event_id for d in await store.deliveries()}
        assert {"evt_good_1", "evt_good_2"} <= stored

    runner.run(body())


def test_a_release_comes_after_the_finishes_already_asked_for(
    store: Store, runner: asyncio.Runner
) -> None:
    """A worker stopping releases its claims; a finish it asked for just before (its task
    cancelled at the end of the grace period, say) must not land after that release, which
    would make a delivered delivery pending again, to be sent again."""

    async def body() -> None:
        await store.ingest(ingest_of("evt_1"), NOW)
        d = await claim_one(store, "dub", NOW)
        done = Finish(d.id, "w1", Status.DELIVERED, NOW + 1, attempt(d.id))
        finishing = asyncio.ensure_future(store.finish(done, NOW + 1))
        await asyncio.sleep(0)  # asked for, not yet written
        assert await store.release("w1", NOW + 2) == 0
        assert await finishing
        assert await status_of(store, d.id) is Status.DELIVERED

    runner.run(body())


def test_finish_without_an_attempt_counts_none(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        await store.ingest(ingest_of("evt_1"), NOW)
        d = await claim_one(store, "dub", NOW)
        assert await store.finish(Finish(d.id, "w1", Status.PENDING, NOW, None), NOW + 1)
        got = await store.get(d.id)
        assert got is not None
        assert got[0].status is Status.PENDING
        assert got[0].attempts == 0
        assert got[1] == []
        assert (await claim_one(store, "dub", NOW + 1)).id == d.id

    runner.run(body())


def test_concurrent_finishes_each_get_their_own_answer(
    store: Store, runner: asyncio.Runner
) -> None:
    """Finishes that share a commit: the holder's are recorded with their attempts; one by a
    worker that no longer holds its delivery, and one for a delivery finished twice at once,
    are refused as they would be one after the other, and record nothing."""

    async def body() -> None:
        for i in range(6):
            await store.ingest(ingest_of(f"evt_{i}"), NOW)
        claimed = await store.claim("dub", 10, NOW, LEASE, "w1")
        assert len(claimed) == 6
        a, b, c, d, e, f = (x.id for x in claimed)
        finishes = [
            Finish(a, "w1", Status.DELIVERED, NOW, attempt(a, started_at=NOW + 1)),
            Finish(b, "w2", Status.DELIVERED, NOW, attempt(b)),  # not w2's to finish
            Finish(c, "w1", Status.PENDING, NOW + 60, attempt(c, "retry", 503, "HTTP 503")),
            Finish(d, "w1", Status.PENDING, NOW, None),  # released, not attempted
            Finish(e, "w1", Status.DELIVERED, NOW, attempt(e)),
            Finish(e, "w1", Status.DEAD, NOW, attempt(e, "rejected", 400)),  # twice at once
            Finish(f, "w1", Status.DEAD, NOW, attempt(f, "rejected", 400, excerpt=None)),
        ]
        results = await asyncio.gather(*(store.finish(x, NOW + 2) for x in finishes))
        assert results[:5] + results[6:] == [True, False, True, True, True, True]
        assert results[5] is False
        expected = {
            a: (Status.DELIVERED, 1, 1),
            b: (Status.IN_FLIGHT, 0, 0),
            c: (Status.PENDING, 1, 1),
            d: (Status.PENDING, 0, 0),
            e: (Status.DELIVERED, 1, 1),
            f: (Status.DEAD, 1, 1),
        }
        for delivery_id, (status, counted, attempts) in expected.items():
            got = await store.get(delivery_id)
            assert got is not None
            assert (got[0].status, got[0].attempts, len(got[1])) == (status, counted, attempts)
        got = await store.get(a)
        assert got is not None and got[1] == [attempt(a, started_at=NOW + 1)]

    runner.run(body())


def test_pending_finish_is_not_claimed_before_next_at(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        await store.ingest(ingest_of("evt_1"), NOW)
        d = await claim_one(store, "dub", NOW)
        tried = attempt(d.id, "retry", 503, "HTTP 503", "busy")
        assert await store.finish(Finish(d.id, "w1", Status.PENDING, NOW + 60, tried, "503"), NOW)

        got = await store.get(d.id)
        assert got is not None
        assert got[0].status is Status.PENDING
        assert got[0].next_at == NOW + 60
        assert got[0].attempts == 1
        assert got[0].last_error == "503"
        assert got[1] == [tried]

        assert await store.next_due(DUE) == NOW + 60
        assert await store.claim("dub", 10, NOW + 59, LEASE, "w1") == []
        again = await claim_one(store, "dub", NOW + 60)
        assert again.id == d.id
        assert again.attempts == 1

    runner.run(body())


# --- ordering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [Status.DELIVERED, Status.DEAD])
def test_same_order_key_is_delivered_in_order(
    store: Store, runner: asyncio.Runner, outcome: Status
) -> None:
    async def body() -> None:
        await store.ingest(ingest_of("sale", ["dub", "shop"], "pi_1"), NOW)
        await store.ingest(ingest_of("refund", ["dub"], "pi_1", type_="charge.refunded"), NOW)
        await store.ingest(ingest_of("other", ["dub"], "pi_2"), NOW)

        # the refund waits behind the pending sale; another key does not
        claimed = await store.claim("dub", 10, NOW, LEASE, "w1")
        assert sorted(d.event_id for d in claimed) == ["other", "sale"]
        sale = next(d for d in claimed if d.event_id == "sale")
        other = next(d for d in claimed if d.event_id == "other")
        assert await store.finish(
            Finish(other.id, "w1", Status.DELIVERED, NOW, attempt(other.id)), NOW
        )
        # ... and behind the in-flight sale
        assert await store.claim("dub", 10, NOW + 1, LEASE, "w2") == []
        # same key on another destination is independent
        assert (await claim_one(store, "shop", NOW + 1)).event_id == "sale"

        # the sale is to be retried later: pending, not due, and the refund still waits
        retry = Finish(sale.id, "w1", Status.PENDING, NOW + 100, attempt(sale.id, "retry", 503))
        assert await store.finish(retry, NOW + 1)
        assert await store.claim("dub", 10, NOW + 50, LEASE, "w1") == []
        # due again: only the sale is claimed
        assert [d.id for d in await store.claim("dub", 10, NOW + 100, LEASE, "w1")] == [sale.id]
        # its lease runs out: it is taken again by w2, the refund still waits
        later = NOW + 100 + LEASE
        assert [d.id for d in await store.claim("dub", 10, later, LEASE, "w2")] == [sale.id]
        assert await store.claim("dub", 10, later + 1, LEASE, "w3") == []

        done = Finish(sale.id, "w2", outcome, later + 2, attempt(sale.id))
        assert await store.finish(done, later + 2)
        refund = await claim_one(store, "dub", later + 2)
        assert refund.event_id == "refund"
        assert refund.order_key == "pi_1"

    runner.run(body())


# --- refunds and remembered purchases ---------------------------------------------------------


def test_link_refs_resolve_the_order_key(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        customer = Customer("cus_1", "user_1", "a@example.com", "Ann")
        sale = ingest_of(
            "evt_sale",
            ["dub", "shop"],
            "pi_1",
            remember=["pi_1", "ch_1"],
            purchase=Purchase("pi_1", customer),
        )
        assert await store.ingest(sale, NOW)

        # a refund naming the charge: the key becomes the purchase's id
        refund = ingest_of(
            "evt_refund", ["shop"], "", type_="charge.refunded", link_refs=["re_9", "ch_1"]
        )
        assert await store.ingest(refund, NOW + 1)
        assert (await by_event(store, "evt_refund")).order_key == "pi_1"

        # unknown refs: the first one
        orphan = ingest_of("evt_orphan", ["shop"], "", link_refs=["ch_unknown", "ch_other"])
        assert await store.ingest(orphan, NOW + 1)
        assert (await by_event(store, "evt_orphan")).order_key == "ch_unknown"

        # refs are remembered per source
        elsewhere = ingest_of("evt_x", ["shop"], "", source="paddle", link_refs=["ch_1"])
        assert await store.ingest(elsewhere, NOW + 1)
        assert (await by_event(store, "evt_x")).order_key == "ch_1"

        # no key and no refs: the event's own id; an explicit key is kept
        assert await store.ingest(ingest_of("evt_bare", ["shop"], ""), NOW + 1)
        assert (await by_event(store, "evt_bare")).order_key == "evt_bare"
        kept = ingest_of("evt_kept", ["shop"], "re_5", link_refs=["ch_1"])
        assert await store.ingest(kept, NOW + 1)
        assert (await by_event(store, "evt_kept")).order_key == "re_5"

        # the linked refund is ordered behind its sale
        shop = await store.claim("shop", 10, NOW + 2, LEASE, "w1")
        assert "evt_refund" not in {d.event_id for d in shop}
        assert "evt_sale" in {d.event_id for d in shop}

    runner.run(body())


def test_purchase_finds_a_remembered_sale_by_any_ref(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        customer = Customer("cus_1", "user_1", "a@example.com", "Ann")
        sale = ingest_of(
            "evt_sale", remember=["pi_1", "ch_1", "cs_1"], purchase=Purchase("pi_1", customer)
        )
        assert await store.ingest(sale, NOW)
        # a sale without purchase info remembers nothing
        assert await store.ingest(ingest_of("evt_plain", remember=["ch_9"]), NOW)

        expected = Purchase("pi_1", customer)
        for refs in (["pi_1"], ["ch_1"], ["cs_1"], ["nope", "ch_1"]):
            assert await store.purchase("stripe", refs) == expected, refs
        assert await store.purchase("stripe", ["nope"]) is None
        assert await store.purchase("stripe", []) is None
        assert await store.purchase("stripe", ["ch_9"]) is None
        assert await store.purchase("paddle", ["ch_1"]) is None

        # the first ref that names a sale wins
        other = Purchase("pi_7", Customer("cus_7"))
        assert await store.ingest(ingest_of("evt_7", remember=["ch_7"], purchase=other), NOW)
        assert await store.purchase("stripe", ["ch_7", "ch_1"]) == other
        assert await store.purchase("stripe", ["ch_1", "ch_7"]) == expected
        # a duplicate event remembers nothing new
        dup = ingest_of("evt_sale", remember=["ch_1", "ch_8"], purchase=other)
        assert await store.ingest(dup, NOW + 1) is False
        assert await store.purchase("stripe", ["ch_1"]) == expected
        assert await store.purchase("stripe", ["ch_8"]) is None

        # no customer details: an empty customer
        bare = ingest_of("evt_bare", remember=["ch_2"], purchase=Purchase("pi_2", Customer()))
        assert await store.ingest(bare, NOW)
        assert await store.purchase("stripe", ["ch_2"]) == Purchase("pi_2", Customer())

    runner.run(body())


# --- release and redrive ----------------------------------------------------------------------


def test_release_makes_claims_due_again(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        await store.ingest(ingest_of("evt_1", ["dub", "shop", "umami"]), NOW)
        await store.ingest(ingest_of("evt_2", ["dub"]), NOW)
        assert len(await store.claim("dub", 10, NOW, LEASE, "w1")) == 2
        shop = await claim_one(store, "shop", NOW, "w2")
        umami = await claim_one(store, "umami", NOW, "w3")

        assert await store.release("nobody", NOW + 1) == 0
        assert await store.release("w1", NOW + 1) == 2
        assert await store.counts() == {"pending": 2, "in_flight": 2}
        assert await status_of(store, shop.id) is Status.IN_FLIGHT
        # due again at once, for anyone, within what would have been w1's lease
        again = await store.claim("dub", 10, NOW + 1, LEASE, "w4")
        assert sorted(d.event_id for d in again) == ["evt_1", "evt_2"]
        # the old holder lost them
        lost = Finish(again[0].id, "w1", Status.DELIVERED, NOW + 2, attempt(again[0].id))
        assert await store.finish(lost, NOW + 2) is False

        assert await store.release(None, NOW + 3) == 4
        assert await store.counts() == {"pending": 4}
        assert await status_of(store, umami.id) is Status.PENDING
        assert await store.release(None, NOW + 4) == 0
        assert len(await store.claim("shop", 10, NOW + 4, LEASE, "w5")) == 1

    runner.run(body())


def test_redrive_makes_a_dead_delivery_due_now(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        await store.ingest(ingest_of("evt_1", ["dub", "shop", "umami"]), NOW)
        dub = await claim_one(store, "dub", NOW)
        for n in range(3):
            t = NOW + n * 10
            fin = Finish(dub.id, "w1", Status.PENDING, t + 10, attempt(dub.id, "retry", 503))
            assert await store.finish(fin, t)
            assert (await claim_one(store, "dub", t + 10)).id == dub.id
        dead = Finish(dub.id, "w1", Status.DEAD, NOW + 40, attempt(dub.id, "x", 500), "gave up")
        assert await store.finish(dead, NOW + 40)
        got = await store.get(dub.id)
        assert got is not None
        assert got[0].attempts == 4

        later = NOW + 1000
        assert await store.redrive([dub.id, dub.id], later) == [dub.id]  # once, named twice
        got = await store.get(dub.id)
        assert got is not None
        assert got[0].status is Status.PENDING
        assert got[0].next_at == later
        assert got[0].attempts == 0
        assert got[0].window_at == later
        assert got[0].updated_at == later
        assert await store.claim("dub", 10, later - 1, LEASE, "w1") == []
        assert (await claim_one(store, "dub", later, "w2")).id == dub.id

        # pending, in-flight and unknown deliveries are not redriven
        shop = await by_event(store, "evt_1", "shop")
        umami = await claim_one(store, "umami", NOW)
        assert await store.redrive([shop.id, umami.id, dub.id, 10_000], later) == []
        after = await store.get(shop.id)
        assert after is not None
        assert dataclasses.replace(after[0], body=None) == shop
        assert await status_of(store, umami.id) is Status.IN_FLIGHT

        # a delivered one can be sent again
        assert await store.finish(
            Finish(umami.id, "w1", Status.DELIVERED, NOW + 1, attempt(umami.id)), NOW + 1
        )
        assert await store.redrive([umami.id], later) == [umami.id]
        assert await status_of(store, umami.id) is Status.PENDING

    runner.run(body())


# --- queries ----------------------------------------------------------------------------------


def test_deliveries_filters_and_counts(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        assert await store.counts() == {}
        assert await store.deliveries() == []
        for i in range(3):
            await store.ingest(ingest_of(f"evt_{i}", ["dub", "shop"]), NOW + i)
        await settle(store, "dub", Status.DEAD, NOW + 10)  # evt_0
        await settle(store, "shop", Status.DELIVERED, NOW + 20)  # evt_0
        await settle(store, "shop", Status.DRY_RUN, NOW + 30)  # evt_1

        everything = await store.deliveries()
        assert len(everything) == 6
        assert [d.id for d in everything] == sorted((d.id for d in everything), reverse=True)
        assert all(d.body is None for d in everything)  # lists leave the payload out

        dead = await store.deliveries(status="dead")
        assert [(d.event_id, d.destination) for d in dead] == [("evt_0", "dub")]
        assert dead[0].status is Status.DEAD
        assert [d.id for d in await store.deliveries(status=Status.DEAD)] == [dead[0].id]

        shop = await store.deliveries(destination="shop")
        assert {d.destination for d in shop} == {"shop"}
        assert len(shop) == 3
        pending_dub = await store.deliveries(status="pending", destination="dub")
        assert sorted(d.event_id for d in pending_dub) == ["evt_1", "evt_2"]

        recent = await store.deliveries(since=NOW + 20)
        assert sorted((d.event_id, d.status) for d in recent) == [
            ("evt_0", Status.DELIVERED),
            ("evt_1", Status.DRY_RUN),
        ]
        assert await store.deliveries(since=NOW + 31) == []
        assert len(await store.deliveries(limit=2)) == 2
        assert await store.deliveries(status="delivered", destination="dub") == []

        assert await store.counts() == {"pending": 3, "dead": 1, "delivered": 1, "dry_run": 1}

    runner.run(body())


def test_queue_counts_the_unfinished_and_the_dead_of_each_destination(
    store: Store, runner: asyncio.Runner
) -> None:
    async def body() -> None:
        for i, at in enumerate((NOW + 5, NOW, NOW + 9)):
            await store.ingest(ingest_of(f"evt_{i}", ["dub", "shop"]), at)
        await store.ingest(ingest_of("evt_3", ["umami"]), NOW + 1)
        await settle(store, "dub", Status.DELIVERED)  # evt_1's, the only one due at NOW
        [flying] = await store.claim("dub", 1, NOW + 100, LEASE, "w1")
        assert flying.event_id == "evt_0"  # in flight: still unfinished
        await settle(store, "umami", Status.DEAD, now=NOW + 1)
        await settle(store, "shop", Status.DEAD)  # evt_1's
        assert await store.queue() == {
            "dub": QueueStats(depth=2, oldest=NOW + 5, dead=0),
            "shop": QueueStats(depth=2, oldest=NOW + 5, dead=1),
            "umami": QueueStats(depth=0, oldest=None, dead=1),
        }

    runner.run(body())


def test_a_redriven_delivery_waits_from_its_redrive_not_from_its_creation(
    store: Store, runner: asyncio.Runner
) -> None:
    """Redriving week-old dead deliveries after a fix is routine: the oldest pending age
    (/metrics, the alert the README suggests) counts from the redrive, as max_age does."""

    async def body() -> None:
        await store.ingest(ingest_of("evt_old", ["dub"]), NOW)
        dead = await settle(store, "dub", Status.DEAD)
        week = NOW + 7 * 86400
        assert await store.redrive([dead.id], week) == [dead.id]
        assert await store.queue() == {"dub": QueueStats(depth=1, oldest=week, dead=0)}

    runner.run(body())


def test_next_due(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        assert await store.next_due(DUE) is None
        await store.ingest(ingest_of("evt_1", ["dub"]), NOW + 5)
        await store.ingest(ingest_of("evt_2", ["shop"]), NOW + 7)
        assert await store.next_due(DUE) == NOW + 5
        assert await store.next_due(["shop"]) == NOW + 7  # only the destinations named
        assert await store.next_due(["voucherify"]) is None
        assert await store.next_due([]) is None

        dub = await claim_one(store, "dub", NOW + 5)
        assert await store.next_due(DUE) == NOW + 7  # shop pending; dub's lease ends later
        shop = await claim_one(store, "shop", NOW + 7)
        assert await store.next_due(DUE) == NOW + 5 + LEASE  # the first lease to run out

        fin = Finish(dub.id, "w1", Status.PENDING, NOW + 500, attempt(dub.id, "retry", 503))
        assert await store.finish(fin, NOW + 8)
        assert await store.next_due(DUE) == NOW + 7 + LEASE
        fin = Finish(shop.id, "w1", Status.DELIVERED, NOW + 9, attempt(shop.id))
        assert await store.finish(fin, NOW + 9)
        assert await store.next_due(DUE) == NOW + 500
        fin = Finish(dub.id, "w1", Status.DEAD, NOW + 9, None)
        assert await store.finish(fin, NOW + 9) is False  # not claimed
        await claim_one(store, "dub", NOW + 500)
        fin = Finish(dub.id, "w1", Status.DEAD, NOW + 501, attempt(dub.id))
        assert await store.finish(fin, NOW + 501)
        assert await store.next_due(DUE) is None

    runner.run(body())


def test_prune_removes_old_finished_events_only(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        old, new = NOW, NOW + 1000
        customer = Customer("cus_1")
        await store.ingest(
            ingest_of(
                "old_ok", ["dub", "shop"], remember=["ch_1"], purchase=Purchase("pi_1", customer)
            ),
            old,
        )
        await store.ingest(ingest_of("old_dry", ["umami"]), old)
        await store.ingest(ingest_of("old_dead", ["voucherify", "extra"]), old)
        await store.ingest(ingest_of("old_pending", ["late"]), old)
        await store.ingest(ingest_of("old_nothing", []), old)
        await store.ingest(
            ingest_of("new_ok", ["fresh"], remember=["ch_2"], purchase=Purchase("pi_2", customer)),
            new,
        )
        gone = await settle(store, "dub", Status.DELIVERED, old)
        await settle(store, "shop", Status.SKIPPED, old)
        await settle(store, "umami", Status.DRY_RUN, old)
        await settle(store, "voucherify", Status.DEAD, old)
        await settle(store, "extra", Status.DELIVERED, old)
        await settle(store, "fresh", Status.DELIVERED, new)

        cutoff = NOW + 500
        assert await store.prune(cutoff, cutoff) == 3
        left = {(d.event_id, d.destination) for d in await store.deliveries()}
        assert left == {
            ("old_dead", "voucherify"),
            ("old_dead", "extra"),
            ("old_pending", "late"),
            ("new_ok", "fresh"),
        }
        assert await store.counts() == {"dead": 1, "delivered": 2, "pending": 1}
        assert await store.get(gone.id) is None
        # refs older than their cutoff are forgotten, newer ones kept
        assert await store.purchase("stripe", ["ch_1"]) is None
        assert await store.purchase("stripe", ["ch_2"]) == Purchase("pi_2", customer)
        assert await store.prune(cutoff, cutoff) == 0

    runner.run(body())


# --- group commit -----------------------------------------------------------------------------


def test_concurrent_ingests_all_commit(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        items = [ingest_of(f"evt_{i:03}", ["dub"]) for i in range(200)]
        results = await asyncio.gather(*(store.ingest(item, NOW) for item in items))
        assert results == [True] * 200
        rows = await store.deliveries(limit=1000)
        assert sorted(d.event_id for d in rows) == [f"evt_{i:03}" for i in range(200)]
        assert await store.counts() == {"pending": 200}

    runner.run(body())


def test_duplicate_ingests_in_one_batch_store_one(store: Store, runner: asyncio.Runner) -> None:
    async def body() -> None:
        items = [ingest_of(f"evt_{i}", ["dub"]) for i in range(20)]
        items.insert(7, ingest_of("evt_3", ["dub", "shop"]))
        results = await asyncio.gather(*(store.ingest(item, NOW) for item in items))
        assert results.count(False) == 1
        assert results.count(True) == 20
        rows = await store.deliveries(limit=1000)
        assert sorted(d.event_id for d in rows if d.destination == "dub") == sorted(
            f"evt_{i}" for i in range(20)
        )
        # exactly one plan of evt_3 was stored, whole
        evt_3 = sorted(d.destination for d in rows if d.event_id == "evt_3")
        assert evt_3 in (["dub"], ["dub", "shop"])

    runner.run(body())


def test_hundreds_of_events_in_one_commit_are_each_stored_whole(
    store: Store, runner: asyncio.Runner
) -> None:
    """More events, deliveries and remembered refs than one multi-row statement takes."""

    async def body() -> None:
        customer = Customer("cus_1", "user_1", None, None)
        items = [
            ingest_of(
                f"evt_{i:03}",
                ["dub", "shop", "umami"],
                remember=[f"in_{i}", f"ch_{i}"],
                purchase=Purchase(f"in_{i}", customer),
            )
            for i in range(300)
        ]
        items.insert(150, ingest_of("evt_007", ["dub"]))  # a duplicate among them
        results = await asyncio.gather(*(store.ingest(item, NOW) for item in items))
        assert results == [True] * 150 + [False] + [True] * 150
        assert await store.counts() == {"pending": 900}
        rows = await store.deliveries(destination="umami", limit=1000)
        assert sorted(d.event_id for d in rows) == [f"evt_{i:03}" for i in range(300)]
        assert {d.order_key for d in rows} == {f"txn_evt_{i:03}" for i in range(300)}
        for i in (0, 255, 256, 299):
            found = await store.purchase("stripe", [f"ch_{i}"])
            assert found == Purchase(f"in_{i}", customer)

    runner.run(body())


def test_a_failing_ingest_in_a_batch_leaves_no_trace_and_spares_the_others(
    store: Store, runner: asyncio.Runner
) -> None:
    async def body() -> None:
        # two deliveries of one event to the same destination can't be stored
        broken = ingest_of("evt_bad", ["dub", "dub"])
        items = [ingest_of(f"evt_{i}", ["dub"]) for i in range(10)]
        items.insert(5, broken)
        results = await asyncio.gather(
            *(store.ingest(item, NOW) for item in items), return_exceptions=True
        )
        assert isinstance(results[5], Exception), results[5]
        assert results[:5] + results[6:] == [True] * 10
        rows = await store.deliveries(limit=1000)
        assert sorted(d.event_id for d in rows) == sorted(f"evt_{i}" for i in range(10))
        # the event itself was not kept: a correct retry is stored
        assert await store.ingest(ingest_of("evt_bad", ["dub"]), NOW + 1) is True

    runner.run(body())


def test_of_two_events_in_one_commit_remembering_one_ref_the_later_wins(
    store: Store, runner: asyncio.Runner
) -> None:
    """As if they had come one after the other; a duplicate's refs are not written."""

    async def body() -> None:
        customer = Customer("cus_1", None, None, None)
        first = Purchase("in_old", customer)
        assert await store.ingest(ingest_of("evt_0", remember=["ch_dup"], purchase=first), NOW)
        items = [
            ingest_of("evt_1", remember=["ch_1"], purchase=Purchase("in_1", customer)),
            ingest_of("evt_2", remember=["ch_1"], purchase=Purchase("in_2", customer)),
            # evt_0 again (a duplicate), claiming a ref that a new event of the batch also names
            ingest_of("evt_0", remember=["ch_2"], purchase=Purchase("in_dup", customer)),
            ingest_of("evt_3", remember=["ch_2"], purchase=Purchase("in_3", customer)),
        ]
        results = await asyncio.gather(*(store.ingest(item, NOW) for item in items))
        assert results == [True, True, False, True]
        assert await store.purchase("stripe", ["ch_1"]) == Purchase("in_2", customer)
        assert await store.purchase("stripe", ["ch_2"]) == Purchase("in_3", customer)
        assert await store.purchase("stripe", ["ch_dup"]) == first

    runner.run(body())


# --- PostgreSQL specifics ---------------------------------------------------------------------


@pytest.fixture
def pg_store(pg_url: str, runner: asyncio.Runner) -> Iterator[Store]:
    from bridge.store.postgres import PostgresStore

    backend = PostgresStore(pg_url)
    runner.run(backend.open())
    try:
        yield backend
    finally:
        runner.run(backend.close())


def _pg_rows(url: str, sql: str) -> list[tuple[int, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_postgres_concurrent_ingests_share_one_transaction(
    pg_store: Store, pg_url: str, runner: asyncio.Runner
) -> None:
    """Group commit on PostgreSQL too: concurrent webhooks' events and their deliveries are
    written by one transaction (rows a transaction writes share its xmin)."""
    items = [ingest_of(f"evt_{i}", ["dub", "shop"]) for i in range(50)]

    async def body() -> list[bool]:
        return await asyncio.gather(*(pg_store.ingest(item, NOW) for item in items))

    assert runner.run(body()) == [True] * 50
    [(events, transactions)] = _pg_rows(
        pg_url, "SELECT count(*), count(DISTINCT xmin::text) FROM events"
    )
    assert events == 50
    assert transactions <= 2, transactions  # the first alone, then the other 49 together
    [(apart,)] = _pg_rows(
        pg_url,
        "SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_pk "
        "WHERE d.xmin::text <> e.xmin::text",
    )
    assert apart == 0


def test_postgres_concurrent_finishes_share_one_transaction(
    pg_store: Store, pg_url: str, runner: asyncio.Runner
) -> None:
    async def body() -> list[bool]:
        for i in range(30):
            await pg_store.ingest(ingest_of(f"evt_{i}"), NOW)
        claimed = await pg_store.claim("dub", 30, NOW, LEASE, "w1")
        finishes = [Finish(d.id, "w1", Status.DELIVERED, NOW, attempt(d.id)) for d in claimed]
        return await asyncio.gather(*(pg_store.finish(x, NOW) for x in finishes))

    assert runner.run(body()) == [True] * 30
    [(attempts, transactions)] = _pg_rows(
        pg_url, "SELECT count(*), count(DISTINCT xmin::text) FROM attempts"
    )
    assert attempts == 30
    assert transactions <= 2, transactions


def test_postgres_a_group_commit_wakes_the_listeners(pg_url: str, runner: asyncio.Runner) -> None:
    from bridge.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    woken = asyncio.Event()

    async def body() -> None:
        store.subscribe(woken.set)
        await store.open()
        try:
            await asyncio.wait_for(woken.wait(), 10)  # LISTENing (it catches up once)
            woken.clear()
            items = [ingest_of(f"evt_{i}", ["dub"]) for i in range(5)]
            assert await asyncio.gather(*(store.ingest(i, NOW) for i in items)) == [True] * 5
            await asyncio.wait_for(woken.wait(), 10)
        finally:
            await store.close()

    runner.run(body())


# --- SQLite specifics -------------------------------------------------------------------------


def test_sqlite_writes_a_commit_in_order_and_a_refund_finds_a_sale_of_the_same_commit(
    tmp_path: Path, runner: asyncio.Runner
) -> None:
    """One commit: new events are written first, in arrival order (so a refund keyed like its
    sale queues behind it), then the events that look something up (a refund naming only a
    charge finds the sale remembered in the same commit, even one that arrived after it)."""
    store = _sqlite(tmp_path)

    async def body() -> None:
        await store.open()
        try:
            sale = ingest_of(
                "evt_sale",
                ["shop"],
                "in_1",
                remember=["in_1", "ch_1"],
                purchase=Purchase("in_1", Customer("cus_1", None, None, None)),
            )
            refund = ingest_of("evt_refund", ["shop"], "in_1", type_="charge.refunded")
            orphan = ingest_of("evt_orphan", ["shop"], "", link_refs=["re_1", "ch_1"])
            results = await asyncio.gather(*(store.ingest(i, NOW) for i in (orphan, sale, refund)))
            assert results == [True, True, True]
            assert (await by_event(store, "evt_orphan")).order_key == "in_1"
            claimed = await store.claim("shop", 10, NOW, LEASE, "w1")
            assert [d.event_id for d in claimed] == ["evt_sale"]
        finally:
            await store.close()

    runner.run(body())


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    conn.close()

    async def body() -> None:
        store = SQLiteStore(f"sqlite:///{path}")
        with pytest.raises(StoreUnavailable, match=r"schema is version 999.*upgrade the bridge"):
            await store.open()
        with pytest.raises(StoreUnavailable):
            await store.ping()

    asyncio.run(body())


def test_sqlite_refuses_a_newer_schema_before_touching_it(tmp_path: Path) -> None:
    """A newer bridge may have reshaped the tables: the version check must come first."""
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
        conn.execute("CREATE TABLE deliveries (id INTEGER PRIMARY KEY, target TEXT NOT NULL)")
    conn.close()

    def tables() -> list[str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
        conn.close()
        return [row[0] for row in rows]

    before = tables()

    async def body() -> None:
        store = SQLiteStore(f"sqlite:///{path}")
        with pytest.raises(StoreUnavailable, match=r"schema is version 999.*upgrade the bridge"):
            await store.open()

    asyncio.run(body())
    assert tables() == before


def test_sqlite_reads_for_people_and_scrapers_do_not_wait_for_a_writer(
    tmp_path: Path, runner: asyncio.Runner
) -> None:
    """/metrics' queue and the admin API's lists and counts read on a connection of their own:
    while another process holds the database's write lock (a CLI redrive, say), they answer
    at once instead of queueing behind the lock in a write batch; the writes still wait."""
    store = _sqlite(tmp_path)

    async def body() -> None:
        await store.open()
        try:
            await store.ingest(ingest_of("evt_1", ["dub", "shop"]), NOW)
            other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # the write lock, held
            try:
                queue, counts, listed, events = await asyncio.wait_for(
                    asyncio.gather(
                        store.queue(), store.counts(), store.deliveries(), store.events()
                    ),
                    timeout=2,
                )
                assert queue["dub"].depth == 1 and queue["shop"].depth == 1
                assert counts == {"pending": 2}
                assert sorted(d.destination for d in listed) == ["dub", "shop"]
                assert [e.event_id for e in events] == ["evt_1"]
                found = await asyncio.wait_for(store.get(listed[0].id), timeout=2)
                assert found is not None and found[0].id == listed[0].id
                write = asyncio.ensure_future(store.ingest(ingest_of("evt_2"), NOW))
                await asyncio.sleep(0.3)
                assert not write.done()  # a write waits for the lock, as before
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert await asyncio.wait_for(write, timeout=10) is True
        finally:
            await store.close()

    runner.run(body())


def test_sqlite_stores_webhooks_between_the_parts_of_a_large_redrive(
    tmp_path: Path, runner: asyncio.Runner
) -> None:
    """A redrive of many deliveries (an admin's, after an outage) does not hold every webhook
    that comes meanwhile until all of it is done."""
    store = _sqlite(tmp_path)

    async def body() -> None:
        await store.open()
        try:
            redriving = asyncio.ensure_future(store.redrive(list(range(1, 20_001)), NOW))
            await asyncio.sleep(0)  # its first part is asked for
            assert await store.ingest(ingest_of("evt_during"), NOW)
            assert not redriving.done()
            assert await redriving == []  # none of those ids is dead
        finally:
            await store.close()

    runner.run(body())


def test_sqlite_makes_the_folder_of_its_file(tmp_path: Path, runner: asyncio.Runner) -> None:
    # a table's sqlite:///data/bridge.db on a fresh checkout: serve would fail otherwise
    store = SQLiteStore(f"sqlite:///{tmp_path}/data/nested/bridge.db")

    async def body() -> None:
        await store.open()
        try:
            assert await store.ingest(ingest_of("evt_1"), NOW)
        finally:
            await store.close()

    runner.run(body())
    assert (tmp_path / "data" / "nested" / "bridge.db").is_file()
