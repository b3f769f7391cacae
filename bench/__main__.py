"""Benchmarks, each figure measured side by side in the same run (ratios, not absolutes).

    python -m bench [--quick] [--soak SECONDS] [--skip NAME ...] [--out bench/results.json]

Needs `wrk` (Debian) for the closed-loop load; everything runs as separate processes on
127.0.0.1: the bridge (`bridge serve`, one uvicorn worker, SQLite WAL synchronous=FULL),
the baselines (bench/apps.py), loopback sinks, and the load generators (bench/load.py).
The ingest and delivery figures, and the bridge's side of the hand-written comparison, are
medians over three rounds (one with --quick), each round a fresh bridge: one noisy spell of
the machine moves one round, not the figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.load import write_requests, wrk

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_bench_secret_0123456789"
PY = sys.executable
# untimed requests before a fixed-rate run (bench/load.py): a fresh server's first request
# pays for what it does once, and at 20 a second the p99 of 300 acks is the third slowest
WARMUP = 20
FIXED_KEYS = ("ack_p50", "ack_p99", "statuses", "connections_opened")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(
    args: list[str], ready: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_http(ready)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def table(sink: str, database: str, concurrency: int = 8) -> str:
    unlimited = f"rate_limit: 10000000, concurrency: {concurrency}"
    return f"""
sources:
  stripe: {{kind: stripe, signing_secrets: ["{SECRET}"]}}
destinations:
  dub: {{kind: dub, base_url: "{sink}/dub", api_key: dub_bench_key, {unlimited}}}
  umami:
    kind: umami
    base_url: "{sink}/umami"
    website_id: 5c0bd4d5-9d31-4c62-8d52-6f3c6b1a0a11
    hostname: example.com
    concurrency: {concurrency}
  shop: {{kind: ecommerce, base_url: "{sink}/shop", api_key: tolk_bench_key, {unlimited}}}
  voucherify:
    kind: voucherify
    base_url: "{sink}/voucherify"
    app_id: vf-bench-app
    app_token: vf-bench-token
    {unlimited.replace(", ", chr(10) + "    ")}
routes:
  - {{from: stripe/invoice.paid, to: [dub, umami, shop, voucherify]}}
storage: {{url: "{database}"}}
delivery: {{poll_interval: 0.2}}
"""


@contextmanager
def loopback_sink(delay: float = 0.0) -> Iterator[str]:
    """The four destinations' stand-in (`bench.apps sink`), answering after ``delay``: its URL."""
    port = free_port()
    with process(
        [PY, "-m", "bench.apps", "sink", str(port), str(delay)],
        f"http://127.0.0.1:{port}/stats",
    ):
        yield f"http://127.0.0.1:{port}"


def request_files(fallback: str) -> tempfile.TemporaryDirectory[str]:
    """Where the load generators' request files go: tmpfs (``/dev/shm``) where there is one,
    off the disk the bridge commits to, else ``fallback``."""
    shm = Path("/dev/shm")
    folder = shm if os.access(shm, os.W_OK) else fallback
    return tempfile.TemporaryDirectory(prefix="bridge-bench-requests-", dir=folder)


