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
        # the same for every request (they come from the configuration): built once, Host
        # included (a request built from a stream gets no headers added by httpx)
        self._headers = httpx.Headers(
            {
                "Host": self.url.netloc.decode("ascii"),
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Accept-Encoding": "identity",
                **self.headers(),
            }
        )

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
        return self.sending(self.content(txn, event))

    def content(self, txn: Transaction, event: ProviderEvent) -> bytes:
        """The request's body, as sent."""
        body = mapping.json_ready(self.body(txn, event))
        return json.dumps(body, separators=(",", ":")).encode()

    def sending(self, body: bytes) -> httpx.Request:
        """The request that sends ``body`` (from ``content``) to this destination."""
        headers = self._headers.copy()
        headers["Content-Length"] = str(len(body))
        # from a stream: httpx takes the headers as they are, without normalizing them again
        request = httpx.Request(
            self.method, self.url, headers=headers, stream=httpx.ByteStream(body)
        )
        request.read()  # the body is in memory: request.content is there for every transport
        return request

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
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str):
            return message[:EXCERPT]
        if isinstance(error, str):
            return error[:EXCERPT]
    return text(response) if response.content else "(empty body)"


def text(response: httpx.Response, limit: int = EXCERPT) -> str:
    """The answer's first ``limit`` characters, in its declared charset, else UTF-8 (as httpx
    reads it), undecodable bytes replaced. ``response.text`` would parse the Content-Type with
    the email package on every answer, to find a charset that answers seldom declare."""
    head = response.content[: limit * 4]  # a character takes at most 4 bytes
    declared = "charset" in response.headers.get("content-type", "").lower()
    encoding = (response.charset_encoding if declared else None) or "utf-8"
    try:
        return head.decode(encoding, errors="replace")[:limit]
    except LookupError:  # a charset Python does not know
        return head.decode("utf-8", errors="replace")[:limit]


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        return None


def _lookup(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
