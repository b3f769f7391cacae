"""Secrets are masked whole, in log lines and wherever the bridge shows text."""

from __future__ import annotations

import io
import json
import sys

import structlog

from bridge import logging as bridge_logging
from bridge.logging import mask


def test_a_secret_inside_another_is_masked_whole_in_either_order() -> None:
    text = "key=sk_live_abcdef short=sk_live_abc"
    for secrets in (("sk_live_abc", "sk_live_abcdef"), ("sk_live_abcdef", "sk_live_abc")):
        assert mask(text, secrets) == "key=*** short=***"
    assert mask(text, ()) == text
    assert mask(text, ("",)) == text
    assert mask("a.b*c", ("b*",)) == "a.***c"  # regex characters are literal


def test_log_lines_mask_every_configured_secret_at_any_depth() -> None:
    stream = io.StringIO()
    saved = sys.stderr
    sys.stderr = stream
    try:
        bridge_logging.configure("json")
        bridge_logging.set_secrets(["whsec_123", "whsec_123456"])
        structlog.get_logger("t").info(
            "sent whsec_123456", headers={"x": ["Bearer whsec_123"]}, n=1
        )
    finally:
        sys.stderr = saved
        bridge_logging.set_secrets([])
    line = json.loads(stream.getvalue())
    assert line["event"] == "sent ***"
    assert line["headers"] == {"x": ["Bearer ***"]}
    assert "whsec" not in stream.getvalue()
