"""Loopback stand-ins for the four destinations, validating every request against its contract.

A real HTTP server on 127.0.0.1 (a thread). Each request is checked against
the vendor's OpenAPI schema (Dub, Voucherify) or the documented shape (Umami,
the ecommerce API), and its auth headers; a request that breaks the contract
gets the vendor's own 4xx and is recorded as invalid. Tests can queue answers
(status, body, headers, delay) per destination to play outages and rate limits.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator

CONTRACTS = Path(__file__).parent / "contracts"


def _openapi_request_schema(file: str, path: str) -> dict[str, Any]:
    spec = json.loads((CONTRACTS / file).read_text())
    schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**schema, "components": spec.get("components", {})}


UMAMI_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "payload"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["event", "identify"]},
        "payload": {
            "type": "object",
            "required": ["website", "hostname", "url", "name", "data"],
            "properties": {
                "website": {"type": "string", "format": "uuid", "pattern": "^[0-9a-f-]{36}$"},
                "hostname": {"type": "string", "maxLength": 100},
                "url": {"type": "string"},
                "name": {"type": "string", "maxLength": 50},
                "referrer": {"type": "string"},
                "language": {"type": "string", "maxLength": 35},
                "screen": {"type": "string", "maxLength": 11},
                "title": {"type": "string"},
                "id": {"type": "string"},
                "timestamp": {"type": "integer"},
                "data": {
                    "type": "object",
                    "required": ["revenue", "currency"],
                    "properties": {
                        "revenue": {"type": "number", "exclusiveMinimum": 0},
                        "currency": {"type": "string", "maxLength": 10, "pattern": "^[A-Z]{3}$"},
                    },
                },
            },
        },
    },
}

ECOMMERCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_type", "transaction_id", "revenue"],
    "additionalProperties": False,
    "properties": {
        "event_type": {"enum": ["purchase", "refund"]},
        "transaction_id": {"type": "string", "minLength": 1},
        "revenue": {"type": "number"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "user_id": {"type": "string"},
        "coupon_code": {"type": "string"},
        "discount": {"type": "number"},
        "shipping": {"type": "number"},
        "tax": {"type": "number"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "item_id": {"type": "string"},
                    "item_name": {"type": "string"},
                    "price": {"type": "number"},
                    "quantity": {"type": "integer"},
                },
            },
        },
        "properties": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

BOT_AGENTS = ("python-httpx", "curl/", "python-requests", "bot", "(server)")


@dataclass
class Received:
    destination: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    valid: bool
    problem: str | None = None


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Sinks:
    """Start with ``with Sinks() as sinks``; ``sinks.base(name)`` is each destination's base_url."""

    def __init__(
        self,
        dub_key: str = "dub_test_key",
        shop_key: str = "tolk_sec_test",
        voucherify: tuple[str, str] = ("vf-app-id", "vf-app-token"),
    ) -> None:
        self.dub_key, self.shop_key, self.voucherify = dub_key, shop_key, voucherify
        self.received: list[Received] = []
        self.answers: dict[str, deque[Answer]] = defaultdict(deque)
        self.dub_unknown_customers: set[str] = set()
        self.default_delay = 0.0  # seconds before every answer that was not queued
        self._lock = threading.Lock()
        self._validators = {
            "dub": OAS30Validator(_openapi_request_schema("dub.openapi.json", "/track/sale")),
            "voucherify": OAS30Validator(
                _openapi_request_schema("voucherify-events.openapi.json", "/v1/events")
            ),
            "umami": OAS30Validator(UMAMI_SCHEMA),
            "shop": OAS30Validator(ECOMMERCE_SCHEMA),
        }
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Sinks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def base(self, name: str) -> str:
        return f"{self.url}/{name}"

    def queue(self, destination: str, *answers: Answer) -> None:
        with self._lock:
            self.answers[destination].extend(answers)

    def bodies(self, destination: str) -> list[Any]:
        with self._lock:
            return [r.body for r in self.received if r.destination == destination]

    def of(self, destination: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.destination == destination]

    def wait_for(self, count: int, timeout: float = 10.0, destination: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                n = sum(1 for r in self.received if destination in (None, r.destination))
            if n >= count:
                return
            time.sleep(0.01)
        with self._lock:
            n = sum(1 for r in self.received if destination in (None, r.destination))
        raise AssertionError(f"expected {count} requests at the sinks, got {n}")

    # --- the contract of each destination -------------------------------------------------

    def _check(self, destination: str, headers: dict[str, str], body: Any) -> str | None:
        if headers.get("content-type", "").split(";")[0] != "application/json":
            return "Content-Type must be application/json"
        errors = sorted(self._validators[destination].iter_errors(body), key=str)
        if errors:
            first = errors[0]
            return f"schema: {'/'.join(map(str, first.absolute_path))}: {first.message}"
        if destination == "dub":
            if headers.get("authorization") != f"Bearer {self.dub_key}":
                return "unauthorized"
        elif destination == "shop":
            if headers.get("x-api-key") != self.shop_key:
                return "unauthorized"
        elif destination == "voucherify":
            if (headers.get("x-app-id"), headers.get("x-app-token")) != self.voucherify:
                return "unauthorized"
        elif destination == "umami":
            agent = headers.get("user-agent", "").lower()
            if not agent.startswith("mozilla/5.0 (") or any(b in agent for b in BOT_AGENTS):
                return "bot"
        return None

    def _default_answer(self, destination: str, body: Any, problem: str | None) -> Answer:
        if problem == "unauthorized":
            return Answer(401, {"error": {"code": "unauthorized", "message": "Unauthorized"}})
        if problem == "bot":
            return Answer(200, {"beep": "boop"})
        if problem is not None:
            if destination == "dub":
                return Answer(422, {"error": {"code": "unprocessable_entity", "message": problem}})
            if destination == "voucherify":
                return Answer(400, {"code": 400, "key": "invalid_payload", "message": problem})
            if destination == "umami":
                return Answer(
                    400, {"error": {"message": problem, "code": "bad-request", "status": 400}}
                )
            return Answer(400, {"error": problem})
        if destination == "dub":
            if body["customerExternalId"] in self.dub_unknown_customers:
                return Answer(
                    200,
                    {
                        "eventName": body.get("eventName", "Purchase"),
                        "customer": None,
                        "sale": None,
                    },
                )
            return Answer(
                200,
                {
                    "eventName": body.get("eventName", "Purchase"),
                    "customer": {
                        "id": "cus_dub_1",
                        "name": None,
                        "email": None,
                        "avatar": None,
                        "externalId": body["customerExternalId"],
                    },
                    "sale": {
                        "amount": body["amount"],
                        "currency": body.get("currency", "usd"),
                        "paymentProcessor": body.get("paymentProcessor", "custom"),
                        "invoiceId": body.get("invoiceId"),
                        "metadata": None,
                    },
                },
            )
        if destination == "umami":
            return Answer(200, {"cache": "x", "sessionId": "s", "visitId": "v"})
        if destination == "voucherify":
            return Answer(
                200,
                {
                    "object": "event",
                    "type": body["event"],
                    "customer": body["customer"],
                    "referral": body.get("referral"),
                    "loyalty": None,
                    "metadata": body.get("metadata"),
                },
            )
        return Answer(200, {"ok": True})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sinks = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                destination = self.path.strip("/").split("/")[0]
                expected = {
                    "dub": "/dub/track/sale",
                    "umami": "/umami/api/send",
                    "shop": "/shop/v1/api/analytics/ecommerce/track",
                    "voucherify": "/voucherify/v1/events",
                }
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:  # the client died mid-request: nothing was received
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                if expected.get(destination) != self.path:
                    self._send(Answer(404, {"error": "not found"}))
                    return
                try:
                    body = json.loads(raw)
                    problem = sinks._check(destination, headers, body)
                except ValueError:
                    body, problem = raw.decode(errors="replace"), "body is not JSON"
                with sinks._lock:
                    sinks.received.append(
                        Received(
                            destination,
                            self.path,
                            headers,
                            body,
                            time.time(),
                            problem is None,
                            problem,
                        )
                    )
                    queued = (
                        sinks.answers[destination].popleft() if sinks.answers[destination] else None
                    )
                answer = queued or sinks._default_answer(destination, body, problem)
                delay = answer.delay if queued else sinks.default_delay
                if delay:
                    time.sleep(delay)
                self._send(answer)

            def _send(self, answer: Answer) -> None:
                data = (
                    b""
                    if answer.body is None
                    else (
                        answer.body
                        if isinstance(answer.body, bytes)
                        else json.dumps(answer.body).encode()
                    )
                )
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def invoice_key(destination: str, body: Any) -> str:
    """The invoice a delivery of a numbered invoice.paid (tests.conftest.numbered_invoice) is
    about, whatever the destination's body looks like."""
    if destination == "dub":
        return str(body["invoiceId"])
    if destination == "umami":
        return str(body["payload"]["id"]).replace("cus_", "in_")
    if destination == "shop":
        return str(body["transaction_id"])
    return str(body["metadata"]["transaction_id"])
