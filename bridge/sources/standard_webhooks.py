"""Standard Webhooks (standardwebhooks.com): any sender that follows the spec.

Each delivery carries three headers:

- ``webhook-id``: the message id, the same on every retry (the bridge's dedupe key);
- ``webhook-timestamp``: unix seconds when it was sent (refused outside ``tolerance``,
  300 s by default, in either direction);
- ``webhook-signature``: space-separated ``v1,<base64>`` signatures (several during a
  secret rotation; other versions, such as ``v1a`` asymmetric ones, are ignored).

The signature is HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{raw body}``;
the key is the base64 after the secret's ``whsec_`` prefix. The ``standardwebhooks``
package derives the key and signs; the bridge parses the headers itself, with its
own clock and tolerance, and compares in constant time.

The body is ``{"type": "...", "timestamp": "...", "data": {...}}``. No event type
has a built-in transaction: the table's routes name each one with ``kind:`` and
``fields:`` (``bridge/defaults/standard_webhooks.yaml`` is empty on purpose).
Dub is told ``paymentProcessor: custom``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from standardwebhooks import Webhook

from bridge import mapping, money
from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources import common
from bridge.sources.base import BadEvent, SignatureError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class StandardWebhooksSource:
    kind: ClassVar[str] = "standard_webhooks"
    processor: ClassVar[str] = "custom"
    convention: ClassVar[money.Convention] = "iso"

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self.tolerance = float(config.tolerance)
        self._keys = [Webhook(s.get_secret_value()) for s in config.signing_secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        verify_signed(body, headers, now, self.tolerance, self._keys)

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        return read_event(self.name, payload, headers, "Standard Webhooks")

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        return signed_headers(self._keys[0], body, now)


def verify_signed(
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    tolerance: float,
    keys: Iterable[Webhook],
) -> None:
    """SignatureError unless one ``v1`` signature matches one of ``keys``."""
    msg_id = common.header(headers, ID_HEADER)
    signature = common.header(headers, SIGNATURE_HEADER)
    if not msg_id:
        raise SignatureError("missing webhook-id header")
    if not signature:
        raise SignatureError("missing webhook-signature header")
    if len(msg_id) > common.ID_LIMIT or len(signature) > common.HEADER_LIMIT:
        raise SignatureError("webhook headers too long")
    sent = common.timestamp(
        common.header(headers, TIMESTAMP_HEADER), now, tolerance, "webhook-timestamp header"
    )
    received = _signatures(signature)
    if not received:
        raise SignatureError("unparseable webhook-signature header (no v1 signature)")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None
    at = datetime.fromtimestamp(sent, tz=UTC)
    expected = (_digest(key.sign(msg_id, at, payload)) for key in keys)
    if not common.any_equal(expected, received):
        raise SignatureError("no signature matches a configured signing secret")


def read_event(
    source: str, payload: Any, headers: Mapping[str, str], processor: str
) -> ProviderEvent:
    """``type`` from the body, the id from ``webhook-id`` (derived from the body when absent)."""
    body = common.require_object(payload, processor)
    event_type = common.text_id(body.get("type"))
    if event_type is None:
        raise BadEvent(f"not a {processor} event: no type")
    event_id = common.text_id(common.header(headers, ID_HEADER))
    if event_id is None:  # `bridge explain` reads a file: no headers
        event_id = common.message_id(common.digest_of(body))
    return ProviderEvent(
        source, event_id, event_type, mapping.unix_seconds(body.get("timestamp")), body
    )


def signed_headers(key: Webhook, body: bytes, now: float) -> dict[str, str]:
    """The headers a Standard Webhooks sender adds; the id is derived from the body, so a
    replayed file is one event however often it is sent."""
    sent = int(now)
    msg_id = common.message_id(common.body_digest(body))
    signature = key.sign(
        msg_id, datetime.fromtimestamp(sent, tz=UTC), body.decode("utf-8", "replace")
    )
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(sent),
        SIGNATURE_HEADER: signature,
        "Content-Type": "application/json",
    }


def _signatures(header: str) -> list[bytes]:
    out = []
    for part in header.split():
        version, _, encoded = part.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            out.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def _digest(signature: str) -> bytes:
    return base64.b64decode(signature.partition(",")[2])
