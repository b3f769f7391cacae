"""What every HTTP destination shares: body templates, URLs, the generic answer classes."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import httpx

from bridge import __version__, mapping, retry, tableyaml
from bridge.config import DestinationConfig
from bridge.destinations.base import Outcome, Skipped
from bridge.model import ProviderEvent, Transaction

RETRY_STATUSES = frozenset({408, 425, 429})
USER_AGENT = f"payment-webhook-bridge/{__version__}"
EXCERPT = 500


@functools.cache
def templates(kind: str) -> dict[str, Any]:
    """The built-in body templates of a destination kind, by transaction kind."""
    text = resources.files("bridge.defaults").joinpath("destinations.yaml").read_text("utf-8")
    raw = tableyaml.load_table(text).data.get(kind) or {}
    return {txn_kind: mapping.compile_template(body) for txn_kind, body in raw.items()}


class TemplateDestination:
    """A destination whose JSON body comes from ``bridge/defaults/destinations.yaml``."""

    kind = ""
    method = "POST"
    path = ""
    required: tuple[str, ...] = ()
    no_refunds: str | None = None  # why refunds are not sent, for kinds that can't take them

    def __init__(self, name: str, config: DestinationConfig) -> None:
        self.name = name
        self.config = config
        self.url = httpx.URL(config.base_url.rstrip("/") + self.path)  # parsed once
        self._settings = config.settings()
        # the same for every request (they come from the configuration): built once
        self._headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            **self.headers(),
        }

    def body(self, txn: Transaction, event: ProviderEvent) -> dict[str, Any]:
        if txn.kind == "refund" and self.no_refunds:
            raise Skipped(self.no_refunds)
        template = templates(self.kind).get(txn.kind)
        if template is None:
            raise Skipped(f"{self.kind} takes no {txn.kind} events")
        context = {"txn": txn.view(), "event": event.payload, "destination": self._settings}
        body: dict[str, Any] = mapping.render(template, context)
        for path in self.required:
            if _lookup(body, path) is None:
                raise Skipped(f"{self.kind} needs {path}, and this transaction has none")
        return body

    def headers(self) -> dict[str, str]:
        return {}

    def request(self, txn: Transaction, event: ProviderEvent) -> httpx.Request:
        content = json.dumps(mapping.json_ready(self.body(txn, event)), separators=(",", ":"))
        return httpx.Request(self.method, self.url, content=content.encode(), headers=self._headers)

    def classify(self, response: httpx.Response, now: float) -> Outcome:
        return classify_status(response, now)


def classify_status(response: httpx.Response, now: float) -> Outcome:
    """2xx delivered; 408, 425, 429, 5xx retry (with the server's wait); other 4xx dead."""
    status = response.status_code
    if 200 <= status < 300:
        return Outcome("delivered")
    reason = f"HTTP {status}: {excerpt(response)}"
    if status in RETRY_STATUSES or status >= 500:
        return Outcome("retry", reason, retry.server_wait(response.headers, now))
    return Outcome("dead", reason)


def excerpt(response: httpx.Response) -> str:
    """The destination's error text, short: its ``message`` where it has one."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str):
            return message[:EXCERPT]
        if isinstance(error, str):
            return error[:EXCERPT]
    return response.text[:EXCERPT] if response.content else "(empty body)"


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _lookup(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
