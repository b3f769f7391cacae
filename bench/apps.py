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
from typing import Any

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


def sink(delay: float) -> Starlette:
    """Answers like each destination; records when each event id arrived (GET /stats)."""
    arrivals: dict[str, list[float]] = {}
    count = {"n": 0}

    async def receive(request: Request) -> Response:
        body = await request.json()
        count["n"] += 1
        mark = _mark(request.url.path, body)
        if mark:
            arrivals.setdefault(mark, []).append(time.time())
        if delay:
            await asyncio.sleep(delay)
        if request.url.path.endswith("/track/sale"):
            return JSONResponse({"eventName": "x", "customer": {"id": "c"}, "sale": {"amount": 1}})
        if request.url.path.endswith("/api/send"):
            return JSONResponse({"cache": "c", "sessionId": "s", "visitId": "v"})
        return JSONResponse({"ok": True})

    async def stats(request: Request) -> Response:
        return JSONResponse({"count": count["n"], "arrivals": arrivals})

    async def reset(request: Request) -> Response:
        arrivals.clear()
        count["n"] = 0
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/stats", stats, methods=["GET"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/{path:path}", receive, methods=["POST"]),
        ]
    )


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
        app = sink(float(argv[3]))
    else:
        raise SystemExit(__doc__)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv)
