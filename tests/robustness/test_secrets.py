"""No secret, signature header or API key ever leaves the bridge; the admin API's access rules.

The whole flow with distinctive secrets (read from the environment, as the README says):
``serve`` + ``replay`` of every kind + refused requests + deliveries (one destination answering
an error that quotes its API key back) + ``explain`` + ``deliveries list/show`` + ``check`` +
``redrive`` + the admin API + /metrics; then every secret, and every signature header value
sent, is looked for in every output: the log, each command's stdout and stderr, each answer's
headers and body, and the database file itself.
"""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from bridge import config as config_module
from bridge.app import create_app
from tests.conftest import BridgeProcess
from tests.robustness import corpus
from tests.robustness.net import wait_until
from tests.sinks import Answer, Sinks

SECRETS = {
    kind: (f"{kind}-SIGNING-PRIMARY-q7Zr4", f"{kind}-SIGNING-ROTATED-m2Kx9")
    for kind in corpus.KINDS
}
SECRETS["standard_webhooks"] = (
    "whsec_" + "U1dQUklNQVJZLXN0YW5kYXJkLXdlYmhvb2tzLWtleQ==",  # base64: the key's own form
    "whsec_" + "U1dST1RBVEVELXN0YW5kYXJkLXdlYmhvb2tzLWtleQ==",
)
SECRETS["revenuecat"] = ("Bearer RC-AUTH-PRIMARY-w8Lp3", "Bearer RC-AUTH-ROTATED-k5Vn1")
KEYS = {
    "DUB_KEY": "dub_API_KEY_distinctive_3hT9",
    "SHOP_KEY": "tolk_SHOP_KEY_distinctive_8Qm2",
    "VF_ID": "VF_APP_ID_distinctive_5Rw7",
    "VF_TOKEN": "VF_APP_TOKEN_distinctive_1Gx4",
}
ADMIN_TOKEN = "ADMIN-TOKEN-distinctive-6Yb8"


