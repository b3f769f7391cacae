"""What `bridge replay` sends: each source's ``sign`` makes headers its own ``verify`` accepts,
over any body. Random requests and random JSON against every source kind are in
tests/robustness/test_properties.py; RevenueCat and generic HMAC have their own sign tests."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.sources.support import make

BINARY = ("paddle", "lemonsqueezy", "shopify")
TEXT = ("polar", "standard_webhooks")  # signed as text: their bodies are UTF-8


@pytest.mark.parametrize("kind", BINARY + TEXT)
@given(data=st.data())
def test_a_signature_made_by_sign_verifies_over_any_body(kind: str, data: st.DataObject) -> None:
    bodies = st.binary(max_size=500) if kind in BINARY else st.text(max_size=300).map(str.encode)
    body = data.draw(bodies)
    source = make(kind)
    now = time.time()
    source.verify(body, source.sign(body, now), now)
