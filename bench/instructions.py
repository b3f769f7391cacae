"""Instructions per webhook and per delivery, counted by valgrind: figures a noisy machine does
not move.

    python -m bench.instructions [--requests N] [--events N] [--only ingest|delivery]
                                                    (needs Debian's valgrind)

The in-process drive of `python -m bench.breakdown` (no sockets, no uvicorn, worker off, 64
requests at a time), each variant in a process of its own under `valgrind --tool=callgrind`,
once with N requests and once with none, both having prepared the same signed requests and
warmed up alike: the difference over N is the instructions a request costs, in user space,
in every thread and in the store's SQLite writer process (the kernel's work, such as the
fsync, not). Time per instruction is not the same everywhere (cache misses, the GIL's
hand-offs, the kernel), so this complements the req/s ratios, it does not replace them;
what it gives is an A/B that the machine's mood does not blur. Variants: the verify-only
app; the bridge; the bridge with one part made free:

    no log        the log line of an accepted webhook
    no routing    routing and the transaction's fields (every event gets the first's plan), in
                  the writer process
    no SQL        the SQLite statements of a commit, in the writer process (the batch still
                  crosses to it, begins and commits)
    inbox at most only the event's row written, no routing, no log line

And the worker's instructions per delivery: a backlog of N events (4 deliveries each) sent
to the bench's loopback sink (a process of its own, not counted), against the same backlog
left undelivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.__main__ import PY, SECRET, loopback_sink
from bench.apps import verify_only
from bench.bounds import make_free
from bench.breakdown import bridge_app, drive, settle_gc
from bench.load import signed

VARIANTS = {
    "verify-only app": "verify",
    "bridge": "-",
    "bridge, no log line": "log",
    "bridge, no routing": "plan",
    "bridge, no SQL statements": "sql",
    "inbox at most: event row only, no routing, no log": "deliveries,plan,log",
}
WARM = 300  # requests of the warm-up; the delivery figure warms up on a quarter of them


async def run(variant: str, count: int, prepared: int, work: Path) -> None:
    """Prepare ``prepared`` requests, warm up, then drive ``count`` of them (0: none)."""
    requests = [signed(SECRET, "in", n) for n in range(WARM + prepared)]
    if variant == "verify":
        app = verify_only(SECRET)
        lifespan: Any = contextlib.nullcontext()
    else:
        make_free(set(variant.split(",")) - {"-"})
        app = bridge_app(work)
        lifespan = app.router.lifespan_context(app)
    settle_gc()
    async with lifespan:
        await drive(app, requests[:WARM])
        if count:
            await drive(app, requests[WARM : WARM + count])


async def deliver(count: int, drain: bool, work: Path) -> None:
    """Store WARM / 4 events and deliver them (the warm-up), then store ``count`` more and,
    with ``drain``, deliver those too."""
    with loopback_sink() as sink:
        app = bridge_app(work, sink)
        worker = app.state.worker
        warm = WARM // 4  # events: 4 deliveries each
        requests = [signed(SECRET, "dl", n) for n in range(warm + count)]
        settle_gc()
        async with app.router.lifespan_context(app):
            await drive(app, requests[:warm])
            await worker.drain()
            await drive(app, requests[warm:])
            if drain:
                await worker.drain()


def counted(variant: str, count: int, prepared: int) -> int:
    """Instructions of one run under callgrind."""
    args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    # the store's writer process counts too; the loopback sink does not
    args += ["--trace-children=yes", "--trace-children-skip-by-arg=*bench.apps*"]
    args += [PY, "-m", "bench.instructions", "run", variant, str(count), str(prepared)]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    found = re.findall(r"Collected : (\d+)", done.stderr)
    if not found:
        raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-500:]}")
    return sum(int(n) for n in found)


def per_request(variant: str, count: int) -> float:
    return (counted(variant, count, count) - counted(variant, 0, count)) / count


def per_delivery(events: int) -> float:
    """The drain's instructions over its deliveries (4 an event)."""
    return (counted("deliver", events, 1) - counted("deliver", events, 0)) / (events * 4)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the log lines go nowhere
        with tempfile.TemporaryDirectory(prefix="bench-instructions-") as folder:
            variant, count, prepared = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
            if variant == "deliver":  # prepared: whether to drain
                asyncio.run(deliver(count, bool(prepared), Path(folder)))
            else:
                asyncio.run(run(variant, count, prepared, Path(folder)))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--events", type=int, default=250, help="events of the delivery figure")
    parser.add_argument("--only", choices=["ingest", "delivery"], help="one figure only")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    report: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {
            name: pool.submit(per_request, variant, args.requests)
            for name, variant in VARIANTS.items()
            if args.only != "delivery"
        }
        delivery = pool.submit(per_delivery, args.events) if args.only != "ingest" else None
        figures = {name: future.result() for name, future in futures.items()}
    if figures:
        ceiling = figures["verify-only app"]
        print(f"{'instructions per request, in-process':<54}{'count':>11}  vs verify-only")
        for name, value in figures.items():
            print(f"  {name:<52}{value:11,.0f}  {value / ceiling:5.2f}x")
        whole = figures["bridge"]
        for name, value in figures.items():
            if name.startswith("bridge, no "):
                part = f"of which {name.removeprefix('bridge, no ')}"
                print(f"    {part:<50}{whole - value:11,.0f}")
        report |= {"requests": args.requests, "instructions_per_request": figures}
    if delivery is not None:
        per = delivery.result()
        print(f"{'instructions per delivery, worker to loopback sink':<54}{per:11,.0f}")
        report |= {"events": args.events, "instructions_per_delivery": per}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
