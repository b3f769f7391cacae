"""The Starlette app: ``POST /webhooks/{source}``, health, and the worker's lifespan.

A webhook is answered 200 only after its event and deliveries are committed;
503 when the store can't take it (the processor retries); 4xx for what no
retry can fix, with nothing stored. No input makes it answer 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge import admin, metrics
from bridge.config import Config
from bridge.intake import Admits, Inline, Intake, admit
from bridge.pipeline import Pipeline
from bridge.sources.base import SignatureError
from bridge.store import Store, StoreUnavailable, connect
from bridge.store.base import BURST
from bridge.worker import Clock, Worker

log = structlog.get_logger("bridge.app")


class BodyTooLarge(Exception):
    pass


async def read_body(headers: Headers, receive: Receive, limit: int) -> bytes:
    """The raw body, refused while reading as soon as it passes ``limit``; ClientDisconnect if
    the caller is gone before its end."""
    declared = headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


WEBHOOKS = "/webhooks/"


def webhook_source(scope: Scope) -> str | None:
    """The source a request is a webhook for: a POST to ``/webhooks/{source}``."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith(WEBHOOKS):
        return None
    name = path[len(WEBHOOKS) :]
    return name if name and "/" not in name else None


class Bridge(Starlette):
    """The bridge's Starlette app. A webhook, the hot path, goes straight to ``webhook``, not
    through Starlette's middleware, router and Request (together about as much CPU as the
    verify-only app's own code); everything else is Starlette's, and so is a webhook to an app
    mounted under a root path (its route leads to the same handler)."""

    webhook: Callable[[Scope, Receive, Send, str], Awaitable[None]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = webhook_source(scope)
        if source is None:
            await super().__call__(scope, receive, send)
        else:
            await self.webhook(scope, receive, send, source)


# Starlette's JSONResponse's encoding, made once (``json.dumps`` with options makes one a call)
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _answer(code: int, /, **body: Any) -> Response:
    return Response(_encode(body).encode(), status_code=code, media_type="application/json")


# how long /readyz waits for the store: a probe gets its answer (503, and why) rather than its
# own timeout, even while another process holds SQLite's write lock (busy_timeout is 5 s)
READY_WITHIN = 2.0

# how long a webhook waits for the store before it is answered 503 (the processor sends it
# again): a batch waits up to SQLite's busy_timeout (5 s) for another process's write lock,
# and one queued behind two such batches would otherwise wait three times that. A write
# that commits after its 503 is stored all the same; the processor's retry is a duplicate.
STORE_WITHIN = 8.0


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock = time.time,
    transport: httpx.AsyncBaseTransport | None = None,
    run_worker: bool = True,
    worker_name: str | None = None,
) -> Starlette:
    pipe = Pipeline(config)
    the_store = (
        store
        if store is not None
        else connect(config.database_url, config.storage.migrate, config.storage.synchronous)
    )
    state: dict[str, Any] = {"stopping": False, "receiving": 0}
    worker = Worker(
        pipe,
        the_store,
        clock=clock,
        transport=transport,
        worker_id=worker_name,
        busy=lambda: state["receiving"] >= BURST,
        stopping=lambda: state["stopping"],
    )
    the_store.subscribe(worker.wake.set)
    # SQLite's writer process parses and plans each webhook as it stores it; else it is done here
    intake: Intake = (
        the_store.intake(config) if isinstance(the_store, Admits) else Inline(pipe, the_store)
    )

    async def webhook(scope: Scope, receive: Receive, send: Send, name: str) -> None:
        response = await respond(name, Headers(scope=scope), receive, scope["path"])
        await response(scope, receive, send)

    async def routed(request: Request) -> Response:
        """A webhook the fast path leaves to Starlette's router (an app with a root path)."""
        return await respond(
            request.path_params["source"], request.headers, request.receive, request.url.path
        )

    async def respond(name: str, headers: Headers, receive: Receive, path: str) -> Response:
        state["receiving"] += 1
        try:
            return await answer(name, headers, receive, path)
        except Exception:  # a bug, never the input: said as Starlette's own middleware would
            log.exception("webhook failed", source=name[:100])
            return PlainTextResponse("Internal Server Error", status_code=500)
        finally:
            state["receiving"] -= 1

    async def answer(name: str, headers: Headers, receive: Receive, path: str) -> Response:
        source = pipe.sources.get(name)
        if source is None:
            metrics.webhooks("(unknown)", "unknown_source").inc()
            log.info("webhook refused", reason="unknown source", path=path[:100])
            return _answer(404, error="unknown source")
        counted = metrics.webhooks
        if state["stopping"]:
            counted(name, "unavailable").inc()
            return _answer(503, error="shutting down; retry later")
        try:
            body = await read_body(headers, receive, config.server.max_body)
        except BodyTooLarge:
            counted(name, "too_large").inc()
            log.info("webhook refused", source=name, reason="body too large")
            return _answer(413, error=f"body larger than {config.server.max_body} bytes")
        except ClientDisconnect:  # gone before its body was read: no one to answer, one line
            log.info("webhook refused", source=name, reason="disconnected before the body's end")
            return _answer(400, error="the body did not arrive")
        try:
            source.verify(body, headers, clock())
        except SignatureError as exc:
            counted(name, "bad_signature").inc()
            log.info("webhook refused", source=name, reason=str(exc))
            return _answer(400, error=f"signature: {exc}")
        try:
            async with asyncio.timeout(STORE_WITHIN):
                verdict = await intake(name, body, headers.raw, clock())
        except Exception as exc:
            # the store failed: a webhook that needed nothing stored gets its answer all the
            # same; one that did gets a 503, never a 500 (nothing was stored, it comes again)
            verdict, item = admit(pipe, name, body, headers, config.server.max_depth)
            if item is not None:
                counted(name, "unavailable").inc()
                named = log.bind(
                    source=name, event_id=verdict.event_id, event_type=verdict.event_type
                )
                if isinstance(exc, TimeoutError):  # STORE_WITHIN ran out
                    exc = StoreUnavailable(f"no answer within {STORE_WITHIN:g} s")
                if isinstance(exc, StoreUnavailable):
                    named.error("webhook not stored: store unavailable", error=str(exc))
                else:
                    named.error(
                        "webhook not stored: unexpected store error", error=type(exc).__name__
                    )
                return _answer(503, error="storage unavailable; retry later")
        outcome = verdict.outcome
        counted(name, outcome).inc()
        if outcome == "invalid":
            log.info("webhook refused", source=name, reason=verdict.reason)
            return _answer(400, error=verdict.reason)
        bound = log.bind(source=name, event_id=verdict.event_id, event_type=verdict.event_type)
        if outcome == "ignored":
            bound.info("webhook ignored: no route wants this event")
            return _answer(200, status="ignored")
        if outcome == "skipped":
            reasons = list(verdict.skipped)
            bound.info("webhook skipped: nothing to send", reasons=reasons)
            return _answer(200, status="skipped", reasons=reasons)
        if outcome == "duplicate":
            bound.info("webhook duplicate: already stored")
            return _answer(200, status="duplicate")
        bound.info(
            "webhook accepted",
            deliveries=list(verdict.deliveries),
            skipped=list(verdict.skipped) or None,
        )
        return _answer(200, status="accepted", deliveries=len(verdict.deliveries))

    async def not_allowed(request: Request) -> Response:
        log.info("webhook refused", reason="method not allowed", method=request.method[:16])
        return _answer(405, error="use POST")

    async def not_allowed_anywhere(request: Request, exc: Exception) -> Response:
        return await not_allowed(request)

    async def not_found(request: Request, exc: Exception) -> Response:
        log.info(
            "request refused",
            reason="no such path",
            method=request.method[:16],
            path=request.url.path[:100],
        )
        return _answer(404, error="not found")

    async def metrics_endpoint(request: Request) -> Response:
        try:
            queue = await the_store.queue()
        except StoreUnavailable:
            pass  # the gauges keep what the store last said (zeros would clear every alert)
        else:
            metrics.set_queue(
                {name: (q.depth, q.oldest) for name, q in queue.items()},
                {name: q.dead for name, q in queue.items()},
                list(config.destinations),
            )
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return _answer(200, status="ok")

    async def readyz(request: Request) -> Response:
        if state["stopping"]:
            return _answer(503, status="stopping")
        task = state.get("worker_task")
        if run_worker and (task is None or task.done()):
            return _answer(503, status="worker not running")
        try:
            async with asyncio.timeout(READY_WITHIN):
                await the_store.ping()
        except StoreUnavailable:
            return _answer(503, status="storage unavailable")
        except TimeoutError:  # a write lock held elsewhere, a database that does not answer
            return _answer(503, status=f"storage did not answer within {READY_WITHIN:g} s")
        return _answer(200, status="ready")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await the_store.open()
        try:
            released = await the_store.release(worker.worker_name, clock())
        except StoreUnavailable as exc:
            log.warning("could not take back unfinished claims; their leases will", error=str(exc))
        else:
            if released:
                log.info("took back this bridge's unfinished claims", count=released)
        task = None
        if run_worker:
            task = asyncio.create_task(worker.run())
            state["worker_task"] = task
        log.info(
            "bridge started",
            config=config.file,
            sources=list(config.sources),
            destinations={
                n: ("dry-run" if d.dry_run else d.base_url) for n, d in config.destinations.items()
            },
        )
        try:
            yield
        finally:
            state["stopping"] = True
            await worker.stop()
            if task is not None:
                await task
            await the_store.close()
            log.info("bridge stopped")

    app = Bridge(
        routes=[
            Route("/webhooks/{source}", routed, methods=["POST"]),
            Route("/webhooks/{source}", not_allowed, methods=["GET", "PUT", "PATCH", "DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *admin.routes(config, the_store),
        ],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed_anywhere},
    )
    app.webhook = webhook
    app.state.pipeline = pipe
    app.state.store = the_store
    app.state.worker = worker
    app.state.bridge = state
    return app
