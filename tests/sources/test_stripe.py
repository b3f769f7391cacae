"""Stripe: the Stripe-Signature header is read strictly before any HMAC is computed."""

from __future__ import annotations

import time

import pytest

from bridge.sources.stripe import _parse

HEX = "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (f"t=1492774577,v1={HEX}", (1492774577, [HEX])),
        (f"t=1492774577, v1={HEX.upper()}, v0=ignored", (1492774577, [HEX.upper()])),
        (f"t=1492774577,v1={HEX},v1={HEX[::-1]}", (1492774577, [HEX, HEX[::-1]])),
        (f"t=1492774577,v1={HEX[:-1]}g", None),  # not hex
        (f"t=1492774577,v1={HEX[:-1]}\uff41", None),  # a full-width "a": not ASCII
        (f"t=1492774577,v1={'a' * 129}", None),  # longer than any digest
        (f"t=1492774577,t=1492774578,v1={HEX}", None),  # two timestamps
        (f"t=\u0661\u0664\u0669,v1={HEX}", None),  # Arabic-Indic digits: isdigit, not ASCII
        ("t=1492774577", None),  # no v1
        (f"v1={HEX}", None),  # no timestamp
    ],
)
def test_the_signature_header_is_parsed_strictly(
    header: str, parsed: tuple[int, list[str]] | None
) -> None:
    assert _parse(header) == parsed


def test_a_checkout_is_counted_when_it_was_paid_not_when_the_session_opened() -> None:
    from tests.sources.support import fixture, make, transaction

    stripe = make("stripe", ("whsec_x",))
    payload = fixture("stripe", "checkout.session.completed.json")
    payload["data"]["object"]["created"] = payload["created"] - 3 * 86400  # opened days before
    assert transaction(stripe, payload).occurred_at == payload["created"]


def test_the_signature_header_is_found_whatever_the_case_of_its_name() -> None:
    # Stripe sends "Stripe-Signature"; HTTP header names are case-insensitive, and the Source
    # protocol takes any Mapping (sign's own headers, a plain dict), as every other source does
    from tests.conftest import SECRET, stripe_headers
    from tests.sources.support import fixture_bytes, make

    stripe = make("stripe", (SECRET,))
    body = fixture_bytes("stripe", "invoice.paid.json")
    now = time.time()
    stripe.verify(body, stripe_headers(body, SECRET, int(now)), now)
    stripe.verify(body, stripe.sign(body, now), now)


def test_the_tolerance_is_checked_against_the_time_verify_is_given() -> None:
    # Stripe's scheme: t= is the signing time; a receiver compares it with its own clock
    # (https://docs.stripe.com/webhooks#replay-attacks). The bridge's clock is `now`: the stripe
    # package must not check it again against time.time()
    from bridge.sources.base import SignatureError
    from tests.conftest import SECRET, stripe_headers
    from tests.sources.support import fixture_bytes, make

    stripe = make("stripe", (SECRET,))
    body = fixture_bytes("stripe", "invoice.paid.json")
    then = 1_700_000_000
    stripe.verify(body, stripe_headers(body, SECRET, then), then + 300)
    with pytest.raises(SignatureError, match="too old"):
        stripe.verify(body, stripe_headers(body, SECRET, then), then + 301)
    with pytest.raises(SignatureError, match="no signature matches"):
        stripe.verify(body, stripe_headers(body, "whsec_not_ours", then), then)
