"""The pipeline: what the SQLite writer builds ahead of the worker, and what it leaves to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge import config as config_module
from bridge.model import ProviderEvent, Transaction
from bridge.pipeline import Pipeline
from tests.conftest import fixture_bytes, table_yaml


def pipeline(tmp_path: Path, table: str | None = None) -> Pipeline:
    path = tmp_path / "bridge.yaml"
    path.write_text(table or table_yaml("http://sinks.test", tmp_path / "bridge.db"))
    return Pipeline(config_module.load(path))


def stored(pipe: Pipeline, name: str) -> ProviderEvent:
    payload = json.loads(fixture_bytes(name))
    return pipe.stored_event("stripe", payload["id"], payload["type"], json.dumps(payload))


def test_a_sale_is_prepared_as_the_worker_would_build_it(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path)
    event = stored(pipe, "invoice.paid.json")
    (route,) = pipe.routes_for(event)
    built = {
        name: pipe.request(pipe.transaction(route, event), event, name, None) for name in route.to
    }
    transaction, built_by_prepare = pipe.transaction, []

    def counting(*args: Any) -> Transaction:
        built_by_prepare.append(args)
        return transaction(*args)

    pipe.transaction = counting  # type: ignore[method-assign, assignment]
    for name in route.to:
        assert pipe.prepare(event, name, route.index) == built[name].content
    assert len(built_by_prepare) == 1  # one transaction for the event's four deliveries


def test_what_only_the_worker_can_build_is_not_prepared(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path)
    refund = stored(pipe, "charge.refunded.json")
    # a refund: its remembered purchase is looked up first, by the worker
    assert pipe.prepare(refund, "shop", 1) is None
    sale = stored(pipe, "invoice.paid.json")
    # a destination no route sends the event to (any more)
    assert pipe.prepare(sale, "nowhere", 0) is None
    # a route whose when no longer holds, or cannot be evaluated: the worker says why
    for when in ("data.object.amount_paid > `100000000`", "contains(data.object.nope, 'x')"):
        table = table_yaml("http://sinks.test", tmp_path / "bridge.db").replace(
            "    to: [dub, umami, shop, voucherify]\n",
            f'    to: [dub, umami, shop, voucherify]\n    when: "{when}"\n',
            1,
        )
        assert pipeline(tmp_path, table).prepare(sale, "dub", 0) is None
