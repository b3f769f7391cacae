"""What every HTTP destination shares: the request it builds, the answer's text it keeps."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bridge import config
from bridge.destinations.common import EXCERPT, text
from bridge.pipeline import Pipeline
from bridge.sources.stripe import StripeSource
from bridge.transport import _serialize
from tests.conftest import fixture, table_yaml


def answer(content: bytes, content_type: str | None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return httpx.Response(400, headers=headers, content=content)


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        ("café".encode(), "application/json", "café"),
        ("café".encode(), None, "café"),  # no Content-Type: UTF-8, as httpx reads it
        ("café".encode("latin-1"), "text/plain; charset=ISO-8859-1", "café"),
        ("café".encode("latin-1"), 'text/plain; Charset="latin-1"', "café"),
        ("café".encode(), "text/plain; charset=no-such-charset", "café"),  # unknown: UTF-8
        (b"caf\xe9 \xff", "application/json", "caf\ufffd \ufffd"),  # not UTF-8: replaced
    ],
)
def test_the_answer_text_is_decoded_as_httpx_would(
    content: bytes, content_type: str | None, expected: str
) -> None:
    assert text(answer(content, content_type)) == expected
    if "no-such" not in (content_type or ""):
        assert text(answer(content, content_type)) == answer(content, content_type).text


@pytest.mark.parametrize("character", ["e", "é", "€", "😀"])  # 1, 2, 3 and 4 bytes in UTF-8
def test_the_answer_text_is_cut_at_the_limit_never_inside_a_character(character: str) -> None:
    long = answer((character * (EXCERPT * 2)).encode(), "application/json")
    assert text(long) == character * EXCERPT
    assert text(long, 7) == character * 7


def test_a_request_carries_the_headers_httpx_would_give_it(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:8123/base", tmp_path / "bridge.db"))
    pipeline = Pipeline(config.load(path))
    source = pipeline.sources["stripe"]
    assert isinstance(source, StripeSource)
    event = source.event(fixture("invoice.paid.json"), {})
    route = pipeline.routes_for(event)[0]
    for name, destination in pipeline.destinations.items():
        txn = pipeline.transaction(route, event)
        request = destination.request(txn, event)
        body = request.content  # readable by any transport, httpx's own included
        assert body and request.stream is not None
        # what httpx builds from the same method, URL, body and fixed headers
        fixed = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        expected = httpx.Request(request.method, request.url, content=body, headers=fixed)
        assert sorted(request.headers.multi_items()) == sorted(expected.headers.multi_items())
        assert request.headers["host"] == "127.0.0.1:8123", name
        assert request.headers["content-length"] == str(len(body))
        wire = _serialize(request)
        assert wire.count(b"\r\nhost: ") + wire.count(b"\r\nHost: ") == 1
        assert wire.endswith(b"\r\n\r\n" + body)


def test_a_header_with_a_line_break_is_never_sent() -> None:
    for name, value in [("X-Note", "a\r\nInjected: yes"), ("X-Note", "a\nb"), ("X-Note", "a\rb")]:
        request = httpx.Request("POST", "http://127.0.0.1:1/x", content=b"{}")
        request.headers[name] = value
        with pytest.raises(httpx.LocalProtocolError):
            _serialize(request)
