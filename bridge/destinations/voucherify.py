"""Voucherify: ``POST /v1/events`` (custom events).

Auth ``X-App-Id`` and ``X-App-Token``. Body ``{event, customer: {source_id,
email, name}, referral: {code}, metadata: {amount, currency, transaction_id,
processor}}``; ``event`` must exist in the project's Event Schema, and a
customer is required (a refund whose purchase the bridge never saw gets no
request). Voucherify has no idempotency key: the bridge's ledger is the only
guard against sending an event twice. Limit: 100 requests a minute (Business);
429 carries ``X-Rate-Limit-Retry`` (epoch seconds).
"""

from __future__ import annotations

from bridge.config import VoucherifyDestination
from bridge.destinations.common import TemplateDestination


class Voucherify(TemplateDestination):
    kind = "voucherify"
    path = "/v1/events"
    required = ("event", "customer.source_id")

    config: VoucherifyDestination

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.config.app_id:
            headers["X-App-Id"] = self.config.app_id.get_secret_value()
        if self.config.app_token:
            headers["X-App-Token"] = self.config.app_token.get_secret_value()
        return headers
