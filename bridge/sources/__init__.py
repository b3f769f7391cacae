"""Processors the bridge receives from. A new one is a module here plus a line below."""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources

from bridge import mapping, tableyaml
from bridge.config import SourceConfig
from bridge.sources.base import BadEvent, SignatureError, Source
from bridge.sources.hmac_source import HmacSource
from bridge.sources.lemonsqueezy import LemonSqueezySource
from bridge.sources.paddle import PaddleSource
from bridge.sources.polar import PolarSource
from bridge.sources.revenuecat import RevenueCatSource
from bridge.sources.shopify import ShopifySource
from bridge.sources.standard_webhooks import StandardWebhooksSource
from bridge.sources.stripe import StripeSource

SOURCES: dict[str, Callable[[str, SourceConfig], Source]] = {
    "stripe": StripeSource,
    "paddle": PaddleSource,
    "polar": PolarSource,
    "lemonsqueezy": LemonSqueezySource,
    "shopify": ShopifySource,
    "revenuecat": RevenueCatSource,
    "standard_webhooks": StandardWebhooksSource,
    "hmac": HmacSource,
}

__all__ = ["SOURCES", "BadEvent", "SignatureError", "Source", "create", "rules"]


def create(name: str, config: SourceConfig) -> Source:
    return SOURCES[config.kind](name, config)


@functools.cache
def rules(kind: str) -> dict[str, mapping.TransactionRule]:
    """The built-in transaction rules of a processor, from ``bridge/defaults/<kind>.yaml``."""
    text = resources.files("bridge.defaults").joinpath(f"{kind}.yaml").read_text("utf-8")
    data = tableyaml.load_table(text).data
    out: dict[str, mapping.TransactionRule] = {}
    for event_type, raw in data["events"].items():
        skips = tuple(
            mapping.Skip(mapping.compile_expression(s["when"]), s["reason"])
            for s in raw.get("skip") or []
        )
        fields = {name: mapping.compile_expression(expr) for name, expr in raw["fields"].items()}
        cumulative = str(raw.get("cumulative", "false")).lower() == "true"
        out[event_type] = mapping.TransactionRule(raw["kind"], fields, skips, cumulative)
    return out
