"""The Destination protocol: build the request for a transaction, classify the answer.

Sending is the worker's job; a destination never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import httpx

from bridge.model import ProviderEvent, Transaction

Verdict = Literal["delivered", "retry", "dead", "not_recorded"]


class Skipped(ValueError):
    """This destination gets no request for this transaction (the reason says why)."""


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str | None = None
    retry_after: float | None = None  # what the server asked for, in seconds


class Destination(Protocol):
    kind: ClassVar[str]
    name: str

    def request(self, txn: Transaction, event: ProviderEvent) -> httpx.Request:
        """The HTTP request for ``txn``; Skipped when it can't or shouldn't be sent."""

    def content(self, txn: Transaction, event: ProviderEvent) -> bytes:
        """The request's body, as sent; Skipped as for ``request``."""

    def sending(self, body: bytes) -> httpx.Request:
        """The request that sends ``body``, from ``content``, perhaps built elsewhere."""

    def classify(self, response: httpx.Response, now: float) -> Outcome:
        """Delivered, retry later, dead, or (Dub) not recorded."""

    def body(self, txn: Transaction, event: ProviderEvent) -> dict[str, Any]:
        """The JSON body alone (for ``explain`` and tests)."""
