"""/metrics: webhooks by outcome, queue gauges, delivery outcomes and latency."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from bridge import config as config_module
from bridge import metrics
from bridge.app import create_app
from bridge.store import SQLiteStore, StoreUnavailable
from bridge.store.base import QueueStats
from tests.conftest import fixture_bytes, stripe_headers, table_yaml


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    s: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def test_webhook_outcomes_and_queue_gauges(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "bridge.db"))
    with TestClient(create_app(config_module.load(path), run_worker=False)) as client:
        before = samples(client)
        body = fixture_bytes("invoice.paid.json")
        client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        client.post("/webhooks/stripe", content=body, headers=stripe_headers(body, "whsec_wrong"))
        client.post("/webhooks/stripe", content=b"{}", headers=stripe_headers(b"{}"))
        client.post("/webhooks/nope", content=body, headers=stripe_headers(body))
        after = samples(client)

        def delta(outcome: str, source: str = "stripe") -> float:
            name = "bridge_webhooks_received_total"
            return value(after, name, source=source, outcome=outcome) - value(
                before, name, source=source, outcome=outcome
            )

        assert delta("accepted") == 1
        assert delta("duplicate") == 1
        assert delta("bad_signature") == 1
        assert delta("invalid") == 1
        assert delta("unknown_source", "(unknown)") == 1
        for destination in ("dub", "umami", "shop", "voucherify"):
            assert value(after, "bridge_queue_depth", destination=destination) == 1
            assert value(after, "bridge_dead_letters", destination=destination) == 0
            assert value(after, "bridge_oldest_pending_age_seconds", destination=destination) >= 0
        assert value(after, "bridge_ingest_commit_batch_size_count") >= 1


def test_the_readme_lists_every_metric_the_bridge_exports() -> None:
    """The README's metrics table is what a user builds dashboards and alerts from: every
    ``bridge_*`` family /metrics can show is in it, and it names none that is not."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Metrics") : readme.index("### Logs")]
    documented = set(re.findall(r"^\| `(bridge_\w+)`", section, re.MULTILINE))
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(metrics.render().decode())
        # prometheus-client's ``*_created`` timestamps of counters and histograms parse as
        # families of their own; they are a part of the family they belong to
        if family.name.startswith("bridge_") and not family.name.endswith("_created")
    }
    assert documented == exported


def test_the_queue_gauges_keep_their_values_while_the_store_does_not_answer(
    tmp_path: Path,
) -> None:
    """A scrape while the database is down must not report an empty queue and no dead
    letters: that would clear exactly the alerts that matter then."""
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "bridge.db"))
    loaded = config_module.load(path)
    store = SQLiteStore(loaded.database_url)
    with TestClient(create_app(loaded, store=store, run_worker=False)) as client:
        body = fixture_bytes("invoice.paid.json")
        assert client.post(
            "/webhooks/stripe", content=body, headers=stripe_headers(body)
        ).is_success
        assert value(samples(client), "bridge_queue_depth", destination="dub") == 1

        async def down() -> dict[str, QueueStats]:
            raise StoreUnavailable("SQLite: disk I/O error")

        store.queue = down  # type: ignore[method-assign]
        after = samples(client)
        for destination in ("dub", "umami", "shop", "voucherify"):
            assert value(after, "bridge_queue_depth", destination=destination) == 1
