"""Generic HMAC: configurable header, algorithm, encoding, prefix and timestamp header."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import config as config_module
from bridge.config import ConfigError
from bridge.pipeline import Pipeline
from bridge.sources.base import BadEvent, SignatureError
from tests.sources.support import (
    HMAC_SETTINGS,
    SECRETS,
    end_to_end,
    explain,
    fixture,
    fixture_bytes,
    header_maps,
    json_values,
    make,
    summary,
    write_table,
)

PRIMARY, ROTATED = SECRETS["hmac"]
NOW = 1_739_539_805.0
BODY = fixture_bytes("hmac", "payment.succeeded.json")
SIMPLE = make("hmac", header="X-Signature")  # sha256, hex, no prefix, no timestamp
TIMED = make("hmac", **HMAC_SETTINGS)  # sha512, base64, "v1=" prefix, X-Shop-Timestamp


def simple(body: bytes, secret: str = PRIMARY) -> dict[str, str]:
    return {"X-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def timed(body: bytes, secret: str = PRIMARY, ts: int = int(NOW)) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha512).digest()
    return {
        "X-Shop-Signature": "v1=" + base64.b64encode(digest).decode(),
        "X-Shop-Timestamp": str(ts),
    }


# --- verify -----------------------------------------------------------------------------------


def test_the_defaults_sha256_hex_of_the_body() -> None:
    SIMPLE.verify(BODY, simple(BODY), NOW)
    SIMPLE.verify(BODY, simple(BODY, ROTATED), NOW)
    SIMPLE.verify(BODY, {"x-signature": simple(BODY)["X-Signature"].upper()}, NOW)


def test_sha512_base64_with_a_prefix_over_timestamp_and_body() -> None:
    TIMED.verify(BODY, timed(BODY), NOW)
    TIMED.verify(BODY, timed(BODY, ROTATED), NOW)


@pytest.mark.parametrize(
    ("source", "headers", "body", "reason"),
    [
        (SIMPLE, simple(BODY, "not-ours"), BODY, "no signature matches"),
        (SIMPLE, {}, BODY, "missing X-Signature"),
        (SIMPLE, simple(BODY), BODY.replace(b"59.90", b"5.99"), "no signature matches"),
        (SIMPLE, {"X-Signature": "sha256=" + simple(BODY)["X-Signature"]}, BODY, "unparseable"),
        (TIMED, timed(BODY, "not-ours"), BODY, "no signature matches"),
        (TIMED, timed(BODY, ts=int(NOW) - 301), BODY, "too old"),
        (TIMED, timed(BODY, ts=int(NOW) + 301), BODY, "future"),
        (
            TIMED,
            {"X-Shop-Signature": timed(BODY)["X-Shop-Signature"]},
            BODY,
            "missing X-Shop-Timestamp",
        ),
        (
            TIMED,
            {**timed(BODY), "X-Shop-Timestamp": str(int(NOW) - 1)},
            BODY,
            "no signature matches",
        ),
        (
            TIMED,
            {**timed(BODY), "X-Shop-Signature": timed(BODY)["X-Shop-Signature"][3:]},
            BODY,
            "unparseable",
        ),
        (TIMED, timed(BODY), BODY + b" ", "no signature matches"),
    ],
    ids=[
        "wrong-secret",
        "missing",
        "tampered",
        "unexpected-prefix",
        "timed-wrong-secret",
        "stale",
        "future",
        "missing-timestamp",
        "other-timestamp",
        "missing-prefix",
        "timed-tampered",
    ],
)
def test_bad_signatures_are_refused(
    source: Any, headers: dict[str, str], body: bytes, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        source.verify(body, headers, NOW)


@given(
    body=st.binary(max_size=300),
    headers=header_maps("X-Shop-Signature", "X-Shop-Timestamp", "X-Signature"),
)
def test_random_bodies_and_headers_raise_only_signature_errors(
    body: bytes, headers: dict[str, str]
) -> None:
    for source in (SIMPLE, TIMED):
        with contextlib.suppress(SignatureError):
            source.verify(body, headers, NOW)


@given(
    body=st.binary(max_size=400),
    algorithm=st.sampled_from(["sha256", "sha512"]),
    encoding=st.sampled_from(["hex", "base64"]),
    prefix=st.sampled_from(["", "sha256=", "v1,"]),
    timestamp=st.sampled_from([None, "X-Timestamp"]),
)
def test_a_signature_made_by_sign_verifies_over_any_bytes_in_any_setting(
    body: bytes, algorithm: str, encoding: str, prefix: str, timestamp: str | None
) -> None:
    source = make(
        "hmac",
        header="X-Sig",
        algorithm=algorithm,
        encoding=encoding,
        prefix=prefix,
        timestamp_header=timestamp,
    )
    now = time.time()
    source.verify(body, source.sign(body, now), now)


@given(payload=json_values)
def test_random_json_raises_only_bad_event(payload: Any) -> None:
    try:
        event = SIMPLE.event(payload, {})
    except BadEvent:
        return
    assert event.id and event.type


# --- the settings in the table ----------------------------------------------------------------


def test_the_table_takes_the_hmac_keys_and_refuses_others(tmp_path: Path) -> None:
    loaded = config_module.load(write_table(tmp_path))
    settings = loaded.sources["hmac"]
    assert settings.model_dump(exclude={"signing_secrets"}) == {
        "kind": "hmac",
        "tolerance": 300.0,
        **HMAC_SETTINGS,
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        write_table(tmp_path)
        .read_text()
        .replace(
            '    header: "X-Shop-Signature"', '    header: "X-Shop-Signature"\n    digest: md5'
        )
        .replace('    algorithm: "sha512"', '    algorithm: "md5"')
    )
    with pytest.raises(ConfigError) as error:
        config_module.load(bad)
    lines = error.value.lines()
    assert any("sources.hmac.digest: unknown key" in line for line in lines), lines
    assert any("sources.hmac.algorithm: " in line for line in lines), lines


def test_tolerance_without_a_timestamp_header_is_refused() -> None:
    with pytest.raises(ValueError, match="set timestamp_header too"):
        make("hmac", header="X-Signature", tolerance="60")


# --- events -----------------------------------------------------------------------------------


def test_the_event_type_and_id_come_from_the_body() -> None:
    sale = TIMED.event(
        fixture("hmac", "payment.succeeded.json"), {"X-Shop-Timestamp": "1739539900"}
    )
    refund = TIMED.event(fixture("hmac", "payment.refunded.json"), {})
    assert (sale.type, sale.id, sale.created) == (
        "payment.succeeded",
        "payment.succeeded:pay_81Hc2Lq0",
        1739539900,
    )
    assert (refund.type, refund.id, refund.created) == (
        "payment.refunded",
        "payment.refunded:pay_81Hc2Lq0",
        1739799005,
    )
    assert SIMPLE.event({"event_type": "x.y", "id": 7}, {}).id == "x.y:7"
    untyped = SIMPLE.event({"amount": 1}, {})
    assert untyped.type == "webhook"
    assert untyped.id.startswith("sha256:")
    with pytest.raises(BadEvent):
        SIMPLE.event([1, 2], {})


def test_a_routes_fields_make_the_transaction_with_minor(tmp_path: Path) -> None:
    pipeline = Pipeline(config_module.load(write_table(tmp_path)))
    source = pipeline.sources["hmac"]
    event = source.event(fixture("hmac", "payment.succeeded.json"), {})
    [route] = pipeline.routes_for(event)
    assert summary(pipeline.transaction(route, event)) == {
        "kind": "sale",
        "processor": "custom",
        "event_id": "payment.succeeded:pay_81Hc2Lq0",
        "id": "ord_5521",
        "amount": 5990,
        "currency": "EUR",
        "occurred_at": 1739539805,
        "customer": (None, "user_hm_8", "ines@example.pt", None),
        "refund_id": None,
        "refs": [],
    }


def test_explain_an_hmac_sale_exact_bodies(tmp_path: Path) -> None:
    bodies = explain(tmp_path, "hmac", "payment.succeeded.json")
    assert bodies["dub"] == {
        "customerExternalId": "user_hm_8",
        "amount": 5990,
        "currency": "eur",
        "paymentProcessor": "custom",
        "invoiceId": "ord_5521",
        "customerEmail": "ines@example.pt",
    }
    assert bodies["shop"] == {
        "event_type": "purchase",
        "transaction_id": "ord_5521",
        "revenue": 59.9,
        "currency": "EUR",
        "user_id": "user_hm_8",
    }


def test_end_to_end(tmp_path: Path) -> None:
    end_to_end(
        tmp_path,
        "hmac",
        "payment.succeeded.json",
        "payment.succeeded:pay_81Hc2Lq0",
        "payment.succeeded",
    )
