"""The hostile request corpus, as data: for each source kind, every way a request can be wrong.

One table has a source of every kind, named after its kind (``/webhooks/stripe``, ...). Each
``Case`` knows what the bridge must answer (DESIGN.md's "Bad input" table) and builds its
request when it is sent (timestamps are fresh, Paddle's tolerance is 5 s). Signatures are made
here, independently of the bridge's own ``sign``, from each processor's documented scheme.

Every input carries ``MARK``: no answer may echo it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import OLD_SECRET, SECRET
from tests.sources.support import HMAC_SETTINGS
from tests.sources.support import SECRETS as KIND_SECRETS

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "fixtures"
MARK = b"ECHO-PROBE-5f1e"
MAX_BODY = 1024 * 1024
MAX_DEPTH = 64

Headers = list[tuple[bytes, bytes]]

KINDS = (
    "stripe",
    "paddle",
    "polar",
    "lemonsqueezy",
    "shopify",
    "revenuecat",
    "standard_webhooks",
    "hmac",
)
SECRETS: dict[str, tuple[str, str]] = {"stripe": (SECRET, OLD_SECRET), **KIND_SECRETS}
TOLERANCE = {"stripe": 300, "paddle": 5, "polar": 300, "standard_webhooks": 300, "hmac": 300}
TIMED = tuple(TOLERANCE)
# the kinds whose signature is over the body as text: a body that is not UTF-8 fails to verify
TEXT_SIGNED = ("stripe", "polar", "standard_webhooks")
SIGNATURE_HEADER = {
    "stripe": "Stripe-Signature",
    "paddle": "Paddle-Signature",
    "polar": "webhook-signature",
    "lemonsqueezy": "X-Signature",
    "shopify": "X-Shopify-Hmac-Sha256",
    "revenuecat": "Authorization",
    "standard_webhooks": "webhook-signature",
    "hmac": HMAC_SETTINGS["header"],
}
FIXTURE = {
    "stripe": "stripe/invoice.paid.json",
    "paddle": "paddle/transaction.completed.json",
    "polar": "polar/order.paid.json",
    "lemonsqueezy": "lemonsqueezy/order_created.json",
    "shopify": "shopify/orders_paid.json",
    "revenuecat": "revenuecat/INITIAL_PURCHASE.json",
    "standard_webhooks": "standard_webhooks/invoice.paid.json",
    "hmac": "hmac/payment.succeeded.json",
}
# destination secrets (the Sinks' defaults)
KEYS = {
    "DUB_KEY": "dub_test_key",
    "SHOP_KEY": "tolk_sec_test",
    "VF_ID": "vf-app-id",
    "VF_TOKEN": "vf-app-token",
}

# --- the table ---------------------------------------------------------------------------------

ROUTES = """
  - from: stripe/invoice.paid
    to: [dub, umami, shop, voucherify]
  - from: stripe/checkout.session.completed
    to: [dub, umami, shop, voucherify]
  - from: stripe/charge.refunded
    to: [shop, voucherify]
  - from: stripe/refund.created
    to: [shop, voucherify]
  - from: paddle/transaction.completed
    to: [dub, umami, shop, voucherify]
  - from: paddle/adjustment.*
    to: [shop, voucherify]
  - from: polar/order.paid
    to: [dub, umami, shop, voucherify]
  - from: polar/refund.*
    to: [shop, voucherify]
  - from: lemonsqueezy/order_created
    to: [dub, umami, shop, voucherify]
  - from: lemonsqueezy/order_refunded
    to: [shop, voucherify]
  - from: shopify/orders/paid
    to: [dub, umami, shop, voucherify]
  - from: shopify/refunds/create
    to: [shop, voucherify]
  - from: revenuecat/INITIAL_PURCHASE
    to: [dub, umami, shop, voucherify]
  - from: revenuecat/RENEWAL
    to: [dub, umami, shop, voucherify]
  - from: revenuecat/CANCELLATION
    to: [shop, voucherify]
  - from: standard_webhooks/invoice.paid
    to: [dub, umami, shop, voucherify]
    kind: sale
    fields:
      id: event.data.id
      amount: event.data.amount
      currency: event.data.currency
      occurred_at: unix(event.timestamp)
      customer_id: event.data.customer.id
      customer_external_id: event.data.customer.external_id
      customer_email: event.data.customer.email
  - from: hmac/payment.succeeded
    to: [dub, umami, shop, voucherify]
    kind: sale
    fields:
      id: event.payment.order
      amount: minor(event.payment.total, event.payment.currency)
      currency: event.payment.currency
      occurred_at: event.created
      customer_external_id: event.payment.customer
      customer_email: event.payment.email
