"""Shared test helpers: tables written for loopback sinks, Stripe signing, a real bridge process."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Scope

from tests.sinks import Sinks

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "stripe"
SECRET = "whsec_test_primary_secret_0123456789"
OLD_SECRET = "whsec_test_rotated_out_secret_9876"


def stripe_headers(
    body: bytes, secret: str = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={digest}", "Content-Type": "application/json"}


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_bytes(name))
    return data


def numbered_invoice(n: int, prefix: str) -> bytes:
    """invoice.paid with its own event id (evt_P_N), invoice (in_P_N) and customer (cus_P_N)."""
    payload = fixture("invoice.paid.json")
    payload["id"] = f"evt_{prefix}_{n}"
    payload["data"]["object"]["id"] = f"in_{prefix}_{n}"
    payload["data"]["object"]["customer"] = f"cus_{prefix}_{n}"
    return json.dumps(payload).encode()


def hung_up(
    app: ASGIApp, path: str, part: bytes, headers: list[tuple[bytes, bytes]]
) -> list[Message]:
    """What ``app`` sends for a POST to ``path`` whose caller sends ``part`` of its body and
    hangs up (the ASGI server's http.disconnect)."""
    messages: list[Message] = [
        {"type": "http.request", "body": part, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
    }

    async def request() -> None:
        await app(scope, receive, send)

    asyncio.run(request())
    return sent


def table_yaml(
    sinks_url: str,
    database: Path,
    *,
    extra_routes: str = "",
    dry_run: bool = False,
    retry: str = "{initial: 0.05, max_interval: 0.2, max_attempts: 5}",
    secrets: tuple[str, ...] = (SECRET, OLD_SECRET),
) -> str:
    secret_list = ", ".join(f'"{s}"' for s in secrets)
    dry = "true" if dry_run else "false"
    return f"""
sources:
  stripe:
    kind: stripe
    signing_secrets: [{secret_list}]
destinations:
  dub:
    kind: dub
    base_url: {sinks_url}/dub
    api_key: dub_test_key
    dry_run: {dry}
    retry: {retry}
  umami:
    kind: umami
    base_url: {sinks_url}/umami
    website_id: 5c0bd4d5-9d31-4c62-8d52-6f3c6b1a0a11
    hostname: shop.example.com
    dry_run: {dry}
    retry: {retry}
  shop:
    kind: ecommerce
    base_url: {sinks_url}/shop
    api_key: tolk_sec_test
    dry_run: {dry}
    retry: {retry}
  voucherify:
    kind: voucherify
    base_url: {sinks_url}/voucherify
    app_id: vf-app-id
    app_token: vf-app-token
    dry_run: {dry}
    retry: {retry}
routes:
  - from: stripe/invoice.paid
    to: [dub, umami, shop, voucherify]
  - from: stripe/checkout.session.completed
    to: [dub, umami, shop, voucherify]
  - from: stripe/charge.refunded
    to: [shop, voucherify]
  - from: stripe/refund.created
    to: [shop, voucherify]
{extra_routes}
storage:
  url: sqlite:///{database}
delivery:
  poll_interval: 0.05
"""


@pytest.fixture
def sinks() -> Iterator[Sinks]:
    with Sinks() as running:
        yield running


@pytest.fixture
def table(tmp_path: Path, sinks: Sinks) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml(sinks.url, tmp_path / "bridge.db"))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BridgeProcess:
    """``bridge serve`` as a real subprocess on 127.0.0.1."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.parent / f"bridge-{self.port}.log"
        self._env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> BridgeProcess:
        command = [
            sys.executable,
            "-m",
            "bridge.cli",
            "--log-format",
            "json",
            "serve",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self._env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"bridge exited {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"bridge did not start:\n{self.log.read_text()}")

    def post(
        self, body: bytes, headers: dict[str, str] | None = None, source: str = "stripe"
    ) -> httpx.Response:
        return httpx.post(
            f"{self.url}/webhooks/{source}",
            content=body,
            headers=headers if headers is not None else stripe_headers(body),
            timeout=10,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code

    def logs(self) -> str:
        return self.log.read_text()


@pytest.fixture
def bridge_process(table: Path) -> Iterator[BridgeProcess]:
    process = BridgeProcess(table).start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.stop()


# --- PostgreSQL ----------------------------------------------------------------------------
# .ci/run starts a throwaway cluster and exports BRIDGE_TEST_PGDIR; without it, the tests
# start their own where Debian's binaries are installed. In CI a missing server is a failure;
# locally the PostgreSQL tests skip with the reason.


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    from tests.pgcluster import Cluster, bindir, new_root

    given = os.environ.get("BRIDGE_TEST_PGDIR")
    if given:
        yield Cluster(Path(given))
        return
    if bindir() is None:
        message = "no PostgreSQL server: apt-get install postgresql (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster(new_root())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(cluster.root.parent, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: Any) -> Iterator[str]:
    """A fresh, empty database for one test."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin_url = pg_cluster.url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    if pg_cluster.running():
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
