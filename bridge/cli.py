"""The ``bridge`` command: serve, check, explain, replay, deliveries, redrive."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import httpx
import structlog
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from bridge import config as config_module
from bridge import logging as bridge_logging
from bridge import mapping, views
from bridge.admin import MAX_ID
from bridge.destinations.base import Skipped
from bridge.logging import mask
from bridge.model import Status
from bridge.pipeline import Pipeline, link_refund
from bridge.sources.base import BadEvent
from bridge.store import StoreUnavailable, connect

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
deliveries_app = typer.Typer(no_args_is_help=True, help="Inspect deliveries.")
app.add_typer(deliveries_app, name="deliveries")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="The mapping table (default: $BRIDGE_CONFIG, else bridge.yaml)."
    ),
]


def _log_format(value: str) -> str:
    if value not in ("auto", "json", "console"):
        raise typer.BadParameter(f"{value!r} is not one of 'auto', 'json', 'console'")
    return value


@app.callback()
def _logging(
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format", help="Logs on stderr: auto, json or console.", callback=_log_format
        ),
    ] = "auto",
) -> None:
    bridge_logging.configure(log_format)


def _load(path: str | None) -> config_module.Config:
    file = config_module.config_path(path)
    try:
        loaded = config_module.load(file)
    except config_module.ConfigError as exc:
        for line in exc.lines():
            err.print(line, markup=False)
        raise typer.Exit(1) from None
    bridge_logging.set_secrets(loaded.secrets())
    return loaded


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on.", envvar="BRIDGE_HOST")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on.", envvar="BRIDGE_PORT", min=0, max=65535)
    ] = 8000,
) -> None:
    """Receive webhooks and deliver them (the worker runs in this process)."""
    import uvicorn

    from bridge.app import create_app
    from bridge.worker import default_worker_id

    loaded = _load(config)
    application = create_app(loaded, worker_name=default_worker_id(port))
    # everything loaded so far lives as long as the process: keep the collector off it, and
    # collect the young generation less often (each request makes many short-lived objects)
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler
    # that was there before it: make that one a clean exit, as a container's PID 1 should.
    signal.signal(signal.SIGTERM, _exit_zero)
    server_config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # its lines go through bridge.logging's handler (JSON, masked)
        access_log=False,
        timeout_graceful_shutdown=int(loaded.delivery.shutdown_grace) + 5,
        http=_protocol_class(),
    )
    # the port first: a second bridge started on a port in use stops here, before its start-up
    # takes back the claims of the bridge that has it (same host, same port: the same name)
    sock = server_config.bind_socket()
    # then the store, once, so that one that cannot be opened (PostgreSQL down, a file it may
    # not write, a schema newer than this bridge) is one clear line, not a start-up traceback
    try:
        _run(_with_store(loaded, lambda store: store.ping()))
    except typer.Exit:
        sock.close()
        raise
    structlog.get_logger("bridge.cli").info("listening", url=f"http://{host}:{port}")
    _Server(server_config, application.state.bridge).run(sockets=[sock])


def _exit_zero(signum: int, frame: object) -> None:
    raise SystemExit(0)


# what one request may take before the app has all of it: uvicorn's httptools protocol bounds
# neither its head's size nor the time it takes to arrive (a head without end filled memory; a
# head or body trickled, or never sent, held its connection and what it had sent for good)
HEAD_LIMIT = 64 * 1024  # the request line and headers, or a chunked body's trailer, in bytes
REQUEST_WITHIN = 30.0  # seconds from the connection (or the request's first byte) to its end
# after a 431, what the client still sends is read and dropped for this long before the
# connection closes: closing at once, with its bytes unread, resets the connection, and the
# client's system then drops the 431 before the client has read it
LINGER = 2.0


def _protocol_class() -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Protocol(HttpToolsProtocol):
        """uvicorn's HTTP/1.1 protocol; a head (or a chunked body's trailer) over HEAD_LIMIT is
        answered 431, a request not whole within REQUEST_WITHIN has its connection closed (the
        app sees a disconnect)."""

        # bytes read since a head's end, a body's byte or a request's end: what the parser and
        # the header list keep of a head or a trailer, give or take one read
        head = 0
        ended = False  # one of those ends came in what is being read
        refused = False  # answered 431: what comes now is dropped until the connection closes
        timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timer = self.loop.call_later(REQUEST_WITHIN, self.too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return
            self.ended = False
            super().data_received(data)
            self.head = 0 if self.ended else self.head + len(data)
            if self.head > HEAD_LIMIT:
                self.refuse_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.disarm()
            self.timer = self.loop.call_later(REQUEST_WITHIN, self.too_slow)

        def on_headers_complete(self) -> None:
            self.ended = True
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self.ended = True
            super().on_body(body)

        def on_message_complete(self) -> None:
            self.ended = True
            self.disarm()
            super().on_message_complete()

        def _unsupported_upgrade_warning(self) -> None:
            # the bridge serves no upgrade (WebSocket, h2c): such a request is answered as plain
            # HTTP/1.1 in its one line, not two warnings more that advise installing a library
            pass

        def disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def refuse_head(self) -> None:
            if self.transport.is_closing():
                return
            structlog.get_logger("bridge.cli").info(
                "request refused", reason=f"head or trailer larger than {HEAD_LIMIT} bytes"
            )
            message = b"request head or trailer too large"
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
            )
            self.refused = True
            if not self.transport.can_write_eof():
                self.transport.close()
                return
            self.transport.write_eof()  # the answer, then the end of what the server sends
            self.disarm()
            self.timer = self.loop.call_later(LINGER, self.too_slow)

    return Protocol


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """On the first SIGTERM/SIGINT, webhooks still arriving are answered 503 at once."""

        def __init__(self, config: uvicorn.Config, state: dict[str, Any]) -> None:
            super().__init__(config)
            self.bridge_state = state

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.bridge_state["stopping"] = True
            super().handle_exit(sig, frame)

    return Server


def _Server(config: Any, state: dict[str, Any]) -> Any:
    return _server_class()(config, state)


@app.command()
def check(config: ConfigOption = None) -> None:
    """Validate the table; print its routes."""
    loaded = _load(config)
    out.print(f"{loaded.file}: OK, {len(loaded.routes)} route(s)", markup=False)
    for route in loaded.routes:
        targets = ", ".join(
            f"{name} ({loaded.destinations[name].kind}"
            f"{', dry-run' if loaded.destinations[name].dry_run else ''})"
            for name in route.to
        )
        line = f"  routes[{route.index}] {route.source}/{route.event} -> {targets}"
        if route.when:
            line += f" when {route.when.text}"
        if route.fields:
            line += f" fields: {', '.join(route.fields)}"
        out.print(line, markup=False)
    out.print(f"storage: {mask(loaded.database_url, loaded.secrets())}", markup=False)


def explain_requests(
    loaded: config_module.Config, payload: Any, source_name: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every request the event would cause (secrets masked), and the notes on what was not sent."""
    pipe = Pipeline(loaded)
    source = pipe.sources[source_name]
    event = source.event(payload, {})
    plan = pipe.plan(event)
    notes = list(plan.skipped)
    requests: list[dict[str, Any]] = []
    secrets = loaded.secrets()
    for new in plan.deliveries:
        route = loaded.routes[new.route]
        try:
            if not pipe.holds(route, event):
                continue
            txn = pipe.transaction(route, event)
            link_refund(txn, None, event)
            request = pipe.destinations[new.destination].request(txn, event)
        except mapping.MappingError as exc:
            notes.append(f"{new.destination}: dead: {exc}")
            continue
        except Skipped as exc:
            notes.append(f"{new.destination}: skipped: {exc}")
            continue
        requests.append(
            {
                "route": route.name,
                "destination": new.destination,
                "method": request.method,
                "url": mask(str(request.url), secrets),
                "headers": {
                    key: mask(value, secrets)
                    for key, value in request.headers.items()
                    if key.lower() not in ("content-length", "host")
                },
                "json": json.loads(mask(request.content.decode(), secrets)),
            }
        )
    return requests, notes