"""


def table_yaml(
    database: Path,
    sinks_url: str = "http://127.0.0.1:9",
    *,
    secrets: dict[str, tuple[str, str]] | None = None,
    keys: dict[str, str] | None = None,
    dry_run: bool = False,
    retry: str = "{initial: 0.05, max_interval: 0.2, max_attempts: 5}",
    timeout: float = 2.0,
    extra: str = "",
) -> str:
    """Every source kind, the four destinations at ``sinks_url``; values are written as given
    (pass ``${VAR}`` references to read them from the environment)."""
    secrets = secrets or SECRETS
    keys = keys or KEYS
    sources = []
    for kind in KINDS:
        listed = ", ".join(json.dumps(s) for s in secrets[kind])
        sources.append(f"  {kind}:\n    kind: {kind}\n    signing_secrets: [{listed}]")
    sources[-1] += "".join(f"\n    {k}: {json.dumps(v)}" for k, v in HMAC_SETTINGS.items())
    dry = "true" if dry_run else "false"
    common = f"    dry_run: {dry}\n    retry: {retry}\n    timeout: {timeout}"
    return (
        "sources:\n"
        + "\n".join(sources)
        + f"""
destinations:
  dub:
    kind: dub
    base_url: {sinks_url}/dub
    api_key: {json.dumps(keys["DUB_KEY"])}
{common}
  umami:
    kind: umami
    base_url: {sinks_url}/umami
    website_id: 5c0bd4d5-9d31-4c62-8d52-6f3c6b1a0a11
    hostname: shop.example.com
{common}
  shop:
    kind: ecommerce
    base_url: {sinks_url}/shop
    api_key: {json.dumps(keys["SHOP_KEY"])}
{common}
  voucherify:
    kind: voucherify
    base_url: {sinks_url}/voucherify
    app_id: {json.dumps(keys["VF_ID"])}
    app_token: {json.dumps(keys["VF_TOKEN"])}
{common}
routes:{ROUTES}
storage:
  url: sqlite:///{database}
