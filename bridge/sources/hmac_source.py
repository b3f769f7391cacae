"""Generic HMAC webhooks: any sender that signs its body with a shared secret.

What is signed and how it travels is configured per source:

- ``header``: the header that carries the signature (``X-Signature``, ...);
- ``algorithm``: ``sha256`` (default) or ``sha512``;
- ``encoding``: ``hex`` (default, either case) or ``base64``;
- ``prefix``: text before the digest in the header, e.g. ``sha256=`` (GitHub style);
- ``timestamp_header``: when set, the header with the unix seconds of sending;
  the signed bytes are then ``{timestamp}.{raw body}`` and a timestamp outside
  ``tolerance`` (300 s by default) is refused. Without it the raw body alone is
  signed and there is no replay window.

The key is each ``signing_secrets`` entry's UTF-8 bytes; any of them may match.

The body must be a JSON object. Its event type is the first string among
``type``, ``event_type`` and ``event`` (``webhook`` when there is none); its id
is ``<type>:<id>`` when the body has an ``id`` (so an object's paid and refunded
events stay apart), else a digest of the body. No event type has a built-in
transaction: the table's routes name each one with ``kind:`` and ``fields:``.
Dub is told ``paymentProcessor: custom``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

from bridge import money
from bridge.config import HmacSource as HmacConfig
from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources import common
from bridge.sources.base import SignatureError

TYPE_KEYS = ("type", "event_type", "event")
DEFAULT_TYPE = "webhook"


class HmacSource:
    kind: ClassVar[str] = "hmac"
    processor: ClassVar[str] = "custom"
    convention: ClassVar[money.Convention] = "iso"

    def __init__(self, name: str, config: SourceConfig) -> None:
        if not isinstance(config, HmacConfig):
            raise TypeError("an hmac source needs its own settings (header, algorithm, ...)")
        self.name = name
        self.tolerance = float(config.tolerance)
        self.header = config.header
        self.algorithm = config.algorithm
        self.encoding = config.encoding
        self.prefix = config.prefix
        self.timestamp_header = config.timestamp_header
        self._keys = [s.get_secret_value().encode() for s in config.signing_secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = common.header(headers, self.header)
        if not value:
            raise SignatureError(f"missing {self.header} header")
        if len(value) > common.HEADER_LIMIT:
            raise SignatureError(f"{self.header} header too long")
        signed = body
        if self.timestamp_header is not None:
            sent = common.timestamp(
                common.header(headers, self.timestamp_header),
                now,
                self.tolerance,
                f"{self.timestamp_header} header",
            )
            signed = f"{sent}.".encode() + body
        received = self._decode(value.strip())
        if received is None:
            raise SignatureError(f"unparseable {self.header} header")
        expected = (hmac.new(key, signed, self.algorithm).digest() for key in self._keys)
        if not common.any_equal(expected, [received]):
            raise SignatureError("no signature matches a configured signing secret")

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        body = common.require_object(payload, "JSON")
        event_type = DEFAULT_TYPE
        for key in TYPE_KEYS:
            value = body.get(key)
            if isinstance(value, str) and common.text_id(value) is not None:
                event_type = value
                break
        object_id = common.text_id(body.get("id"), numbers=True)
        if object_id is not None and len(event_type) + len(object_id) < common.ID_LIMIT:
            event_id = f"{event_type}:{object_id}"
        else:
            event_id = "sha256:" + common.digest_of(body).hex()
        created = None
        if self.timestamp_header is not None:
            sent = common.header(headers, self.timestamp_header)
            if sent is not None and sent.isascii() and sent.isdigit() and len(sent) <= 11:
                created = int(sent)
        if created is None:
            raw = body.get("created")
            if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw < 10**11:
                created = raw
        return ProviderEvent(self.name, event_id, event_type, created, body)

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        signed = body
        if self.timestamp_header is not None:
            sent = str(int(now))
            headers[self.timestamp_header] = sent
            signed = sent.encode() + b"." + body
        digest = hmac.new(self._keys[0], signed, self.algorithm).digest()
        encoded = digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode()
        headers[self.header] = self.prefix + encoded
        return headers

    def _decode(self, value: str) -> bytes | None:
        if self.prefix:
            if not value.startswith(self.prefix):
                return None
            value = value[len(self.prefix) :]
        try:
            if self.encoding == "hex":
                return bytes.fromhex(value)
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
