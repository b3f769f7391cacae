"""Named SQL and the multi-row statements built from it."""

from __future__ import annotations

import pytest

from bridge.store.sql import many, queries


def test_every_sqlite_multi_row_insert_repeats_its_one_values_row() -> None:
    sql = queries("sqlite.sql")
    for name in ("insert_events", "insert_deliveries", "remember_refs"):
        once = sql[name]
        thrice = many(once, 3)
        row = once[once.index("VALUES (") + len("VALUES ") :].split(")")[0] + ")"
        assert thrice.count(row) == 3, name
        assert thrice.replace(f"{row}, {row}, {row}", row) == once
        assert thrice.count("?") == 3 * once.count("?") > 0


def test_a_statement_without_a_values_row_is_refused() -> None:
    with pytest.raises(ValueError, match="VALUES"):
        many("SELECT 1", 2)
