"""The apps the bridge is measured against, and a fast loopback sink. Each runs as its own process:

python -m bench.apps verify-only PORT SECRET    # the ceiling: verify + json.loads + 200
python -m bench.apps handwritten PORT SECRET SINK_URL  # Stripe-sample style: verify, then
                                                # call the four destinations synchronously
python -m bench.apps sink PORT DELAY_SECONDS    # answers every destination at once (or late)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, ClassVar

import httptools
import httpx
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def verify_only(secret: str) -> Starlette:
    async def webhook(request: Request) -> Response:
        body = await request.body()
        try:
            stripe.WebhookSignature.verify_header(
                body.decode(), request.headers.get("stripe-signature", ""), secret, 300
            )
        except stripe.SignatureVerificationError:
            return JSONResponse({"error": "signature"}, status_code=400)
        json.loads(body)
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhooks/stripe", webhook, methods=["POST"])])


def handwritten(secret: str, sink: str) -> Starlette:
    """What users write instead: verify, then call each destination before answering."""
    client = httpx.AsyncClient(timeout=30)

    async def webhook(request: Request) -> Response:
        body = await request.body()
        try:
            stripe.WebhookSignature.verify_header(
                body.decode(), request.headers.get("stripe-signature", ""), secret, 300
            )
        except stripe.SignatureVerificationError:
            return JSONResponse({"error": "signature"}, status_code=400)
        event = json.loads(body)
        invoice = event["data"]["object"]
        for path, payload in (
            (
                "/dub/track/sale",
                {"customerExternalId": invoice["customer"], "amount": invoice["amount_paid"]},
            ),
            ("/umami/api/send", {"type": "event", "payload": {"name": "revenue"}}),
            ("/shop/v1/api/analytics/ecommerce/track", {"event_type": "purchase"}),
            ("/voucherify/v1/events", {"event": "payment_succeeded"}),
        ):
            await client.post(sink + path, json=payload)
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhooks/stripe", webhook, methods=["POST"])])


class Sink(asyncio.Protocol):
    """A loopback stand-in for all four destinations that answers at once (or after DELAY):
    httptools parses, nothing else runs, so the bench measures the bridge and not its sink.
    Records when each Dub invoiceId arrived; GET /stats reads them, POST /reset clears them."""

    arrivals: ClassVar[dict[str, list[float]]] = {}
    count: ClassVar[list[int]] = [0]
    delay: ClassVar[float] = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = bytearray()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        path, body = self.url.decode(), bytes(self.body)
        self.url, self.body = b"", bytearray()
        method = self.parser.get_method()
        if path == "/stats":
            answer = json.dumps({"count": Sink.count[0], "arrivals": Sink.arrivals}).encode()
        elif path == "/reset" and method == b"POST":
            Sink.arrivals.clear()
            Sink.count[0] = 0
            answer = b'{"ok":true}'
        else:
            Sink.count[0] += 1
            if path.endswith("/track/sale"):
                mark = json.loads(body).get("invoiceId")
                if mark:
                    Sink.arrivals.setdefault(str(mark), []).append(time.time())
            answer = _ANSWERS.get(path.rsplit("/", 2)[-1], b'{"ok":true}')
        response = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(answer)).encode()
            + b"\r\n\r\n"
            + answer
        )
        if Sink.delay and path not in ("/stats", "/reset"):
            asyncio.get_running_loop().call_later(Sink.delay, self._write, response)
        else:
            self._write(response)

    def _write(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)


_ANSWERS = {
    "sale": b'{"eventName":"x","customer":{"id":"c"},"sale":{"amount":1}}',
    "send": b'{"cache":"c","sessionId":"s","visitId":"v"}',
}


async def serve_sink(port: int, delay: float) -> None:
    Sink.delay = delay
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def _mark(path: str, body: Any) -> str | None:
    """The invoice id a delivery is about (Dub's invoiceId)."""
    if path.endswith("/track/sale") and isinstance(body, dict):
        value = body.get("invoiceId")
        return str(value) if value else None
    return None


def main(argv: list[str]) -> None:
    kind, port = argv[1], int(argv[2])
    if kind == "verify-only":
        app = verify_only(argv[3])
    elif kind == "handwritten":
        app = handwritten(argv[3], argv[4])
    elif kind == "sink":
        asyncio.run(serve_sink(port, float(argv[3])))
        return
    else:
        raise SystemExit(__doc__)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv)
