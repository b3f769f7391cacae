"""The delivery worker: claim due deliveries, send, classify, retry, dead-letter.

It runs in the bridge's own process beside the web app, never inside a
request. Per destination it keeps a concurrency cap and a requests-per-minute
budget, so a slow or failing destination never holds up the others. It claims
a little ahead: besides the deliveries it is sending, up to ``concurrency``
more wait in memory for a free slot, so that a slot freed by an answer starts
the next delivery at once instead of after a claim's commit. One that waited
so long that its send could outlast its lease is let go (its lease runs out and
it is claimed again), never sent late.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from bridge import mapping, metrics
from bridge.config import LEASE_MARGIN
from bridge.destinations.base import Outcome, Skipped
from bridge.destinations.common import text as answer_text
from bridge.logging import mask, mask_cut
from bridge.model import Attempt, Delivery, Status
from bridge.pipeline import Pipeline, purchase_refs
from bridge.ratelimit import RateLimit
from bridge.retry import RetryPolicy
from bridge.store.base import Finish, Store, StoreUnavailable
from bridge.transport import Http1Transport

log = structlog.get_logger("bridge.worker")

Clock = Callable[[], float]
# While a burst of webhooks is being received, the worker yields to it: a round at most every
# BUSY_ROUND seconds, and each such round starts at most 1/BUSY_SHARES of a destination's
# concurrency (at least one). A round's deliveries take CPU from the burst: full rounds every
# 0.25 s acknowledged 7-10 % fewer webhooks a second than full rounds every second; and a full
# round's sends, all at once, held up every webhook in flight meanwhile (with no rounds at all
# during the burst, the ack p90 and p99 under wrk were about 15 % lower). Eighth-rounds every
# eighth of a second send as many deliveries a second as that full round a second, spread
# out; and however long a burst lasts, deliveries still go out.
BUSY_ROUND = 0.125
BUSY_SHARES = 8
DEFER_STEP = 0.002


def default_worker_id(port: int | None = None) -> str:
    """A stable name per replica: BRIDGE_WORKER_ID, else the host name (a container's id) and
    the port it listens on, so that two bridges on one host never take back each other's
    claims while a restarted one takes back its own."""
    named = os.environ.get("BRIDGE_WORKER_ID")
    if named:
        return named
    host = socket.gethostname()
    return host if port is None else f"{host}:{port}"


ANSWER_LIMIT = 64 * 1024  # what is read of a destination's answer: enough to classify it


async def _exchange(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    """Send through the destination's transport (httpx's seam: no cookie jar, no redirects, no
    auth flow, nothing a webhook relay wants), and read at most ANSWER_LIMIT of the answer (a
    huge answer never fills memory)."""
    response = await transport.handle_async_request(request)
    response.request = request
    if response.is_stream_consumed:  # read by the transport (Http1Transport, a mock's)
        if len(response.content) <= ANSWER_LIMIT:
            return response
        body = bytearray(response.content[:ANSWER_LIMIT])
    else:
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= ANSWER_LIMIT:
                    break
        finally:
            await response.aclose()
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        content=bytes(body[:ANSWER_LIMIT]),
        request=request,
        extensions={"http_version": response.extensions.get("http_version", b"HTTP/1.1")},
    )


def _transport(concurrency: int, http2: bool) -> httpx.AsyncBaseTransport:
    """One connection pool per destination, as many connections as its concurrency."""
    if http2:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncHTTPTransport(http2=True, limits=limits)
    return Http1Transport(concurrency, answer_limit=ANSWER_LIMIT)


def _gave_up(delivery: Delivery, reason: str | None) -> str:
    return f"gave up after {delivery.attempts + 1} attempts: {reason}"


class Worker:
    def __init__(
        self,
        pipeline: Pipeline,
        store: Store,
        *,
        clock: Clock = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        worker_id: str | None = None,
        busy: Callable[[], bool] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.clock = clock
        # claims carry NAME/BOOT: this process's own token, so that a restarted replica can
        # take back what its previous incarnation held (release NAME) without ever touching
        # another live replica's claims
        self.worker_name = worker_id or default_worker_id()
        self.worker_id = f"{self.worker_name}/{uuid.uuid4().hex[:12]}"
        self.settings = pipeline.config.delivery
        # while a burst of webhooks is being received (``busy``) the worker yields to it (a
        # share of a round every BUSY_ROUND), so that the burst is acknowledged first and the
        # backlog drains after it
        self._busy = busy
        # the process is stopping (its server's first SIGTERM): no new claim from then on,
        # though the lifespan's stop, which lets in-flight sends finish, may come seconds later
        self._stop_asked = stopping
        self.wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: dict[str, int] = {}
        self._limits: dict[str, RateLimit] = {}
        self._policies: dict[str, RetryPolicy] = {}
        self._transports: dict[str, httpx.AsyncBaseTransport] = {}
        self._timeouts: dict[str, dict[str, float | None]] = {}
        self._sending: set[int] = set()  # delivery ids this process is sending or holds queued
        self._holding: set[int] = set()  # ... of which these are started and hold a slot
        # per destination, claimed deliveries waiting for a slot, with when each was claimed
        self._queued: dict[str, collections.deque[tuple[Delivery, float]]] = {}
        self._claiming: list[set[int]] = []  # each claim on its way: what finished meanwhile
        self._round_at = 0.0  # the clock at the last round's claims
        for name, cfg in pipeline.config.destinations.items():
            self._inflight[name] = 0
            self._queued[name] = collections.deque()
            self._limits[name] = RateLimit(cfg.rate_limit)
            self._policies[name] = RetryPolicy(**cfg.retry.model_dump())
            if not cfg.dry_run:
                self._transports[name] = transport or _transport(cfg.concurrency, cfg.http2)
                self._timeouts[name] = httpx.Timeout(cfg.timeout).as_dict()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and send until ``stop``; wake on new work, else poll; prune now and then."""
        next_prune = self.clock()
        deferred_since: float | None = None
        while not self._halted():
            busy = self._bursting()
            if busy:
                now = time.monotonic()
                deferred_since = deferred_since or now
                if now - deferred_since < BUSY_ROUND:
                    await asyncio.sleep(DEFER_STEP)
                    continue
            deferred_since = None
            self.wake.clear()
            if self.clock() >= next_prune:
                next_prune = self.clock() + self.pipeline.config.retention.interval
                await self.prune()
            try:
                started = await self.tick(busy=busy)
            except StoreUnavailable as exc:
                log.warning("store unavailable; the worker will try again", error=str(exc))
                started = 0
            except Exception:  # the worker must outlive any one bad round
                log.exception("worker round failed; it will try again")
                started = 0
            if started:
                continue
            timeout = self.settings.poll_interval
            try:
                due = await self.store.next_due(list(self.pipeline.config.destinations))
            except StoreUnavailable:
                due = None
            except Exception:  # as a round's: the worker polls instead
                log.exception("could not ask when the next delivery is due; will poll")
                due = None
            # due by the last round and not claimed (out of budget, or behind an earlier delivery
            # of the same order) is no reason to come back at once: the budget's next free time is
            if due is not None and due > self._round_at:
                timeout = min(timeout, max(0.0, due - self.clock()))
            now = self.clock()
            for limit in self._limits.values():
                free_at = limit.next_free(now)
                if free_at > now:
                    timeout = min(timeout, free_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(timeout, 0.005))

    async def tick(self, busy: bool = False) -> int:
        """One round: for each destination, start what waits for a slot, then claim what may
        start now and as many more to wait (at most ``concurrency`` waiting, and never more
        than the budget allows now) and start what it can. The claims go to the store
        together, so that they share one commit. How many deliveries it started or queued.

        A ``busy`` round (a burst of webhooks is being received) fills only 1/BUSY_SHARES of
        each destination's slots, and claims for a destination only once none of its claimed
        deliveries is left waiting."""
        if self._halted():
            return 0
        started = sum(self._start_queued(name, busy) for name in self._queued)
        now = self._round_at = self.clock()
        wanted: list[tuple[str, int]] = []
        for name, cfg in self.pipeline.config.destinations.items():
            queued = len(self._queued[name])
            if busy and queued:
                continue
            room = 2 * cfg.concurrency - self._inflight[name] - queued
            free = min(room, self._limits[name].available(now) - queued)
            if free > 0:
                wanted.append((name, min(free, self.settings.batch)))
        if not wanted:
            return started
        # the deliveries this process finishes while its claims are on their way: a claim may
        # have taken one back (its lease ran out while it was being sent) just before its
        # finish was written, and it must not be sent again
        finished: set[int] = set()
        self._claiming.append(finished)
        try:
            results = await asyncio.gather(
                *(
                    self.store.claim(name, limit, now, self.settings.lease, self.worker_id)
                    for name, limit in wanted
                ),
                return_exceptions=True,
            )
        finally:
            self._claiming.remove(finished)
        failure: BaseException | None = None
        for (name, _limit), claimed in zip(wanted, results, strict=True):
            if isinstance(claimed, BaseException):
                failure = failure or claimed
                continue
            for delivery in claimed:
                if delivery.id in self._sending or delivery.id in finished:
                    continue  # its lease ran out while this process was sending it
                self._sending.add(delivery.id)
                self._queued[name].append((delivery, now))
                started += 1
            self._start_queued(name, busy)
        if failure is not None:  # what the other claims took has been started all the same
            raise failure
        return started

    async def prune(self) -> int:
        """Forget events delivered long ago (dead ones stay) and purchases no refund will name."""
        retention = self.pipeline.config.retention
        now = self.clock()
        try:
            pruned = await self.store.prune(now - retention.events, now - retention.purchases)
        except StoreUnavailable as exc:
            log.warning("pruning failed; will try again", error=str(exc))
            return 0
        except Exception:  # the worker must outlive it, as it outlives a bad round
            log.exception("pruning failed; will try again")
            return 0
        if pruned:
            log.info("pruned old events", count=pruned)
        return pruned

    def _start_queued(self, name: str, busy: bool = False) -> int:
        """Start the destination's waiting deliveries while it has free slots and budget (a
        ``busy`` round: a share of its slots); let go of any whose send could end after its
        lease. How many it started."""
        queue = self._queued[name]
        cfg = self.pipeline.config.destinations[name]
        limit = self._limits[name]
        lease = self.settings.lease
        slots = max(1, cfg.concurrency // BUSY_SHARES) if busy else cfg.concurrency
        started = 0
        while queue and not self._halted() and self._inflight[name] < slots:
            now = self.clock()
            delivery, claimed_at = queue[0]
            if claimed_at + lease - now < cfg.timeout + LEASE_MARGIN:
                queue.popleft()  # due again when its lease runs out, then claimed anew
                self._sending.discard(delivery.id)
                continue
            if limit.available(now) <= 0:
                break
            queue.popleft()
            self._holding.add(delivery.id)
            limit.take(now)
            self._inflight[name] += 1
            task = asyncio.create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._done)
            started += 1
        return started

    def _bursting(self) -> bool:
        """Whether a burst of webhooks is being received now (the worker then yields to it)."""
        return self._busy is not None and self._busy()

    def _release_slot(self, delivery: Delivery) -> None:
        """The destination is done with this request: its concurrency slot is free again, and
        the next waiting delivery takes it at once (the delivery stays this process's own until
        its outcome is recorded)."""
        if delivery.id in self._holding:
            self._holding.discard(delivery.id)
            self._inflight[delivery.destination] -= 1
            # the next, unless a burst of webhooks is being received: it waits for the round
            if not self._bursting():
                self._start_queued(delivery.destination)
            self.wake.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.wake.set()

    async def drain(self) -> None:
        """Run rounds until nothing is due at the clock's now (for tests and `bridge` one-shots)."""
        while True:
            started = await self.tick()
            if self._tasks:
                await asyncio.gather(*list(self._tasks))
                continue
            if not started:
                return

    def _halted(self) -> bool:
        return self._stopping or self._stop_asked()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let in-flight sends finish within ``grace``; release the rest."""
        self._stopping = True
        self.wake.set()
        for queue in self._queued.values():  # never started: released with the rest below
            for delivery, _claimed_at in queue:
                self._sending.discard(delivery.id)
            queue.clear()
        grace = self.settings.shutdown_grace if grace is None else grace
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(StoreUnavailable):
            released = await self.store.release(self.worker_id, self.clock())
            if released:
                log.info("released unfinished deliveries", count=released)
        for transport in {id(t): t for t in self._transports.values()}.values():
            await transport.aclose()

    # --- one delivery -----------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery) -> None:
        bound = log.bind(
            source=delivery.source,
            event_id=delivery.event_id,
            delivery_id=delivery.id,
            destination=delivery.destination,
            attempt=delivery.attempts + 1,
        )
        try:
            await self._attempt(delivery, bound)
        except StoreUnavailable as exc:
            bound.warning(
                "could not record the attempt; the lease will make it due again", error=str(exc)
            )
        except Exception:  # a bug must not leave the delivery claimed for ever: retry it later
            bound.exception("delivery failed unexpectedly")
            with contextlib.suppress(Exception):
                await self._failed_unexpectedly(delivery, bound)
        finally:
            self._release_slot(delivery)
            self._sending.discard(delivery.id)
            for finished in self._claiming:
                finished.add(delivery.id)

    async def _failed_unexpectedly(self, delivery: Delivery, bound: Any) -> None:
        """Retried as the destination's policy says, never sooner than ten polls, and dead once
        the policy gives up: an error that comes back every time (after the request was sent,
        perhaps) must not send the same delivery again and again for ever."""
        now = self.clock()
        error = "internal error (see the bridge's log)"
        retry_at = self._retry_at(delivery, None, soonest=self.settings.poll_interval * 10)
        if retry_at is None:
            error = _gave_up(delivery, error)
            await self._finish(delivery, Status.DEAD, now, "dead", error, bound, next_at=now)
        else:
            await self._finish(
                delivery, Status.PENDING, now, "retry", error, bound, next_at=retry_at
            )

    def _policy(self, destination: str) -> RetryPolicy:
        """The destination's retry policy (the default for one no longer in the table)."""
        return self._policies.get(destination) or RetryPolicy()

    def _retry_at(
        self, delivery: Delivery, retry_after: float | None, soonest: float | None = None
    ) -> float | None:
        """When to try ``delivery`` again, on its destination's policy (at least ``soonest``
        seconds from now); None when the policy gives up."""
        now = self.clock()
        policy = self._policy(delivery.destination)
        wait = policy.next_wait(delivery.attempts + 1, now - delivery.window_at, retry_after)
        if wait is None:
            return None
        return now + (wait if soonest is None else max(wait, soonest))

    async def _request(
        self, delivery: Delivery, bound: Any, started: float
    ) -> httpx.Request | None:
        """The delivery's request, built from its stored event with the table as it is now;
        None when there is none to send (the delivery is then finished: dead or skipped)."""
        config = self.pipeline.config
        event = self.pipeline.stored_event(
            delivery.source, delivery.event_id, delivery.event_type, delivery.body
        )
        route = self.pipeline.route_for(event, delivery.destination, delivery.route)
        if (
            delivery.destination not in config.destinations
            or route is None
            or delivery.source not in self.pipeline.sources
        ):
            reason = (
                f"no route in {config.file} sends {delivery.source}/{delivery.event_type} "
                f"to {delivery.destination} any more"
            )
            await self._finish(delivery, Status.DEAD, started, "dead", reason, bound)
            return None
        try:
            purchase = None
            # the route's when, as the table says now (it may have been fixed since ingest)
            if not self.pipeline.holds(route, event):
                raise Skipped(f"{route.name}: its when does not hold for this event")
            # a copy: linking a refund rewrites its id and customer
            txn = dataclasses.replace(self.pipeline.stored_transaction(route, event))
            if delivery.refund_baseline:
                # a cumulative refund: only what was refunded since the last one is new
                txn.amount -= delivery.refund_baseline
                # its tax, discount and shipping are the order's totals so far too (Polar's
                # refunded_tax_amount): what part of them is this refund's is not known, and a
                # total would overstate it, so they are left out
                txn.tax = txn.discount = txn.shipping = None
                if txn.amount <= 0:
                    raise Skipped(
                        "refund already counted: the order's refunded total did not grow "
                        f"past the {delivery.refund_baseline} already sent"
                    )
            if txn.kind == "refund":
                purchase = await self.store.purchase(delivery.source, purchase_refs(txn))
            return self.pipeline.request(txn, event, delivery.destination, purchase, bound)
        except mapping.MappingError as exc:
            await self._finish(delivery, Status.DEAD, started, "mapping_error", str(exc), bound)
            return None
        except Skipped as exc:
            await self._finish(delivery, Status.SKIPPED, started, "skipped", str(exc), bound)
            return None

    async def _attempt(self, delivery: Delivery, bound: Any) -> None:
        config = self.pipeline.config
        started = self.clock()
        destination_cfg = config.destinations.get(delivery.destination)
        if delivery.prepared is not None and destination_cfg is not None:
            # built by the store as it claimed the delivery, from the same table
            request = self.pipeline.destinations[delivery.destination].sending(delivery.prepared)
        else:
            built = await self._request(delivery, bound, started)
            if built is None or destination_cfg is None:  # _request finished it: dead, skipped
                return
            request = built

        if destination_cfg.dry_run:
            secrets = config.secrets()
            bound.info(
                "dry-run: not sent",
                method=request.method,
                url=str(request.url),
                headers={k: mask(v, secrets) for k, v in request.headers.items()},
                json=json.loads(request.content),
            )
            await self._finish(delivery, Status.DRY_RUN, started, "dry_run", None, bound)
            return

        transport = self._transports[delivery.destination]
        destination = self.pipeline.destinations[delivery.destination]
        response: httpx.Response | None = None
        timeout = destination_cfg.timeout
        request.extensions["timeout"] = self._timeouts[delivery.destination]
        failed: Outcome | None = None
        sent = time.perf_counter()
        try:
            # the timeout extension covers each phase; this bounds the whole exchange (a
            # timeout scope, not wait_for: no task of its own for every request)
            async with asyncio.timeout(timeout + 1):
                response = await _exchange(transport, request)
        except (httpx.TimeoutException, TimeoutError) as exc:
            failed = Outcome("retry", f"timeout: {type(exc).__name__}")
        except (httpx.HTTPError, OSError) as exc:
            failed = Outcome("retry", f"connection error: {type(exc).__name__}: {exc}"[:300])
        took = time.perf_counter() - sent  # the exchange alone, not the reading of its answer
        self._release_slot(delivery)
        if failed is not None:
            outcome = failed
        else:
            assert response is not None
            outcome = destination.classify(response, self.clock())

        status_code = response.status_code if response is not None else None
        excerpt = answer_text(response) if response is not None else None
        if outcome.verdict == "delivered":
            status, error = Status.DELIVERED, None
        elif outcome.verdict == "not_recorded":
            status, error = Status.NOT_RECORDED, outcome.reason
        elif outcome.verdict == "dead":
            status, error = Status.DEAD, outcome.reason
        else:
            status, error = Status.PENDING, outcome.reason
        next_at = self.clock()
        if status is Status.PENDING:
            retry_at = self._retry_at(delivery, outcome.retry_after)
            if retry_at is None:
                status, error = Status.DEAD, _gave_up(delivery, outcome.reason)
            else:
                next_at = retry_at
        if status_code == 429:
            # too many requests: the destination gets none from this process until the time it
            # names (else the policy's first wait), not this delivery alone; at most max_interval
            policy = self._policy(delivery.destination)
            wait = policy.initial if outcome.retry_after is None else outcome.retry_after
            self._limits[delivery.destination].hold(self.clock() + min(wait, policy.max_interval))
        await self._finish(
            delivery,
            status,
            started,
            # the attempt that gave up is the delivery's death, whatever its answer's class
            "dead" if status is Status.DEAD else outcome.verdict,
            error,
            bound,
            status_code=status_code,
            excerpt=excerpt,
            next_at=next_at,
            took=took,
        )

    async def _finish(
        self,
        delivery: Delivery,
        status: Status,
        started: float,
        outcome: str,
        error: str | None,
        bound: Any,
        *,
        status_code: int | None = None,
        excerpt: str | None = None,
        next_at: float | None = None,
        took: float | None = None,
    ) -> None:
        """``took``: for an attempt that was sent, how long the exchange took (to the answer,
        the timeout or the connection error), which is its latency; else the time spent."""
        now = self.clock()
        secrets = self.pipeline.config.secrets()
        error = mask_cut(error, secrets) if error else None
        attempt = Attempt(
            delivery_id=delivery.id,
            started_at=started,
            latency_ms=round((now - started if took is None else took) * 1000, 3),
            outcome=outcome,
            status_code=status_code,
            error=error,
            response_excerpt=mask_cut(excerpt, secrets) if excerpt else None,
        )
        finish = Finish(delivery.id, self.worker_id, status, next_at or now, attempt, error)
        recorded = await self.store.finish(finish, now)
        metrics.DELIVERIES.labels(delivery.destination, outcome).inc()
        if took is not None:
            metrics.ATTEMPT_LATENCY.labels(delivery.destination).observe(took)
        level = "info" if status in (Status.DELIVERED, Status.DRY_RUN) else "warning"
        getattr(bound, level)(
            "delivery " + str(status),
            outcome=outcome,
            status_code=status_code,
            error=error,
            next_at=next_at if status is Status.PENDING else None,
            recorded=recorded,
        )
