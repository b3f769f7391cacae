"""structlog set-up: JSON in production, readable in a terminal; secrets never printed.

Redaction is the last processor, on the rendered line: every configured secret
(signing secrets, API keys, the admin token) is replaced by ``***`` wherever it
appears, as it is or escaped as the renderer writes it (JSON's and ``repr``'s
escapes, once or twice), in a value, a key, a traceback or the ``repr`` of an object: one
substitution per line, whatever the line holds.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog
from structlog.typing import WrappedLogger

_SECRETS: re.Pattern[str] | None = None  # what every log line is scrubbed of
_FORMS: tuple[str, ...] = ()  # ... as plain strings: a line that holds none needs no regex


@functools.lru_cache(maxsize=16)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    # longest first, so that a secret inside another is masked whole
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def mask(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    pattern = _pattern(secrets)
    return pattern.sub("***", text) if pattern is not None else text


CUT = 4  # a secret's first characters, this many or more, ending a text that was cut


def mask_cut(text: str, secrets: tuple[str, ...]) -> str:
    """``mask``, and a secret's beginning at the end of ``text`` too: a text cut to a length
    (a destination's words) can end inside a secret, where no mask of the whole one finds it."""
    text = mask(text, secrets)
    cut = 0  # the longest beginning of a secret (CUT or more characters, not all) ending text
    for secret in secrets:
        at = text.find(secret[:CUT], max(len(text) - len(secret) + 1, 0))
        while at != -1 and len(secret) > CUT:
            if secret.startswith(text[at:]):  # the earliest such place is the longest
                cut = max(cut, len(text) - at)
                break
            at = text.find(secret[:CUT], at + 1)
    return text[:-cut] + "***" if cut else text


def set_secrets(secrets: Iterable[str]) -> None:
    """Mask these in every log line."""
    global _SECRETS, _FORMS
    _FORMS = tuple({form for secret in secrets for form in _forms(secret) if form})
    _SECRETS = _pattern(_FORMS)


def _escaped(text: str) -> set[str]:
    return {
        text,
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text)[1:-1],
    }


def _forms(secret: str) -> set[str]:
    """How ``secret`` can be written in a rendered line: as it is, JSON-escaped (ASCII-only or
    not) and ``repr``-escaped, once or twice (a ``repr`` inside a value the renderer escapes
    again: a traceback's ``KeyError: '...'``, a dataclass, a list in the console). Escaping is
    per character, so a secret inside a longer value is escaped exactly as it is alone."""
    return {twice for once in _escaped(secret) for twice in _escaped(once)}


def redact_line(_logger: WrappedLogger, _method: str, line: Any) -> str:
    """The rendered line, every secret in it masked (the renderer's str output, the logger's
    input; structlog types a processor's input as a dict, hence ``Any``)."""
    text: str = line
    # a substring search per form is a fraction of the regex's scan, and most lines hold none
    if _SECRETS is None or not any(form in text for form in _FORMS):
        return text
    return _SECRETS.sub("***", text)


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _Lines:
    """structlog's logger: each rendered line, one write to whatever ``sys.stderr`` is then
    (line-buffered: the write flushes it)."""

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _fallback(value: Any) -> Any:
    """What JSON cannot write: the value's own ``__structlog__()``, else its ``repr``."""
    own = getattr(value, "__structlog__", None)
    return own() if callable(own) else repr(value)


# the JSON renderer's encoder, made once (``json.dumps`` with options makes one a line)
_encode = json.JSONEncoder(default=_fallback).encode


def _dumps(value: Any, **_options: Any) -> str:
    return _encode(value)


def configure(fmt: str = "auto", level: str = "info") -> None:
    """``fmt``: ``json``, ``console``, or ``auto`` (console on a terminal, else JSON)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    printer = _Lines()
    before: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    after: list[Any] = [
        renderer,
        redact_line,  # the whole rendered line: values, keys, tracebacks, reprs
    ]
    threshold = logging.getLevelNamesMapping()[level.upper()]
    # the standard logging module's lines (uvicorn's, the libraries' warnings) the same way
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=before,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *after],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(threshold, logging.WARNING))
    structlog.configure(
        processors=[*before, *after],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # one printer for every logger: a bound logger is made for each line (loggers are not
        # cached, so that configure() applies to loggers already used), a printer need not be
        logger_factory=lambda *args: printer,
        cache_logger_on_first_use=False,
    )
