"""The admin API: off without a token, 401 without the right one, JSON views and redrive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from openapi_schema_validator import OAS30Validator
from starlette.testclient import TestClient

from bridge import config as config_module
from bridge.app import create_app
from tests.conftest import fixture_bytes, hung_up, stripe_headers, table_yaml

TOKEN = "admin-token-s3cret-value"


def make_client(tmp_path: Path, token: str | None) -> TestClient:
    text = table_yaml("http://127.0.0.1:9", tmp_path / "bridge.db")
    if token:
        text += f"admin:\n  token: {token}\n"
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return TestClient(create_app(config_module.load(path), run_worker=False))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, TOKEN) as test_client:
        body = fixture_bytes("invoice.paid.json")
        assert (
            test_client.post(
                "/webhooks/stripe", content=body, headers=stripe_headers(body)
            ).status_code
            == 200
        )
        yield test_client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_off_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_ADMIN_TOKEN", raising=False)
    with make_client(tmp_path, None) as client:
        for path in ("/admin/deliveries", "/admin/events", "/admin/openapi.json"):
            assert client.get(path, headers=AUTH).status_code == 404


def test_the_token_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_ADMIN_TOKEN", TOKEN)
    with make_client(tmp_path, None) as client:
        assert client.get("/admin/deliveries", headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["missing", "wrong", "no-scheme", "basic", "longer"],
)
def test_wrong_or_missing_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/admin/deliveries", headers=headers)
    assert response.status_code == 401
    assert TOKEN not in response.text


def test_events_deliveries_attempts_and_redrive(client: TestClient) -> None:
    events = client.get("/admin/events", headers=AUTH).json()
    assert [(e["event_id"], e["deliveries"]) for e in events] == [
        ("evt_test_invoice_paid", {"pending": 4})
    ]
    deliveries = client.get("/admin/deliveries?destination=dub", headers=AUTH).json()
    assert [(d["destination"], d["status"]) for d in deliveries] == [("dub", "pending")]
    detail = client.get(f"/admin/deliveries/{deliveries[0]['id']}", headers=AUTH).json()
    assert detail["attempts_log"] == []
    assert client.get("/admin/deliveries/999999", headers=AUTH).status_code == 404
    # a pending delivery is not redriven; the answer says so
    assert client.post(f"/admin/deliveries/{deliveries[0]['id']}/redrive", headers=AUTH).json() == {
        "redriven": []
    }
    bulk = client.post("/admin/redrive", headers=AUTH, json={"dead": True})
    assert bulk.json() == {"redriven": [], "count": 0}
    assert client.post("/admin/redrive", headers=AUTH, content=b"not json").status_code == 400
    assert client.post("/admin/redrive", headers=AUTH, json={"ids": ["x"]}).status_code == 400


def test_the_openapi_document_is_valid_and_describes_every_route(client: TestClient) -> None:
    from openapi_spec_validator import validate

    spec = client.get("/admin/openapi.json", headers=AUTH).json()
    validate(spec)
    assert set(spec["paths"]) == {
        "/admin/events",
        "/admin/deliveries",
        "/admin/deliveries/{id}",
        "/admin/deliveries/{id}/redrive",
        "/admin/redrive",
    }
    schema = {**spec["components"]["schemas"]["Delivery"], "components": spec["components"]}
    for delivery in client.get("/admin/deliveries", headers=AUTH).json():
        OAS30Validator(schema).validate(delivery)


def test_webhooks_are_refused_with_503_while_stopping(client: TestClient) -> None:
    client.app.state.bridge["stopping"] = True  # type: ignore[attr-defined]
    body = fixture_bytes("invoice.paid.2025.json")
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 503
    assert client.get("/readyz").status_code == 503


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/deliveries/99999999999999999999999", None),
        ("POST", "/admin/deliveries/99999999999999999999999/redrive", None),
        ("POST", "/admin/redrive", {"ids": [10**30]}),
        ("POST", "/admin/redrive", {"ids": [True]}),
        ("POST", "/admin/redrive", {"ids": [0]}),
        ("POST", "/admin/redrive", {"dead": True, "since": 5}),
        ("POST", "/admin/redrive", {"dead": True, "destination": [1]}),
        ("POST", "/admin/redrive", "[" * 100_000),
        ("POST", "/admin/redrive", {"ids": list(range(1, 100_002))}),
        ("GET", "/admin/deliveries?status=bogus", None),
    ],
    ids=[
        "huge id",
        "huge id redriven",
        "huge id in a list",
        "true as an id",
        "zero as an id",
        "since a number",
        "destination a list",
        "nested too deep",
        "too many ids",
        "no such status",
    ],
)
def test_bad_admin_requests_are_400_never_500(
    client: TestClient, method: str, path: str, body: object
) -> None:
    content = body if isinstance(body, str) else None if body is None else json.dumps(body)
    response = client.request(method, path, content=content, headers=AUTH)
    assert response.status_code == 400, response.text
    assert "error" in response.json()


def test_a_caller_gone_before_the_body_ends_is_no_traceback(tmp_path: Path) -> None:
    # an unhandled ClientDisconnect was an "Exception in ASGI application" traceback
    with make_client(tmp_path, TOKEN) as client:
        app = client.app
    headers = [(b"authorization", AUTH["Authorization"].encode())]
    sent = hung_up(app, "/admin/redrive", b'{"ids": [', headers)
    assert sent[0]["status"] == 400
