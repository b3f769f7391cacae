"""The SQLite writer's own cost per stored webhook, and what a setting changes of it.

    python -m bench.writer [--batch N] [--batches N] [--rounds N] [STATEMENT ...]

The writer process's work (``sqlite_writer.run``: admit each verified webhook, that is, parse
and route it, then store it with its four deliveries, one transaction and one fsync a batch)
driven in this process, without the pipe or the bridge: batches of the bench's signed
``invoice.paid``, into the connection as the store opens it, and into one more connection per
STATEMENT run on it after it opened (for instance ``"PRAGMA temp_store = FILE"``; several,
separated by semicolons, make one variant). The
connections take turns, a round each, so that the machine's mood falls on all alike; each
figure is the median over the rounds but the first (a warm-up): CPU and wall time per webhook.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path

from bench.__main__ import SECRET, table
from bench.load import signed
from bridge import config
from bridge.store import sqlite_ops, sqlite_writer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16, help="webhooks a transaction")
    parser.add_argument("--batches", type=int, default=400, help="transactions a round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("statements", nargs="*", help="a variant: SQL run on its connection")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-writer-"))
    (work / "bridge.yaml").write_text(table("http://127.0.0.1:9", f"sqlite:///{work}/t.db"))
    described = pickle.dumps(config.load(work / "bridge.yaml"))
    variants = ["as the store opens it", *args.statements]
    setups = []
    for index, statement in enumerate(variants):
        conn = sqlite_ops.connect(str(work / f"bridge-{index}.db"), "FULL", True)
        if index:
            conn.executescript(statement)
        admission = sqlite_writer.Admission()
        admission.table(described)
        setups.append((conn, admission))
    cpu: list[list[float]] = [[] for _ in variants]
    wall: list[list[float]] = [[] for _ in variants]
    sent = 0
    for round_ in range(args.rounds):
        for index, (conn, admission) in enumerate(setups):
            batches = []
            for _ in range(args.batches):
                batch = []
                for _ in range(args.batch):
                    signature, body = signed(SECRET, f"w{round_}", sent)
                    sent += 1
                    headers = [(b"stripe-signature", signature.encode())]
                    batch.append(("admit", "stripe", body, headers, time.time()))
                batches.append(batch)
            started, clock = time.process_time(), time.perf_counter()
            for batch in batches:
                outcomes, _commits = sqlite_writer.run(conn, batch, admission)
                assert all(ok and v.outcome == "accepted" for ok, v in outcomes), outcomes[0]
            webhooks = args.batches * args.batch
            if round_:
                cpu[index].append((time.process_time() - started) / webhooks * 1e6)
                wall[index].append((time.perf_counter() - clock) / webhooks * 1e6)
    print(f"{'writer connection':<48}{'CPU us':>10}{'wall us':>10}   per webhook, median")
    for index, variant in enumerate(variants):
        cpu_us, wall_us = statistics.median(cpu[index]), statistics.median(wall[index])
        print(f"{variant[:48]:<48}{cpu_us:>10.1f}{wall_us:>10.1f}")


if __name__ == "__main__":
    main()
