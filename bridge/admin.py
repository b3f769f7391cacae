"""The admin API under ``/admin``: events, deliveries, attempts, redrive. JSON only.

Off (404 everywhere) unless a token is configured (``admin.token`` or
``BRIDGE_ADMIN_TOKEN``); every request needs ``Authorization: Bearer <token>``,
compared in constant time (401 otherwise). ``GET /admin/openapi.json`` documents it.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import views
from bridge.config import Config
from bridge.model import Status
from bridge.store.base import Store, StoreUnavailable

MAX_LIMIT = 1000
STATUSES = tuple(str(s) for s in Status)
MAX_IDS = 100_000  # ids one redrive request may name
MAX_ID = 2**63 - 1  # the largest id either store holds (SQLite's INTEGER, PostgreSQL's bigint)


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code)


def _since(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("since must be an ISO 8601 date or time")
    return views.timestamp(value)


def _id(value: object) -> int:
    """A delivery id as the stores hold them; ValueError for anything else (True included)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise ValueError(f"a delivery id is an integer from 1 to {MAX_ID}")
    return value


def routes(config: Config, store: Store) -> list[Route]:
    token = config.admin.token.get_secret_value().encode() if config.admin.token else None
    secrets = config.secrets()

    def guard(request: Request) -> Response | None:
        if token is None:
            return _error(404, "not found")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            return JSONResponse(
                {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return None

    def endpoint(handler: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            refused = guard(request)
            if refused is not None:
                return refused
            try:
                result: Response = await handler(request)
            except StoreUnavailable:
                return _error(503, "storage unavailable")
            except ValueError:
                return _error(400, "bad request: check the query parameters and the JSON body")
            except ClientDisconnect:  # gone before its body's end: no one to answer
                return _error(400, "the body did not arrive")
            return result

        return wrapped

    def _limit(request: Request) -> int:
        return max(1, min(MAX_LIMIT, int(request.query_params.get("limit", "100"))))

    async def list_events(request: Request) -> Response:
        rows = await store.events(_limit(request))
        return JSONResponse(
            [
                {
                    "id": e.pk,
                    "source": e.source,
                    "event_id": e.event_id,
                    "type": e.type,
                    "received_at": views.iso(e.received_at),
                    "deliveries": e.deliveries,
                }
                for e in rows
            ]
        )

    async def list_deliveries(request: Request) -> Response:
        q = request.query_params
        status = q.get("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status is one of {', '.join(STATUSES)}")
        rows = await store.deliveries(
            status=status,
            destination=q.get("destination"),
            since=_since(q.get("since")),
            limit=_limit(request),
        )
        return JSONResponse([views.delivery(d, secrets) for d in rows])

    async def show_delivery(request: Request) -> Response:
        found = await store.get(_id(request.path_params["id"]))
        if found is None:
            return _error(404, "no such delivery")
        return JSONResponse(views.delivery_detail(found[0], found[1], secrets))

    async def redrive_one(request: Request) -> Response:
        done = await store.redrive([_id(request.path_params["id"])], time.time())
        return JSONResponse({"redriven": done})

    async def redrive_many(request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            raise ValueError("the body must be JSON") from None
        if not isinstance(body, dict):
            raise ValueError("the body must be an object")
        ids = body.get("ids") or []
        if not isinstance(ids, list):
            raise ValueError("ids must be a list of integers")
        if len(ids) > MAX_IDS:
            raise ValueError(f"at most {MAX_IDS} ids a request (dead: true takes every dead one)")
        wanted = [_id(i) for i in ids]
        destination = body.get("destination")
        if destination is not None and not isinstance(destination, str):
            raise ValueError("destination must be a destination's name")
        if body.get("dead"):
            rows = await store.deliveries(
                status="dead",
                destination=destination,
                since=_since(body.get("since")),
                limit=1_000_000,
            )
            wanted.extend(d.id for d in rows)
        done = await store.redrive(wanted, time.time()) if wanted else []
        return JSONResponse({"redriven": done, "count": len(done)})

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    return [
        Route("/admin/openapi.json", endpoint(openapi), methods=["GET"]),
        Route("/admin/events", endpoint(list_events), methods=["GET"]),
        Route("/admin/deliveries", endpoint(list_deliveries), methods=["GET"]),
        Route("/admin/deliveries/{id:int}", endpoint(show_delivery), methods=["GET"]),
        Route("/admin/deliveries/{id:int}/redrive", endpoint(redrive_one), methods=["POST"]),
        Route("/admin/redrive", endpoint(redrive_many), methods=["POST"]),
    ]


_DELIVERY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "source": {"type": "string"},
        "event_id": {"type": "string"},
        "event_type": {"type": "string"},
        "destination": {"type": "string"},
        "status": {
            "type": "string",
            "enum": [
                "pending",
                "in_flight",
                "delivered",
                "dry_run",
                "not_recorded",
                "skipped",
                "dead",
            ],
        },
        "attempts": {"type": "integer"},
        "next_at": {"type": "string", "format": "date-time", "nullable": True},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "last_error": {"type": "string", "nullable": True},
    },
}
_ATTEMPT = {
    "type": "object",
    "properties": {
        "started_at": {"type": "string", "format": "date-time"},
        "outcome": {"type": "string"},
        "status_code": {"type": "integer", "nullable": True},
        "latency_ms": {"type": "number"},
        "error": {"type": "string", "nullable": True},
        "response_excerpt": {"type": "string", "nullable": True},
    },
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
}
_ERRORS = {
    "401": {"description": "missing or wrong bearer token"},
    "404": {"description": "the admin API is off (no token configured), or no such object"},
    "503": {"description": "storage unavailable"},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "payment-webhook bridge admin API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Delivery": _DELIVERY,
            "Attempt": _ATTEMPT,
            "DeliveryDetail": {
                "allOf": [
                    {"$ref": "#/components/schemas/Delivery"},
                    {
                        "type": "object",
                        "properties": {
                            "attempts_log": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/Attempt"},
                            }
                        },
                    },
                ]
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/admin/events": {
            "get": {
                "summary": "The newest events, with their deliveries counted by status",
                "parameters": [_LIMIT],
                "responses": {
                    "200": _json({"type": "array", "items": {"type": "object"}}),
                    **_ERRORS,
                },
            }
        },
        "/admin/deliveries": {
            "get": {
                "summary": "Deliveries, newest first",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "destination", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "since",
                        "in": "query",
                        "schema": {"type": "string", "format": "date-time"},
                    },
                    _LIMIT,
                ],
                "responses": {
                    "200": _json(
                        {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}}
                    ),
                    **_ERRORS,
                },
            }
        },
        "/admin/deliveries/{id}": {
            "get": {
                "summary": "One delivery with every attempt",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/DeliveryDetail"}),
                    **_ERRORS,
                },
            }
        },
        "/admin/deliveries/{id}/redrive": {
            "post": {
                "summary": "Make a finished delivery due now (attempts start again)",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "redriven": {"type": "array", "items": {"type": "integer"}}
                            },
                        }
                    ),
                    **_ERRORS,
                },
            }
        },
        "/admin/redrive": {
            "post": {
                "summary": "Redrive deliveries by id, and/or every dead one "
                "(of a destination, since a time)",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "ids": {
                                        "type": "array",
                                        "maxItems": MAX_IDS,
                                        "items": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": MAX_ID,
                                        },
                                    },
                                    "dead": {"type": "boolean"},
                                    "destination": {"type": "string"},
                                    "since": {"type": "string", "format": "date-time"},
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "redriven": {"type": "array", "items": {"type": "integer"}},
                                "count": {"type": "integer"},
                            },
                        }
                    ),
                    "400": {"description": "bad request body"},
                    **_ERRORS,
                },
            }
        },
    },
}