class Run:
    def __init__(self, work: Path, quick: bool, scratch: Path | None = None) -> None:
        self.work = work
        # the load generators' request files (hundreds of MB a phase) stay off the bridge's
        # disk: written there, the kernel wrote them back in the middle of later rounds, and the
        # bridge's fsyncs waited behind them (a round's p99 66 ms against 26 and 33)
        self.scratch = scratch or work
        self.quick = quick
        self.seconds = 3 if quick else 6
        self.results: dict[str, Any] = {}
        self.n = 0

    @contextmanager
    def requests(self, count: int) -> Iterator[Path]:
        """A file of ``count`` unique signed requests for wrk, removed once used."""
        self.n += 1
        path = self.scratch / f"requests-{self.n}.txt"
        write_requests(path, SECRET, f"r{self.n}", count)
        try:
            yield path
        finally:
            path.unlink()

    @contextmanager
    def bridge(
        self,
        sink: str,
        database: str | None = None,
        env: dict[str, str] | None = None,
        launcher: list[str] | None = None,
    ) -> Iterator[tuple[str, int]]:
        """``bridge serve`` (or ``launcher`` given the same arguments) on a fresh table."""
        self.n += 1
        config = self.work / f"bridge-{self.n}.yaml"
        config.write_text(table(sink, database or f"sqlite:///{self.work}/bridge-{self.n}.db"))
        port = free_port()
        args = [
            *(launcher or [PY, "-m", "bridge.cli"]),
            "--log-format",
            "json",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ]
        with process(args, f"http://127.0.0.1:{port}/healthz", env) as proc:
            yield f"http://127.0.0.1:{port}", proc.pid

    def drain(self, bridge: str, timeout: float = 600) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            text = httpx.get(f"{bridge}/metrics", timeout=10).text
            depth = sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("bridge_queue_depth{")
            )
            if depth == 0:
                return time.monotonic() - start
            # a scrape counts the backlog: seldom while it is deep, often near the end
            time.sleep(0.1 if depth < 20_000 else 1.0)
        raise RuntimeError("the backlog did not drain")

    # --- 1. ingest vs the verify-only ceiling -------------------------------------------------

    def ingest(self) -> None:
        """Rounds alternate the ceiling and the bridge, each a fresh process, so that a noisy
        spell of the machine falls on both sides; the figures are the medians of the rounds."""
        rounds = [self.ingest_round() for _ in range(1 if self.quick else 3)]
        ceiling = median_run([r["verify_only"] for r in rounds])
        ours = median_run([r["bridge"] for r in rounds])
        drains = sorted(rounds, key=lambda r: r["backlog_drain_seconds"])
        middle = drains[len(drains) // 2]
        self.results["ingest"] = {
            "rounds": len(rounds),
            "verify_only": ceiling,
            "bridge": ours,
            "rps_ratio": ours["rps"] / ceiling["rps"],
            "p99_ratio": ours["p99"] / ceiling["p99"],
            "round_rps_ratios": [r["bridge"]["rps"] / r["verify_only"]["rps"] for r in rounds],
            "round_p99_ratios": [r["bridge"]["p99"] / r["verify_only"]["p99"] for r in rounds],
            "backlog_drain_seconds": middle["backlog_drain_seconds"],
            "backlog_deliveries": middle["backlog_deliveries"],
        }

    def ingest_round(self) -> dict[str, Any]:
        count = 60_000 if not self.quick else 20_000
        port = free_port()
        with process(
            [PY, "-m", "bench.apps", "verify-only", str(port), SECRET],
            f"http://127.0.0.1:{port}/nope",
        ) as app:
            ceiling = self.loaded(f"http://127.0.0.1:{port}/webhooks/stripe", app.pid, count)
        with loopback_sink() as sink, self.bridge(sink) as (bridge, pid):
            ours = self.loaded(f"{bridge}/webhooks/stripe", pid, count)
            drained = self.drain(bridge)
        return {
            "verify_only": ceiling,
            "bridge": ours,
            "backlog_drain_seconds": drained,
            "backlog_deliveries": ours["requests"] * 4,
        }

    def loaded(self, url: str, pid: int, count: int) -> dict[str, Any]:
        """wrk at 64 connections, and the CPU the server process (with its writer process) spent
        per request meanwhile; after a one-second warm-up with other events (first requests
        import and prepare)."""
        with self.requests(20_000) as warmup:
            wrk(url, warmup, connections=64, seconds=1)
        with self.requests(count) as requests:
            before = cpu_seconds(pid)
            result = wrk(url, requests, connections=64, seconds=self.seconds)
        result["cpu_us_per_request"] = (cpu_seconds(pid) - before) / result["requests"] * 1e6
        return result

    # --- 2. delivery throughput and latency at a fixed load --------------------------------------

    def delivery(self) -> None:
        """Rounds, each a fresh bridge, as ingest's: the figures are the medians of the rounds."""
        rounds = [self.delivery_round() for _ in range(1 if self.quick else 3)]
        self.results["delivery"] = {
            "rounds": len(rounds),
            **median_run(rounds),
            "round_deliveries_per_second": [r["deliveries_per_second"] for r in rounds],
            "round_ingest_to_delivered_p50": [r["ingest_to_delivered_p50"] for r in rounds],
        }

    def delivery_round(self) -> dict[str, Any]:
        events = 3000 if not self.quick else 1000
        rate = 500.0
        with loopback_sink() as sink, self.bridge(sink) as (bridge, _pid):
            # throughput: a backlog of events, timed from the first to the last delivery
            with self.requests(events) as file:
                wrk(
                    f"{bridge}/webhooks/stripe",
                    file,
                    connections=32,
                    seconds=max(2, events // 1000),
                )
            httpx.post(f"{sink}/reset")
            start = time.monotonic()
            self.drain(bridge)
            elapsed = time.monotonic() - start
            delivered = httpx.get(f"{sink}/stats").json()["count"]
            # latency: a fixed offered load, ingest-to-delivered per event (Dub's request)
            httpx.post(f"{sink}/reset")
            count = int(rate * (5 if self.quick else 10))
            sent = self.fixed(f"{bridge}/webhooks/stripe", "fixed", rate, count)
            self.drain(bridge)
            arrivals = httpx.get(f"{sink}/stats").json()["arrivals"]
        latencies = sorted(arrivals[k][0] - t for k, t in sent["sent"].items() if k in arrivals)
        return {
            "backlog_deliveries": delivered,
            "deliveries_per_second": delivered / elapsed if elapsed else None,
            "fixed_rate": rate,
            "events": count,
            "delivered_events": len(latencies),
            "ingest_to_delivered_p50": latencies[len(latencies) // 2] if latencies else None,
            "ingest_to_delivered_p99": latencies[int(len(latencies) * 0.99) - 1]
            if latencies
            else None,
            "ack_p50": sent["ack_p50"],
            "ack_p99": sent["ack_p99"],
            "load_generator": sent["tool"],
        }

    # --- 3. against the handler users write instead --------------------------------------------

    def handwritten(self) -> None:
        """Ack latency of each at the SAME offered load (a fixed rate both can carry: the
        hand-written handler holds each request for its four 250 ms calls), and, for
        reference, each under wrk's closed loop (where the bridge answers ~100x the requests)."""
        count = 5000
        rate = 20.0
        seconds = 5 if self.quick else 15
        with loopback_sink(delay=0.25) as slow:
            port = free_port()
            theirs_url = f"http://127.0.0.1:{port}/webhooks/stripe"
            with process(
                [PY, "-m", "bench.apps", "handwritten", str(port), SECRET, slow],
                f"http://127.0.0.1:{port}/nope",
            ):
                theirs_fixed = self.fixed(theirs_url, "hw", rate, int(rate * seconds), WARMUP)
                with self.requests(count) as file:
                    theirs = wrk(theirs_url, file, connections=16, seconds=self.seconds)
            # the bridge's ack p99 at this rate is a few requests' (the slowest of a few hundred,
            # each waiting for its own fsync): its median over rounds, each a fresh bridge
            rounds = []
            for _ in range(1 if self.quick else 3):
                with self.bridge(slow) as (bridge, _pid):
                    rounds.append(
                        self.fixed(
                            f"{bridge}/webhooks/stripe", "br", rate, int(rate * seconds), WARMUP
                        )
                    )
            ours_fixed = median_run(rounds)
            ours_fixed["statuses"] = {
                code: sum(r["statuses"].get(code, 0) for r in rounds)
                for code in {code for r in rounds for code in r["statuses"]}
            }
            with self.bridge(slow) as (bridge, _pid), self.requests(count) as file:
                ours = wrk(f"{bridge}/webhooks/stripe", file, connections=16, seconds=self.seconds)
        self.results["handwritten"] = {
            "sink_delay": 0.25,
            "fixed_rate": rate,
            "events": int(rate * seconds),
            "warmup": WARMUP,
            "handwritten_fixed": {k: theirs_fixed[k] for k in FIXED_KEYS},
            "bridge_fixed": {k: ours_fixed[k] for k in FIXED_KEYS},
            "ack_p99_ratio": theirs_fixed["ack_p99"] / ours_fixed["ack_p99"],
            "bridge_rounds": len(rounds),
            "round_bridge_ack_p99": [r["ack_p99"] for r in rounds],
            "load_generator": theirs_fixed["tool"],
            "handwritten": theirs,
            "bridge": ours,
            "closed_loop_ack_p99_ratio": theirs["p99"] / ours["p99"],
        }

    def fixed(
        self, url: str, prefix: str, rate: float, count: int, warmup: int = 0
    ) -> dict[str, Any]:
        self.n += 1
        out = self.work / f"fixed-{self.n}.json"
        subprocess.run(
            [
                PY,
                "-m",
                "bench.load",
                url,
                SECRET,
                f"{prefix}{self.n}",
                str(rate),
                str(count),
                str(out),
                str(warmup),
            ],
            check=True,
            timeout=600,
        )
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    # --- 4. memory ------------------------------------------------------------------------------

    def memory(self, soak: float) -> None:
        total = 100_000 if not self.quick else 20_000
        with loopback_sink() as sink, self.bridge(sink) as (bridge, pid):
            start_rss = rss(pid)
            sent = 0
            while sent < total:
                with self.requests(min(60_000, total - sent)) as file:
                    result = wrk(
                        f"{bridge}/webhooks/stripe",
                        file,
                        connections=64,
                        seconds=self.seconds * 2,
                    )
                sent += min(result["requests"], total - sent)
            drain_start = time.monotonic()
            self.drain(bridge, timeout=3600)
            drained = time.monotonic() - drain_start
            after = rss(pid)
            # soak: a steady load, RSS sampled; the slope of a least-squares line
            samples: list[tuple[float, int]] = []
            out = self.work / "soak.json"
            rate = 50.0  # well inside what one process delivers (4 deliveries an event)
            loader = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "bench.load",
                    f"{bridge}/webhooks/stripe",
                    SECRET,
                    "soak",
                    str(rate),
                    str(int(rate * soak)),
                    str(out),
                ]
            )
            begin = time.monotonic()
            while loader.poll() is None and time.monotonic() - begin < soak + 120:
                samples.append((time.monotonic() - begin, rss(pid)))
                time.sleep(max(1.0, soak / 60))
            try:
                loader.wait(timeout=60)
            except subprocess.TimeoutExpired:
                loader.kill()
        slope = least_squares(samples)
        self.results["memory"] = {
            "rss_after_start_mb": start_rss / 1024,
            "events": sent,
            "rss_after_events_mb": after / 1024,
            "drain_seconds_after_events": drained,
            "soak_seconds": soak,
            "soak_rate": rate,
            "soak_rss_first_mb": samples[0][1] / 1024 if samples else None,
            "soak_rss_last_mb": samples[-1][1] / 1024 if samples else None,
            "soak_slope_kb_per_min": slope * 60 if slope is not None else None,
        }

    # --- 5. replicas on one PostgreSQL database --------------------------------------------------

    def replicas(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.pgcluster import Cluster, bindir, new_root

        if bindir() is None:
            self.results["replicas"] = {"skipped": "no PostgreSQL server binaries"}
            return
        cluster = Cluster(new_root())
        cluster.init()
        cluster.start()
        try:
            figures: dict[str, Any] = {}
            for replicas in (1, 2):
                database = f"{cluster.url.rsplit('/', 1)[0]}/bench{replicas}"
                import psycopg

                with psycopg.connect(cluster.url, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE bench{replicas}")
                count = 30_000 if not self.quick else 10_000
                with (
                    loopback_sink() as sink,
                    contextlib_multi(
                        [
                            self.bridge(sink, database, {"BRIDGE_WORKER_ID": f"r{i}"})
                            for i in range(replicas)
                        ]
                    ) as bridges,
                    contextlib_multi(
                        [self.requests(count // replicas) for _ in range(replicas)]
                    ) as files,
                ):
                    procs = [
                        subprocess.Popen(
                            [
                                "wrk",
                                "-t1",
                                f"-c{64 // replicas}",
                                f"-d{self.seconds}s",
                                "-s",
                                str(ROOT / "bench" / "wrk.lua"),
                                f"{url}/webhooks/stripe",
                                "--",
                                str(file),
                                "1",
                            ],
                            stdout=subprocess.PIPE,
                            text=True,
                        )
                        for (url, _pid), file in zip(bridges, files, strict=True)
                    ]
                    rps = 0.0
                    for proc in procs:
                        text, _ = proc.communicate(timeout=self.seconds + 120)
                        rps += float(text.split("Requests/sec:")[1].split()[0])
                    httpx.post(f"{sink}/reset")
                    start = time.monotonic()
                    self.drain(bridges[0][0])
                    elapsed = time.monotonic() - start
                    delivered = httpx.get(f"{sink}/stats").json()["count"]
                figures[f"{replicas}_replica"] = {
                    "ingest_rps": rps,
                    "deliveries_per_second": delivered / elapsed if elapsed else None,
                }
            self.results["replicas"] = figures
        finally:
            cluster.stop("immediate")
            shutil.rmtree(cluster.root.parent, ignore_errors=True)


@contextmanager
def contextlib_multi(managers: list[Any]) -> Iterator[list[Any]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(m) for m in managers]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure's median over the runs (the other keys from the first)."""
    out = dict(runs[0])
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(values):  # a figure every run has
            out[key] = sorted(numbers)[len(numbers) // 2]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process, all its threads, and of the processes it runs (the
    bridge's SQLite writer), from Linux's /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }
    for child in children:
        with contextlib.suppress(FileNotFoundError):  # a child that ended meanwhile
            own += cpu_seconds(child)
    return own


def least_squares(points: list[tuple[float, int]]) -> float | None:
    """KB per second."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


def report(results: dict[str, Any]) -> str:
    lines = ["figure                                        value          target"]

    def row(name: str, value: Any, target: str = "") -> None:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{name:<46}{text:<15}{target}")

    if "ingest" in results:
        i = results["ingest"]
        row("ingest: rounds (figures are medians)", i.get("rounds", 1))
        row("ingest: verify-only req/s", i["verify_only"]["rps"])
        row("ingest: bridge req/s", i["bridge"]["rps"])
        row("ingest: req/s ratio (bridge / ceiling)", i["rps_ratio"], ">= 0.5")
        row(
            "ingest: verify-only p50 / p99 (ms)",
            f"{i['verify_only']['p50'] * 1e3:.1f} / {i['verify_only']['p99'] * 1e3:.1f}",
        )
        row(
            "ingest: bridge p50 / p99 (ms)",
            f"{i['bridge']['p50'] * 1e3:.1f} / {i['bridge']['p99'] * 1e3:.1f}",
        )
        row("ingest: p99 ratio", i["p99_ratio"], "<= 2.5")
        if "cpu_us_per_request" in i["bridge"]:
            row(
                "ingest: CPU us/request, verify-only / bridge",
                f"{i['verify_only']['cpu_us_per_request']:.0f} / "
                f"{i['bridge']['cpu_us_per_request']:.0f}",
            )
        row(
            "ingest: backlog drain (s) for deliveries",
            f"{i['backlog_drain_seconds']:.1f} for {i['backlog_deliveries']}",
        )
    if "delivery" in results:
        d = results["delivery"]
        row("delivery: rounds (figures are medians)", d.get("rounds", 1))
        row("delivery: deliveries/s (one process)", d["deliveries_per_second"], ">= 3000")
        row(
            "delivery: ingest->delivered p50 @500/s (ms)",
            (d["ingest_to_delivered_p50"] or 0) * 1e3,
            "<= 20",
        )
        row(
            "delivery: ingest->delivered p99 @500/s (ms)", (d["ingest_to_delivered_p99"] or 0) * 1e3
        )
        row(
            "delivery: ack p50 / p99 @500/s (ms)",
            f"{d['ack_p50'] * 1e3:.1f} / {d['ack_p99'] * 1e3:.1f}",
        )
    if "handwritten" in results:
        h = results["handwritten"]
        at = f"@{h['fixed_rate']:g}/s"
        row(f"vs handwritten: their ack p99 {at} (ms)", h["handwritten_fixed"]["ack_p99"] * 1e3)
        row(f"vs handwritten: bridge ack p99 {at} (ms)", h["bridge_fixed"]["ack_p99"] * 1e3)
        row(f"vs handwritten: ratio {at}", h["ack_p99_ratio"], ">= 100")
        row("vs handwritten: their p99, wrk 16 conn (ms)", h["handwritten"]["p99"] * 1e3)
        row("vs handwritten: bridge p99, wrk 16 conn (ms)", h["bridge"]["p99"] * 1e3)
        row("vs handwritten: ratio, wrk closed loop", h["closed_loop_ack_p99_ratio"])
    if "memory" in results:
        m = results["memory"]
        row("memory: RSS after start (MB)", m["rss_after_start_mb"])
        row(f"memory: RSS after {m['events']} events (MB)", m["rss_after_events_mb"])
        row(
            f"memory: soak {m['soak_seconds']:.0f}s slope (KB/min)",
            m["soak_slope_kb_per_min"],
            "flat",
        )
    if "replicas" in results:
        for name, figures in results["replicas"].items():
            if isinstance(figures, dict):
                row(f"postgres {name}: ingest req/s", figures["ingest_rps"])
                row(f"postgres {name}: deliveries/s", figures["deliveries_per_second"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs (a smoke check of the bench)"
    )
    parser.add_argument(
        "--soak", type=float, default=120.0, help="soak seconds (the issue's figure: 600)"
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["ingest", "delivery", "handwritten", "memory", "replicas"],
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench needs wrk: apt-get install wrk")
    with (
        tempfile.TemporaryDirectory(prefix="bridge-bench-") as work,
        request_files(work) as scratch,
    ):
        run = Run(Path(work), args.quick, Path(scratch))
        for name in ("ingest", "delivery", "handwritten", "memory", "replicas"):
            if name in args.skip:
                continue
            print(f"running {name} ...", file=sys.stderr, flush=True)
            if name == "memory":
                run.memory(args.soak)
            else:
                getattr(run, name)()
            Path(args.out).write_text(json.dumps(run.results, indent=2))  # what we have so far
        run.results["machine"] = {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "request_files": str(Path(scratch).parent),
        }
        Path(args.out).write_text(json.dumps(run.results, indent=2))
        print(report(run.results))
        print(f"\n(written to {args.out})")


if __name__ == "__main__":
    main()
