"""Secrets are masked whole, in log lines and wherever the bridge shows text."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

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


def _lines(fmt: str, secrets: list[str], emit: Callable[[Any], None]) -> str:
    """What ``emit`` logs, in ``fmt``, with ``secrets`` configured."""
    stream = io.StringIO()
    saved = sys.stderr
    sys.stderr = stream
    try:
        bridge_logging.configure(fmt)
        bridge_logging.set_secrets(secrets)
        emit(structlog.get_logger("t"))
    finally:
        sys.stderr = saved
        bridge_logging.set_secrets([])
        bridge_logging.configure("json")
    return stream.getvalue()


def test_log_lines_mask_every_configured_secret_at_any_depth() -> None:
    def emit(log: Any) -> None:
        log.info("sent whsec_123456", headers={"x": ["Bearer whsec_123"]}, n=1)

    text = _lines("json", ["whsec_123", "whsec_123456"], emit)
    line = json.loads(text)
    assert line["event"] == "sent ***"
    assert line["headers"] == {"x": ["Bearer ***"]}
    assert "whsec" not in text


class _Holder:
    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"<Holder {self.secret}>"


# a secret with characters that JSON and repr escape: a quote, a backslash, non-ASCII, a tab
AWKWARD = 'sk_"qu\\ot\u00e9d\t_secret'


def test_secrets_are_masked_in_keys_reprs_and_tracebacks_too() -> None:
    def emit(log: Any) -> None:
        log.info("one", **{"key_whsec_99": 1}, obj=_Holder("whsec_99"))
        try:
            raise RuntimeError("failed with whsec_99 in the message")
        except RuntimeError:
            log.exception("two")

    text = _lines("json", ["whsec_99"], emit)
    assert "whsec_99" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["key_***"] == 1 and first["obj"] == "<Holder ***>"
    assert "failed with *** in the message" in second["exception"]


def test_secrets_are_masked_however_the_renderer_escapes_them() -> None:
    def emit(log: Any) -> None:
        log.info(f"a {AWKWARD} b", nested={"list": [f"x{AWKWARD}y"]}, obj=_Holder(AWKWARD))

    text = _lines("json", [AWKWARD], emit)
    line = json.loads(text)
    assert line["event"] == "a *** b"
    assert line["nested"] == {"list": ["x***y"]}
    assert "qu" not in text and "\\u00e9" not in text
    console = _lines("console", [AWKWARD], emit)
    assert "qu" not in console and "\u00e9" not in console and "***" in console


def test_a_secret_in_a_repr_inside_a_rendered_line_is_masked_too() -> None:
    """A traceback's ``KeyError: '...'``, an exception's text or a dataclass's ``repr`` hold
    the secret ``repr``-escaped, and the renderer escapes that again (JSON, or ``repr`` of a
    list in the console): a secret with a backslash, a tab or both quotes was left whole."""

    @dataclasses.dataclass
    class Held:
        secret: str

    def emit(log: Any) -> None:
        log.info("one", obj=Held(AWKWARD), reasons=[f"refused {AWKWARD!r}"])
        empty: dict[str, str] = {}
        try:
            empty[AWKWARD]
        except KeyError:
            log.exception("two")

    for fmt in ("json", "console"):
        text = _lines(fmt, [AWKWARD], emit)
        assert "qu" not in text and "***" in text, text


def test_other_libraries_lines_are_rendered_and_masked_like_the_bridges_own() -> None:
    """uvicorn's and the libraries' warnings go through the standard logging module: in JSON
    they are JSON lines too (a log shipper parses every line), and masked like every line."""

    def emit(log: Any) -> None:
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        logging.getLogger("psycopg.pool").warning("error connecting: password whsec_77 refused")

    text = _lines("json", ["whsec_77"], emit)
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["event"] == "Invalid HTTP request received." and first["level"] == "warning"
    assert second["event"] == "error connecting: password *** refused"
