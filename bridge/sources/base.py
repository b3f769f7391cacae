"""The Source protocol: verify a processor's webhook, read its event, sign one for replay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from bridge import money
from bridge.model import ProviderEvent


class SignatureError(ValueError):
    """The webhook is not signed by a configured secret (400, nothing stored)."""


class BadEvent(ValueError):
    """The body is signed but is not an event of this processor (400, nothing stored)."""


class Source(Protocol):
    kind: ClassVar[str]
    processor: ClassVar[str]  # the name destinations are told (Dub's paymentProcessor)
    convention: ClassVar[money.Convention]
    name: str

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        """Raise SignatureError unless ``body`` is signed by one of the source's secrets."""

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        """The processor's event id, type and time; BadEvent when the body is not an event."""

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        """The headers the processor would send with ``body`` (first secret, fresh timestamp)."""
