"""The ecommerce analytics API: ``POST /v1/api/analytics/ecommerce/track``.

Auth ``X-API-Key``. Body ``{event_type: "purchase" | "refund", transaction_id,
revenue, currency, user_id, coupon_code, discount, shipping, tax, items:
[{item_id, item_name, price, quantity}]}`` with every amount in MAJOR units;
``transaction_id`` (the purchase's id, for a refund too) is its dedupe key.
Limit: 1,000 requests a minute; 429 carries ``RateLimit-Reset`` (seconds).
"""

from __future__ import annotations

from bridge.config import EcommerceDestination
from bridge.destinations.common import TemplateDestination


class Ecommerce(TemplateDestination):
    kind = "ecommerce"
    path = "/v1/api/analytics/ecommerce/track"
    required = ("event_type", "transaction_id", "revenue")

    config: EcommerceDestination

    def headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"X-API-Key": key.get_secret_value()} if key else {}