delivery:
  poll_interval: 0.05
{extra}"""
    )


# --- signing, as each processor documents it ------------------------------------------------------


def _hmac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, getattr(hashlib, algorithm)).digest()


def _standard_key(secret: str) -> bytes:
    text = secret.removeprefix("whsec_")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def sign(
    kind: str,
    body: bytes,
    now: float,
    *,
    secret: str | None = None,
    ts: str | None = None,
    msg_id: str | None = None,
) -> Headers:
    """The headers ``kind``'s processor sends with ``body``: signed with ``secret`` (the first
    configured one by default) at ``ts`` (default ``now``, any text allowed)."""
    secret = SECRETS[kind][0] if secret is None else secret
    stamp = str(int(now)) if ts is None else ts
    key = secret.encode()
    json_type = (b"Content-Type", b"application/json")
    if kind == "stripe":
        digest = _hmac(key, stamp.encode() + b"." + body).hex()
        return [(b"Stripe-Signature", f"t={stamp},v1={digest}".encode()), json_type]
    if kind == "paddle":
        digest = _hmac(key, stamp.encode() + b":" + body).hex()
        return [(b"Paddle-Signature", f"ts={stamp};h1={digest}".encode()), json_type]
    if kind in ("polar", "standard_webhooks"):
        signing_key = key if kind == "polar" else _standard_key(secret)
        ident = msg_id or f"msg_{uuid.uuid4().hex}"
        mac = _hmac(signing_key, f"{ident}.{stamp}.".encode() + body)
        return [
            (b"webhook-id", ident.encode()),
            (b"webhook-timestamp", stamp.encode()),
            (b"webhook-signature", b"v1," + base64.b64encode(mac)),
            json_type,
        ]
    if kind == "lemonsqueezy":
        return [(b"X-Signature", _hmac(key, body).hex().encode()), json_type]
    if kind == "shopify":
        return [(b"X-Shopify-Hmac-Sha256", base64.b64encode(_hmac(key, body))), json_type]
    if kind == "revenuecat":
        return [(b"Authorization", secret.encode()), json_type]
    if kind == "hmac":
        mac = _hmac(key, stamp.encode() + b"." + body, HMAC_SETTINGS["algorithm"])
        return [
            (HMAC_SETTINGS["header"].encode(), b"v1=" + base64.b64encode(mac)),
            (HMAC_SETTINGS["timestamp_header"].encode(), stamp.encode()),
            json_type,
        ]
    raise ValueError(kind)


def wrong_secret(kind: str, n: int = 0) -> str:
    """A secret of the right form that the table does not have."""
    if kind == "standard_webhooks":
        return "whsec_" + base64.b64encode(f"not-configured-{n}".encode()).decode()
    return f"not-configured-{n}-{SECRETS[kind][0]}"


def fixture(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / FIXTURE[kind]).read_bytes())
    return data


def event(kind: str, tag: str) -> tuple[dict[str, Any], Headers]:
    """A routed, money-carrying event of ``kind`` that no other ``tag`` shares, and the
    headers (besides the signature) that make it unique."""
    payload = fixture(kind)
    extra: Headers = []
    if kind == "stripe":
        payload["id"] = f"evt_{tag}"
        payload["data"]["object"]["id"] = f"in_{tag}"
    elif kind == "paddle":
        payload["event_id"] = f"evt_{tag}"
        payload["data"]["id"] = f"txn_{tag}"
    elif kind in ("polar", "standard_webhooks"):
        payload["data"]["id"] = f"ord_{tag}"
    elif kind == "lemonsqueezy":
        payload["data"]["id"] = f"ls{tag}"
    elif kind == "shopify":
        payload["id"] = int(hashlib.sha256(tag.encode()).hexdigest()[:12], 16)
        extra = [(b"X-Shopify-Topic", b"orders/paid"), (b"X-Shopify-Webhook-Id", tag.encode())]
    elif kind == "revenuecat":
        payload["event"]["id"] = f"rc-{tag}"
        payload["event"]["transaction_id"] = f"tx-{tag}"
    elif kind == "hmac":
        payload["id"] = f"pay_{tag}"
        payload["payment"]["order"] = f"ord_{tag}"
    return payload, extra


def signed_event(kind: str, tag: str, now: float) -> tuple[bytes, Headers]:
    payload, extra = event(kind, tag)
    body = json.dumps(payload).encode()
    msg_id = f"msg_{tag}" if kind in ("polar", "standard_webhooks") else None
    return body, sign(kind, body, now, msg_id=msg_id) + extra


# --- the cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: bytes
    target: bytes
    headers: Headers
    body: bytes | None = None
    chunks: tuple[bytes, ...] | None = None
    endless: bool = False


@dataclass(frozen=True)
class Case:
    """One hostile request and what the bridge must do with it.

    ``status``: the documented answer; ``reason``: text the error must contain; ``bug``: the
    bridge does not do what is documented yet (the test is a strict xfail); ``log_bug``: the same
    for the one-log-line check alone."""

    id: str
    make: Callable[[float], Request] = field(compare=False, repr=False)
    status: int = 400
    reason: str | None = None
    bug: str | None = None
    log_bug: str | None = None


NON_ASCII_V1_BUG = (
    "an unsigned request whose Stripe-Signature has a v1 value that is not ASCII (a latin-1 "
    "byte) reaches stripe's secure_compare(str, str): hmac.compare_digest raises TypeError "
    "('comparing strings with non-ASCII characters is not supported'), which StripeSource.verify "
    "does not catch: 500"
)
SILENT_404 = "the bridge logs nothing for an unknown source (app.receive returns 404 silently)"
SILENT_405 = "the bridge logs nothing for a method other than POST (not_allowed, Starlette's 405)"
SILENT_ROUTER = "Starlette's own 404 for a path no route matches is not logged"


def _path(source: str) -> bytes:
    return f"/webhooks/{source}".encode()


def _post(kind: str, body: bytes, headers: Headers) -> Request:
    return Request(b"POST", _path(kind), headers, body)


def _signed(kind: str, body: bytes, **kw: Any) -> Callable[[float], Request]:
    return lambda now: _post(kind, body, sign(kind, body, now, **kw))


def _without(headers: Headers, *names: str) -> Headers:
    drop = {n.lower().encode() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in drop]


def _replace(headers: Headers, name: str, *values: bytes) -> Headers:
    return _without(headers, name) + [(name.encode(), v) for v in values]


def _valid_body(kind: str) -> bytes:
    payload, _ = event(kind, f"hostile-{kind}")
    payload["note"] = MARK.decode()
    return json.dumps(payload).encode()


def _timestamp_cases(kind: str, body: bytes) -> list[Case]:
    tolerance = TOLERANCE[kind]
    cases = [
        Case(
            f"{kind}-timestamp-too-old",
            lambda now: _post(kind, body, sign(kind, body, now, ts=str(int(now) - tolerance - 60))),
            reason="too old",
        ),
        Case(
            f"{kind}-timestamp-in-the-future",
            lambda now: _post(kind, body, sign(kind, body, now, ts=str(int(now) + tolerance + 60))),
            reason="future",
        ),
    ]
    for name, text in [
        ("letters", "abc" + MARK.decode()),
        ("decimal", "1.7e9"),
        ("negative", "-1"),
        ("empty", ""),
        ("plus-sign", "+1800000000"),
        ("twenty-digits", "9" * 20),
    ]:
        cases.append(Case(f"{kind}-timestamp-{name}", _signed(kind, body, ts=text)))

    def superscript(now: float) -> Request:
        headers = sign(kind, body, now, ts="0")
        if kind == "stripe":
            return _post(kind, body, _replace(headers, "Stripe-Signature", b"t=\xb2\xb3,v1=ab"))
        if kind == "paddle":
            return _post(kind, body, _replace(headers, "Paddle-Signature", b"ts=\xb2;h1=ab"))
        name = "webhook-timestamp" if kind in ("polar", "standard_webhooks") else "X-Shop-Timestamp"
        return _post(kind, body, _replace(headers, name, b"\xb2\xb3"))

    # latin-1 superscript digits: str.isdigit() says yes, int() says no
    cases.append(
        Case(
            f"{kind}-timestamp-superscript-digits",
            superscript,
        )
    )
    return cases


NON_ASCII: dict[str, Callable[[float], bytes]] = {
    "stripe": lambda now: b"t=%d,v1=\xe9\xe9" % int(now),
    "paddle": lambda now: b"ts=%d;h1=\xe9" % int(now),
    "polar": lambda now: b"v1,\xe9",
    "standard_webhooks": lambda now: b"v1,\xe9",
    "lemonsqueezy": lambda now: b"\xe9" * 64,
    "shopify": lambda now: b"\xe9" * 44,
    "revenuecat": lambda now: b"Bearer \xe9",
    "hmac": lambda now: b"v1=\xe9",
}


def _signature_cases(kind: str) -> list[Case]:
    body = _valid_body(kind)
    header = SIGNATURE_HEADER[kind]
    other = body.replace(MARK, b"tampered")
    cases = [
        Case(
            f"{kind}-signature-missing",
            lambda now: _post(kind, body, _without(sign(kind, body, now), header)),
            reason="signature",
        ),
        Case(
            f"{kind}-signature-empty",
            lambda now: _post(kind, body, _replace(sign(kind, body, now), header, b"")),
            reason="signature",
        ),
        Case(
            f"{kind}-signature-duplicated-both-wrong",
            lambda now: _post(
                kind,
                body,
                _replace(
                    sign(kind, body, now),
                    header,
                    dict(sign(kind, body, now, secret=wrong_secret(kind, 1)))[header.encode()],
                    dict(sign(kind, body, now, secret=wrong_secret(kind, 2)))[header.encode()],
                ),
            ),
            reason="signature",
        ),
        Case(
            f"{kind}-signature-duplicated-another-bodys",
            lambda now: _post(
                kind,
                body,
                _replace(
                    sign(kind, body, now),
                    header,
                    dict(sign(kind, other, now))[header.encode()],
                    MARK,
                ),
            ),
            reason="signature",
        ),
        Case(
            f"{kind}-signature-oversized",
            lambda now: _post(kind, body, _replace(sign(kind, body, now), header, MARK * 340)),
            reason="signature",
        ),
        Case(
            # past the server's limit on a request's head: refused before the bridge sees it
            f"{kind}-signature-over-the-header-limit",
            lambda now: _post(kind, body, _replace(sign(kind, body, now), header, MARK * 1400)),
        ),
        Case(
            f"{kind}-signature-for-another-body",
            lambda now: _post(kind, body, sign(kind, other, now)),
            reason="signature",
        ),
        Case(
            f"{kind}-signature-wrong-secret",
            _signed(kind, body, secret=wrong_secret(kind)),
            reason="signature",
        ),
        Case(
            f"{kind}-signature-not-latin-1",
            lambda now: _post(
                kind, body, _replace(sign(kind, body, now), header, b"\xff\xfe\xc3(" + MARK)
            ),
            reason="signature",
        ),
        Case(
            f"{kind}-signature-digest-not-ascii",
            lambda now: _post(
                kind, body, _replace(sign(kind, body, now), header, NON_ASCII[kind](now))
            ),
            reason="signature",
        ),
        Case(
            f"{kind}-unsigned-text-plain",
            lambda now: _post(kind, body, [(b"Content-Type", b"text/plain; charset=" + MARK)]),
            reason="signature",
        ),
        Case(
            f"{kind}-unsigned-form",
            lambda now: _post(
                kind, b"a=1&b=" + MARK, [(b"Content-Type", b"application/x-www-form-urlencoded")]
            ),
            reason="signature",
        ),
    ]
    if kind == "revenuecat":  # RevenueCat signs no body: its header is valid for any body
        cases = [c for c in cases if "another-body" not in c.id]
    if kind in TIMED:
        cases += _timestamp_cases(kind, body)
    return cases


def _deep(levels: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * levels + b"1" + closer * levels


def _body_cases(kind: str) -> list[Case]:
    """Signed bodies that are not events: refused after the signature has verified."""
    valid = _valid_body(kind)
    payload = json.loads(valid)
    huge = ("x" * 140_000) + MARK.decode()
    every_key = {
        "id": huge,
        "type": huge,
        "event_id": huge,
        "event_type": huge,
        "meta": {"event_name": huge},
        "event": {"id": huge, "type": huge},
        "data": {"attributes": {}},
    }
    object_not_event = 200 if kind == "hmac" else 400  # hmac: any object is an event ("webhook")
    bodies: list[tuple[str, bytes, int, str | None]] = [
        ("empty", b"", 400, None),
        ("not-utf-8", b"\xff\xfe\xfa" + MARK, 400, None),
        ("utf-16", valid.decode().encode("utf-16"), 400, None),
        ("utf-32", valid.decode().encode("utf-32"), 400, None),
        ("byte-order-mark", b"\xef\xbb\xbf" + valid, 400, None),
        ("not-json", b"not json " + MARK, 400, None),
        ("truncated-json", valid[: len(valid) // 2], 400, None),
        ("single-quotes", b"{'id': '" + MARK + b"'}", 400, None),
        ("json-array", b'[1, 2, "' + MARK + b'"]', 400, None),
        ("json-string", b'"' + MARK + b'"', 400, None),
        ("json-number", b"12345", 400, None),
        ("json-null", b"null", 400, None),
        ("json-true", b"true", 400, None),
        ("object-not-an-event", b'{"' + MARK + b'": 1}', object_not_event, None),
        ("nested-10000-arrays", _deep(10_000), 400, None),
        ("nested-10000-objects", _deep(10_000, b'{"a":', b"}"), 400, None),
        (
            "nested-one-over-the-limit",
            json.dumps({**payload, "deep": json.loads(_deep(MAX_DEPTH))}).encode(),
            400,
            None,
        ),
        ("huge-strings", json.dumps(every_key).encode(), object_not_event, None),
        ("nan", valid[:-1] + b', "x": NaN}', 400, None),
        ("infinity", valid[:-1] + b', "x": Infinity}', 400, None),
        ("minus-infinity", valid[:-1] + b', "x": -Infinity}', 400, None),
        ("number-overflowing-to-infinity", valid[:-1] + b', "x": 1e999}', 400, None),
        ("integer-of-5000-digits", valid[:-1] + b', "x": ' + b"9" * 5000 + b"}", 400, None),
    ]
    # duplicate keys: the last one wins (as in every JSON parser the bridge's data meets), and
    # here the last one makes the body no event
    duplicate = {
        "stripe": b', "data": 1}',
        "paddle": b', "data": "' + MARK + b'"}',
        "polar": b', "type": 1}',
        "standard_webhooks": b', "type": null}',
        "lemonsqueezy": b', "meta": []}',
        "revenuecat": b', "event": "' + MARK + b'"}',
    }.get(kind)
    if duplicate is not None:
        bodies.append(("duplicate-keys", valid[:-1] + duplicate, 400, None))
    cases = []
    for name, body, status, bug in bodies:
        # for the kinds that sign text, a body that is not UTF-8 fails at the signature
        cases.append(
            Case(
                f"{kind}-body-{name}",
                _signed(kind, body),
                status=status,
                bug=bug,
            )
        )
    cases.append(
        Case(
            f"{kind}-body-multipart-signed",
            lambda now: _post(
                kind,
                b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n" + MARK + b"\r\n--x--",
                _replace(
                    sign(
                        kind,
                        b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n"
                        + MARK
                        + b"\r\n--x--",
                        now,
                    ),
                    "Content-Type",
                    b"multipart/form-data; boundary=x",
                ),
            ),
        )
    )
    return cases


def _size_cases(kind: str) -> list[Case]:
    chunk = MARK * (65536 // len(MARK))
    over = MAX_BODY // len(chunk) + 2
    return [
        Case(
            # a chunked body that never ends: the 413 can only come while reading
            f"{kind}-chunked-over-the-limit-never-ending",
            lambda now: Request(
                b"POST",
                _path(kind),
                sign(kind, b"", now),
                chunks=(chunk,) * over,
                endless=True,
            ),
            status=413,
        ),
        Case(
            f"{kind}-chunked-over-the-limit",
            lambda now: Request(b"POST", _path(kind), sign(kind, b"", now), chunks=(chunk,) * over),
            status=413,
        ),
        Case(
            # the declared length alone is refused: the body is never sent
            f"{kind}-content-length-over-the-limit-no-body",
            lambda now: Request(
                b"POST",
                _path(kind),
                [*sign(kind, b"", now), (b"Content-Length", str(MAX_BODY + 1).encode())],
                b"",
            ),
            status=413,
        ),
        Case(
            f"{kind}-body-one-byte-over-the-limit",
            _signed(kind, b'{"a": "' + b"x" * (MAX_BODY - 8) + b'"}'),
            status=413,
        ),
    ]


def _stripe_post(method: bytes, target: bytes, body: bytes, now: float) -> Request:
    return Request(method, target, sign("stripe", body, now), body)


def _routing_cases() -> list[Case]:
    body = _valid_body("stripe")
    cases = []
    unknown = [
        ("paypal", b"paypal-" + MARK),
        ("upper-case", b"STRIPE"),
        ("trailing-space", b"stripe%20"),
        ("nul", b"str%00ipe"),
        ("long", b"a" * 2000 + MARK),
        ("unicode", b"str%C3%ADpe"),
        ("bad-percent-utf8", b"%FF%FE" + MARK),
    ]
    for name, segment in unknown:
        cases.append(
            Case(
                f"unknown-source-{name}",
                functools.partial(_stripe_post, b"POST", b"/webhooks/" + segment, body),
                status=404,
                reason="unknown source",
            )
        )
    traversal = [
        ("encoded-slash", b"/webhooks/..%2Fadmin%2Fevents%3F" + MARK, None),
        ("encoded-dots", b"/webhooks/%2e%2e%2fadmin%2fevents", None),
        ("raw-dots", b"/webhooks/../admin/events", None),
        ("after-a-source", b"/webhooks/stripe/../../admin/events", None),
        ("backslashes", b"/webhooks/..%5C..%5Cetc%5Cpasswd" + MARK, None),
        ("dot-segment", b"/webhooks/./stripe", None),
        ("encoded-loop", b"/webhooks/stripe%2F..%2Fstripe", None),
        ("dots-only", b"/webhooks/..", None),
        ("no-source", b"/webhooks/", None),
    ]
    for name, target, log_bug in traversal:
        cases.append(
            Case(
                f"path-traversal-{name}",
                functools.partial(_stripe_post, b"POST", target, body),
                status=404,
                log_bug=log_bug,
            )
        )
    for method in (b"GET", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"TRACE", b"BREW"):
        for source in (b"stripe", b"paypal"):
            cases.append(
                Case(
                    f"method-{method.decode()}-{source.decode()}",
                    functools.partial(_stripe_post, method, b"/webhooks/" + source, body),
                    # a method HTTP does not define: uvicorn's parser (httptools) refuses the
                    # request as malformed before the app sees it
                    status=400 if method == b"BREW" else 405,
                )
            )
    cases += [
        Case(
            # request smuggling: both framings at once is refused by the HTTP server
            "framing-content-length-and-chunked",
            lambda now: Request(
                b"POST",
                b"/webhooks/stripe",
                [
                    *sign("stripe", body, now),
                    (b"Content-Length", b"4"),
                    (b"Transfer-Encoding", b"chunked"),
                ],
                b"4\r\n" + MARK[:4] + b"\r\n0\r\n\r\n",
            ),
        ),
        Case(
            "framing-content-length-not-a-number",
            lambda now: Request(
                b"POST",
                b"/webhooks/stripe",
                [*sign("stripe", body, now), (b"Content-Length", MARK)],
                b"",
            ),
        ),
    ]
    return cases


def corpus() -> list[Case]:
    cases: list[Case] = []
    for kind in KINDS:
        cases += _signature_cases(kind) + _body_cases(kind) + _size_cases(kind)
    return cases + _routing_cases()


CASES = corpus()
