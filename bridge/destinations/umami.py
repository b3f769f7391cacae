"""Umami: ``POST /api/send`` with a revenue event.

No auth. Body ``{"type": "event", "payload": {website, hostname, url, name,
data: {revenue, currency}, id, timestamp}}``; revenue in MAJOR units and the
currency upper case, both at the top of ``data``; ``timestamp`` keeps the time
of the payment for a late delivery; ``id`` makes the session per customer.

Umami's bot filter answers 200 ``{"beep": "boop"}`` and stores nothing for a
User-Agent that looks like a bot (httpx's, curl's, anything short), so the
bridge sends a full browser User-Agent and treats ``beep`` as a failure. It
can't store zero or negative revenue: refunds are not sent to Umami.
"""

from __future__ import annotations

import httpx

from bridge.config import UmamiDestination
from bridge.destinations.base import Outcome
from bridge.destinations.common import TemplateDestination, classify_status, json_body


class Umami(TemplateDestination):
    kind = "umami"
    path = "/api/send"
    required = ("payload.website", "payload.data.revenue", "payload.data.currency")
    no_refunds = "Umami can't record refunds (revenue must be > 0); refunds are not sent"

    config: UmamiDestination

    def headers(self) -> dict[str, str]:
        return {"User-Agent": self.config.user_agent}

    def classify(self, response: httpx.Response, now: float) -> Outcome:
        outcome = classify_status(response, now)
        if outcome.verdict == "delivered":
            data = json_body(response)
            if isinstance(data, dict) and "beep" in data:
                return Outcome("dead", "Umami dropped the event as a bot ({'beep': 'boop'})")
        return outcome
