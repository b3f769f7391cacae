"""What the processors' adapters share: headers, HMAC comparison, timestamps, derived ids."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from bridge.sources.base import BadEvent, SignatureError

log = structlog.get_logger("bridge.sources")

HEADER_LIMIT = 4096  # longer signature headers are refused before any work
ID_LIMIT = 255


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name (Starlette's headers or a plain dict)."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == wanted:
                return candidate
    return value


def any_equal(expected: Iterable[bytes], received: Iterable[bytes]) -> bool:
    """Whether any received digest equals any expected one, compared in constant time."""
    received = list(received)
    for digest in expected:
        for candidate in received:
            if hmac.compare_digest(digest, candidate):
                return True
    return False


def timestamp(value: str | None, now: float, tolerance: float, name: str) -> int:
    """A signature's unix timestamp, refused when unparseable or outside ``now ± tolerance``."""
    if value is None:
        raise SignatureError(f"missing {name}")
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 11:
        raise SignatureError(f"unparseable {name}")
    seconds = int(value)
    if seconds > now + tolerance:
        raise SignatureError("timestamp is in the future, outside the tolerance")
    if seconds < now - tolerance:
        raise SignatureError("timestamp outside the tolerance (too old)")
    return seconds


def once_key(what: str, value: object, state: str) -> str | None:
    """The event key of one thing in one state (``refund:re_1:succeeded``), whichever of the
    processor's events tell of it, so that it counts once; None without a usable id (the key
    must fit the store's 255 characters)."""
    ident = text_id(value)
    return f"{what}:{ident}:{state}" if ident is not None and len(ident) < 200 else None


def text_id(value: object, numbers: bool = False) -> str | None:
    """An id or type as the store keeps it: a non-empty string of at most 255 characters
    (a whole number's digits too when ``numbers``)."""
    kinds = (str, int) if numbers else (str,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        return None
    text = str(value)
    return text if 0 < len(text) <= ID_LIMIT else None


def require_object(payload: Any, processor: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadEvent(f"not a {processor} event: the body is not a JSON object")
    return payload


def digest_of(payload: Any) -> bytes:
    """SHA-256 of the payload's canonical JSON: equal for equal events, however they were spaced."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()


def body_digest(body: bytes) -> bytes:
    """``digest_of`` the body's JSON; of its raw bytes when it is not JSON."""
    try:
        return digest_of(json.loads(body))
    except (ValueError, RecursionError):
        return hashlib.sha256(body).digest()


def message_id(digest: bytes) -> str:
    """A Standard Webhooks style id (``msg_...``) derived from an event's digest."""
    return "msg_" + digest.hex()[:32]


def uuid_id(digest: bytes) -> str:
    """A UUID-shaped id derived from an event's digest."""
    return str(uuid.UUID(bytes=digest[:16]))
