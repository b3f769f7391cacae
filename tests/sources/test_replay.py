"""`bridge replay` signs every processor's fixtures as the processor would, to a real bridge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from tests.conftest import BridgeProcess
from tests.sources.support import FIXTURES, write_table

# one sale and one refund per processor; each is accepted the first time
REPLAYED = {
    "paddle": ["transaction.completed.json", "adjustment.updated.json"],
    "polar": ["order.paid.json", "refund.created.json"],
    "lemonsqueezy": ["order_created.json", "order_refunded.json"],
    "shopify": ["orders_paid.json", "refunds_create.json"],
    "revenuecat": ["INITIAL_PURCHASE.json", "CANCELLATION.customer_support.json"],
    "standard_webhooks": ["invoice.paid.json", "invoice.refunded.json"],
    "hmac": ["payment.succeeded.json", "payment.refunded.json"],
}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    process = BridgeProcess(write_table(tmp_path_factory.mktemp("replay"))).start()
    yield process
    assert process.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("source", list(REPLAYED))
def test_replay_is_accepted_then_a_duplicate(bridge: BridgeProcess, source: str) -> None:
    files = [str(FIXTURES / source / name) for name in REPLAYED[source]]
    command = ["replay", *files, "--config", str(bridge.config), "--source", source]
    command += ["--url", f"{bridge.url}/webhooks/{source}"]
    runner = CliRunner()
    first = runner.invoke(app, command)
    assert first.exit_code == 0, first.output
    assert f"replayed 2 file(s) to {bridge.url}/webhooks/{source}: 200: 2" in first.stdout
    # the ids a file has no header for are derived from its body: a second replay is a duplicate
    again = runner.invoke(app, command[:2] + command[3:])
    assert again.exit_code == 0, again.output
    assert '{"status":"duplicate"}' in again.stderr


def test_every_processor_has_fixtures_and_a_readme() -> None:
    for source, names in REPLAYED.items():
        folder = FIXTURES / source
        assert (folder / "README.md").is_file(), source
        for name in names:
            assert (folder / name).is_file(), (source, name)
        documented = (folder / "README.md").read_text()
        for file in Path(folder).glob("*.json"):
            assert f"`{file.name}`" in documented, (source, file.name)
