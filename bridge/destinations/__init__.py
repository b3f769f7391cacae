"""Where the bridge delivers. A new one is a module here plus a line below."""

from __future__ import annotations

from bridge.config import DestinationConfig
from bridge.destinations.base import Destination, Outcome, Skipped
from bridge.destinations.common import TemplateDestination
from bridge.destinations.dub import Dub
from bridge.destinations.ecommerce import Ecommerce
from bridge.destinations.umami import Umami
from bridge.destinations.voucherify import Voucherify

DESTINATIONS: dict[str, type[TemplateDestination]] = {
    "dub": Dub,
    "umami": Umami,
    "ecommerce": Ecommerce,
    "voucherify": Voucherify,
}

__all__ = ["DESTINATIONS", "Destination", "Outcome", "Skipped", "create"]


def create(name: str, config: DestinationConfig) -> TemplateDestination:
    return DESTINATIONS[config.kind](name, config)