def _default_source(loaded: config_module.Config, source: str | None) -> str:
    if source is not None:
        if source not in loaded.sources:
            err.print(f"no source named {source!r} in {loaded.file}", markup=False)
            raise typer.Exit(2)
        return source
    if len(loaded.sources) > 1:
        err.print(f"{loaded.file} has several sources; name one with --source", markup=False)
        raise typer.Exit(2)
    return next(iter(loaded.sources))


@app.command()
def explain(
    fixture: Annotated[Path, typer.Argument(help="One event, as the processor sends it.")],
    config: ConfigOption = None,
    source: Annotated[str | None, typer.Option(help="The source that receives it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array of requests.")] = False,
) -> None:
    """Print, without any network, every request this event would cause."""
    from bridge.intake import parse_json

    loaded = _load(config)
    name = _default_source(loaded, source)
    try:
        payload = parse_json(fixture.read_bytes().decode("utf-8"), loaded.server.max_depth)
        requests, notes = explain_requests(loaded, payload, name)
    except (OSError, ValueError) as exc:
        message = str(exc) if isinstance(exc, BadEvent) else f"cannot read {fixture}: {exc}"
        err.print(message, markup=False)
        raise typer.Exit(2) from None
    for note in notes:
        err.print(f"note: {note}", markup=False)
    if as_json:
        print(json.dumps(requests, indent=2))
        return
    if not requests:
        why = "see the notes above" if notes else "no route wants this event"
        out.print(f"[] (no request: {why})", markup=False)
    for request in requests:
        out.print(f"# {request['route']} -> {request['destination']}", markup=False)
        out.print(f"{request['method']} {request['url']}", markup=False)
        for key, value in request["headers"].items():
            out.print(f"{key}: {value}", markup=False)
        out.print(json.dumps(request["json"], indent=2), markup=False)
        out.print()