def environment() -> dict[str, str]:
    env = {f"SECRET_{k.upper()}_{n}": v for k, pair in SECRETS.items() for n, v in enumerate(pair)}
    return {**env, **KEYS, "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}


def references() -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    secrets = {k: (f"${{SECRET_{k.upper()}_0}}", f"${{SECRET_{k.upper()}_1}}") for k in SECRETS}
    return secrets, {k: f"${{{k}}}" for k in KEYS}


def every_secret() -> list[str]:
    return [s for pair in SECRETS.values() for s in pair] + list(KEYS.values()) + [ADMIN_TOKEN]


def fragments(value: str) -> list[str]:
    """A secret, and the parts of it long enough to identify it (a masked prefix is no leak)."""
    return [value] + [value[i : i + 16] for i in range(0, max(1, len(value) - 16), 8)]


class Outputs:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        self.items.append((where, text.decode("latin-1") if isinstance(text, bytes) else text))

    def response(self, where: str, response: httpx.Response) -> httpx.Response:
        self.add(f"{where} headers", json.dumps(dict(response.headers)))
        self.add(f"{where} body", response.content)
        return response

    def leaks(self, secret: str) -> list[str]:
        return [where for where, text in self.items if any(f in text for f in fragments(secret))]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.mark.slow
def test_no_secret_nor_signature_appears_in_any_output(tmp_path: Path) -> None:
    env = environment()
    secret_refs, key_refs = references()
    sinks = Sinks(
        dub_key=KEYS["DUB_KEY"],
        shop_key=KEYS["SHOP_KEY"],
        voucherify=(KEYS["VF_ID"], KEYS["VF_TOKEN"]),
    )
    outputs = Outputs()
    sent_signatures: list[str] = []
    table = tmp_path / "bridge.yaml"
    with sinks:
        table.write_text(
            corpus.table_yaml(tmp_path / "bridge.db", sinks.url, secrets=secret_refs, keys=key_refs)
        )
        # a destination that quotes the key it was sent back in its error (dead at once: 4xx)
        sinks.queue(
            "shop",
            Answer(401, {"error": {"message": f"invalid key {KEYS['SHOP_KEY']} for this project"}}),
        )
        bridge = BridgeProcess(table, env).start()
        try:
            config = ["--config", str(table)]
            for kind in corpus.KINDS:
                fixture = corpus.FIXTURES / corpus.FIXTURE[kind]
                done = cli(
                    env,
                    "replay",
                    str(fixture),
                    *config,
                    "--source",
                    kind,
                    "--url",
                    f"{bridge.url}/webhooks/{kind}",
                )
                outputs.add(f"replay {kind} stdout", done.stdout)
                outputs.add(f"replay {kind} stderr", done.stderr)
                assert done.returncode == 0, done.stderr
                explained = cli(env, "explain", str(fixture), *config, "--source", kind, "--json")
                outputs.add(f"explain {kind}", explained.stdout + explained.stderr)
                assert explained.returncode == 0, explained.stderr
                assert json.loads(explained.stdout), "explain printed the requests"
            with httpx.Client(timeout=10) as client:
                # refused requests, each signed with a secret of the table (rotated out or not)
                for kind in corpus.KINDS:
                    body = json.dumps(corpus.fixture(kind)).encode()
                    for secret in SECRETS[kind]:
                        headers = corpus.sign(kind, body, time.time() - 3600, secret=secret)
                        if kind not in corpus.TIMED:
                            headers = corpus.sign(kind, body + b" ", time.time(), secret=secret)
                        name = corpus.SIGNATURE_HEADER[kind].lower().encode()
                        sent_signatures += [v.decode() for k, v in headers if k.lower() == name]
                        outputs.response(
                            f"refused {kind}",
                            client.post(
                                f"{bridge.url}/webhooks/{kind}",
                                content=body,
                                headers=corpus_dict(headers),
                            ),
                        )
                sinks.wait_for(20, timeout=20)
                auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

                def dead() -> list[int]:
                    answer = client.get(f"{bridge.url}/admin/deliveries?status=dead", headers=auth)
                    return [int(d["id"]) for d in answer.json()]

                wait_until(lambda: bool(dead()), 20, "the shop delivery dead")
                for path in (
                    "/admin/events",
                    "/admin/deliveries",
                    "/admin/openapi.json",
                    "/admin/deliveries?status=dead",
                    "/metrics",
                    "/readyz",
                    "/healthz",
                ):
                    outputs.response(path, client.get(f"{bridge.url}{path}", headers=auth))
                deliveries = client.get(f"{bridge.url}/admin/deliveries?limit=1000", headers=auth)
                ids = [d["id"] for d in deliveries.json()]
                assert ids
                shown = sorted(set(dead() + ids[:3]))
                for delivery_id in ids:
                    outputs.response(
                        f"admin delivery {delivery_id}",
                        client.get(f"{bridge.url}/admin/deliveries/{delivery_id}", headers=auth),
                    )
                for wrong in ("Bearer nope", f"Bearer {ADMIN_TOKEN}x", "", f"Basic {ADMIN_TOKEN}"):
                    answer = client.get(
                        f"{bridge.url}/admin/deliveries", headers={"Authorization": wrong}
                    )
                    assert answer.status_code == 401
                    outputs.response("admin 401", answer)
            for args in (["deliveries", "list"], ["deliveries", "list", "--json"], ["check"]):
                done = cli(env, *args, *config)
                outputs.add(" ".join(args), done.stdout + done.stderr)
                assert done.returncode == 0, done.stderr
            for delivery_id in shown:
                done = cli(env, "deliveries", "show", str(delivery_id), *config)
                outputs.add(f"deliveries show {delivery_id}", done.stdout + done.stderr)
                assert done.returncode == 0, done.stderr
            done = cli(env, "redrive", "--dead", *config)
            outputs.add("redrive", done.stdout + done.stderr)
        finally:
            bridge.stop()
        outputs.add("the log", bridge.logs())
        outputs.add("the database", (tmp_path / "bridge.db").read_bytes())
        for suffix in ("-wal",):
            wal = Path(f"{tmp_path / 'bridge.db'}{suffix}")
            if wal.exists():
                outputs.add(f"the database{suffix}", wal.read_bytes())
    # the flow ran: the error quoting the key was recorded, masked
    assert any("invalid key ***" in text for where, text in outputs.items if "admin" in where)
    leaks = {s: outputs.leaks(s) for s in every_secret() + sent_signatures}
    assert not {s: w for s, w in leaks.items() if w}, {s: w for s, w in leaks.items() if w}


def corpus_dict(headers: corpus.Headers) -> dict[str, str]:
    return {k.decode(): v.decode("latin-1") for k, v in headers}


# --- the admin API and the webhook path, as an unsigned caller sees them ------------------------


@pytest.mark.slow
def test_the_admin_api_is_off_without_a_token_and_401_without_the_right_one(
    tmp_path: Path,
) -> None:
    table = tmp_path / "bridge.yaml"
    table.write_text(corpus.table_yaml(tmp_path / "bridge.db", dry_run=True))
    paths = ["/admin/events", "/admin/deliveries", "/admin/deliveries/1", "/admin/openapi.json"]
    off = BridgeProcess(table, {"BRIDGE_ADMIN_TOKEN": ""}).start()
    try:
        for path in paths:
            for auth in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
                assert httpx.get(f"{off.url}{path}", headers=auth, timeout=5).status_code == 404
        assert httpx.post(f"{off.url}/admin/redrive", json={"dead": True}).status_code == 404
    finally:
        off.stop()
    on = BridgeProcess(table, {"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}).start()
    try:
        for path in paths:
            for auth in (
                {},
                {"Authorization": ""},
                {"Authorization": "Bearer"},
                {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
                {"Authorization": f"Bearer {ADMIN_TOKEN}0"},
                {"Authorization": f"Basic {ADMIN_TOKEN}"},
                {"Authorization": f"Bearer {ADMIN_TOKEN.lower()}"},
            ):
                answer = httpx.get(f"{on.url}{path}", headers=auth, timeout=5)
                assert answer.status_code == 401, (path, auth)
                assert answer.json() == {"error": "unauthorized"}
                assert answer.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert httpx.get(f"{on.url}/admin/deliveries", headers=good).status_code == 200
    finally:
        on.stop()


def test_the_admin_token_is_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setenv("BRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    table = tmp_path / "bridge.yaml"
    table.write_text(corpus.table_yaml(tmp_path / "bridge.db", dry_run=True))
    with TestClient(create_app(config_module.load(table), run_worker=False)) as client:
        for given in ("wrong", ADMIN_TOKEN[:5], ADMIN_TOKEN):
            client.get("/admin/events", headers={"Authorization": f"Bearer {given}"})
    assert [b for _a, b in compared] == [ADMIN_TOKEN.encode()] * 3
    assert [a for a, _b in compared] == [b"wrong", ADMIN_TOKEN[:5].encode(), ADMIN_TOKEN.encode()]


ECHO_BUG = (
    "admin.endpoint answers 400 with str(exc)[:200] of the ValueError: int('<limit>') and "
    "datetime.fromisoformat('<since>') quote the caller's input back"
)


@pytest.mark.parametrize(
    "path",
    ["/admin/events?limit=MARK", "/admin/deliveries?since=MARK", "/admin/deliveries?limit=1MARK"],
)
def test_admin_errors_do_not_echo_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setenv("BRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    table = tmp_path / "bridge.yaml"
    table.write_text(corpus.table_yaml(tmp_path / "bridge.db", dry_run=True))
    marker = corpus.MARK.decode()
    with TestClient(create_app(config_module.load(table), run_worker=False)) as client:
        answer = client.get(
            path.replace("MARK", marker), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert answer.status_code == 400
    assert marker not in answer.text


@pytest.mark.slow
def test_an_unsigned_caller_learns_only_whether_a_name_is_unknown(tmp_path: Path) -> None:
    table = tmp_path / "bridge.yaml"
    table.write_text(corpus.table_yaml(tmp_path / "bridge.db", dry_run=True))
    bridge = BridgeProcess(table).start()
    try:
        with httpx.Client(timeout=10) as client:
            for method in ("GET", "PUT", "DELETE"):
                known = client.request(method, f"{bridge.url}/webhooks/stripe")
                unknown = client.request(method, f"{bridge.url}/webhooks/nope")
                assert (known.status_code, known.content) == (unknown.status_code, unknown.content)
            for kind in corpus.KINDS:
                answer = client.post(f"{bridge.url}/webhooks/{kind}", content=b"{}")
                assert answer.status_code == 400
                assert set(answer.json()) == {"error"}
                error = answer.json()["error"]
                assert error.startswith("signature: ") and len(error) < 80, error
            unknown = client.post(f"{bridge.url}/webhooks/nope", content=b"{}")
            assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown source"})
    finally:
        bridge.stop()