@app.command()
def replay(
    files: Annotated[list[Path], typer.Argument(help="Fixture files, one event each.")],
    config: ConfigOption = None,
    source: Annotated[str | None, typer.Option(help="The source whose first secret signs.")] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Where to post (default http://127.0.0.1:8000/webhooks/SOURCE)."),
    ] = None,
) -> None:
    """Sign each fixture as the processor would (fresh timestamp) and post it."""
    loaded = _load(config)
    name = _default_source(loaded, source)
    signer = Pipeline(loaded).sources[name]
    target = url or f"http://127.0.0.1:8000/webhooks/{name}"
    try:
        httpx.URL(target)
    except httpx.InvalidURL as exc:
        err.print(f"--url: {exc}", markup=False)
        raise typer.Exit(2) from None
    statuses: Counter[str] = Counter()
    with (
        httpx.Client(timeout=30) as client,
        Progress(console=err, transient=True, disable=len(files) < 2) as progress,
    ):
        task = progress.add_task("replaying", total=len(files))
        for file in files:
            try:
                body = file.read_bytes()
            except OSError as exc:
                err.print(f"{file}: cannot read: {exc}", markup=False)
                statuses["unreadable"] += 1
                progress.advance(task)
                continue
            try:
                response = client.post(target, content=body, headers=signer.sign(body, time.time()))
                statuses[str(response.status_code)] += 1
                if len(files) < 2 or response.status_code >= 300:
                    err.print(f"{file}: {response.status_code} {response.text[:200]}", markup=False)
            except httpx.HTTPError as exc:
                statuses["connection error"] += 1
                err.print(f"{file}: {type(exc).__name__}: {exc}", markup=False)
            progress.advance(task)
    summary = ", ".join(f"{code}: {count}" for code, count in sorted(statuses.items()))
    out.print(f"replayed {len(files)} file(s) to {target}: {summary}", markup=False)
    if any(not code.startswith("2") for code in statuses):
        raise typer.Exit(1)


# --- deliveries and redrive ---------------------------------------------------------------


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except StoreUnavailable as exc:
        err.print(f"storage unavailable: {exc}", markup=False)
        raise typer.Exit(1) from None


async def _with_store(loaded: config_module.Config, fn: Any) -> Any:
    store = connect(loaded.database_url, loaded.storage.migrate)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Apply the storage schema's pending migrations (SQLite or PostgreSQL)."""
    loaded = _load(config)
    from bridge.store.migrations import latest

    store = connect(loaded.database_url, migrate=True)

    async def run() -> None:
        await store.open()
        await store.close()

    _run(run())
    backend = "postgres" if loaded.database_url.startswith("postgres") else "sqlite"
    out.print(f"schema at version {latest(backend)} ({backend})", markup=False)


@deliveries_app.command("list")
def deliveries_list(
    config: ConfigOption = None,
    status: Annotated[Status | None, typer.Option(help="Only deliveries in this state.")] = None,
    destination: Annotated[str | None, typer.Option(help="A destination name.")] = None,
    limit: Annotated[
        int, typer.Option(help="At most this many, newest first.", min=1, max=MAX_ID)
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List deliveries, newest first."""
    loaded = _load(config)
    rows = _run(
        _with_store(
            loaded, lambda s: s.deliveries(status=status, destination=destination, limit=limit)
        )
    )
    data = [views.delivery(row, loaded.secrets()) for row in rows]
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table("id", "event", "destination", "status", "attempts", "updated", "last error")
    for row in data:
        # Text, not str: the processor's ids and the destinations' errors are not rich markup
        table.add_row(
            Text(str(row["id"])),
            Text(f"{row['source']}/{row['event_type']} {row['event_id']}"),
            Text(row["destination"]),
            Text(row["status"]),
            Text(str(row["attempts"])),
            Text(row["updated_at"] or ""),
            Text((row["last_error"] or "")[:80]),
        )
    out.print(table)


@deliveries_app.command("show")
def deliveries_show(
    delivery_id: Annotated[int, typer.Argument(help="The delivery's id.", min=1, max=MAX_ID)],
    config: ConfigOption = None,
) -> None:
    """One delivery with every attempt (as JSON)."""
    loaded = _load(config)
    found = _run(_with_store(loaded, lambda s: s.get(delivery_id)))
    if found is None:
        err.print(f"no delivery {delivery_id}", markup=False)
        raise typer.Exit(1)
    delivery, attempts = found
    data = views.delivery_detail(delivery, attempts, loaded.secrets())
    print(json.dumps(data, indent=2))


@app.command()
def redrive(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Delivery ids.", min=1, max=MAX_ID)
    ] = None,
    config: ConfigOption = None,
    dead: Annotated[bool, typer.Option("--dead", help="Every dead delivery.")] = False,
    destination: Annotated[str | None, typer.Option(help="With --dead: only this one.")] = None,
    since: Annotated[
        str | None, typer.Option(help="With --dead: failed since (ISO date or time).")
    ] = None,
) -> None:
    """Send finished deliveries again (after a fix): by id, or every dead one."""
    loaded = _load(config)
    if not ids and not dead:
        err.print("name delivery ids, or --dead", markup=False)
        raise typer.Exit(2)
    since_ts = None
    if since is not None:
        try:
            since_ts = views.timestamp(since)
        except ValueError:
            err.print(f"--since: not an ISO date or time: {since!r}", markup=False)
            raise typer.Exit(2) from None

    async def work(store: Any) -> list[int]:
        wanted = list(ids or [])
        if dead:
            rows = await store.deliveries(
                status="dead", destination=destination, since=since_ts, limit=1_000_000
            )
            wanted.extend(row.id for row in rows)
        done: list[int] = []
        with Progress(console=err, transient=True, disable=len(wanted) < 2) as progress:
            task = progress.add_task("redriving", total=len(wanted))
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                done.extend(await store.redrive(chunk, time.time()))
                progress.advance(task, len(chunk))
        return done

    done = _run(_with_store(loaded, work))
    out.print(f"redriven: {len(done)}", markup=False)
    redriven = set(done)
    missed = [i for i in dict.fromkeys(ids or []) if i not in redriven]
    if missed:
        listed = ", ".join(map(str, missed))
        why = "no such delivery, or one not yet finished"
        err.print(f"not redriven: {listed} ({why})", markup=False)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
