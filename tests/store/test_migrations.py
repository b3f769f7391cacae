"""Versioned migrations on both backends: `bridge migrate`, migrate off, a newer schema."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.store import StoreUnavailable, connect
from bridge.store.migrations import SchemaError, latest, migrations
from tests.conftest import table_yaml
from tests.store.test_store import ingest_of


def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path}/m.db"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path)


def open_close(url: str, migrate: bool) -> None:
    async def run() -> None:
        store = connect(url, migrate=migrate)
        await store.open()
        await store.close()

    asyncio.run(run())


def test_an_unmigrated_database_is_refused_when_migration_is_off(url: str) -> None:
    with pytest.raises(SchemaError, match="run `bridge migrate`"):
        open_close(url, migrate=False)


def test_bridge_migrate_then_a_store_that_does_not_migrate_opens(url: str, tmp_path: Path) -> None:
    table = tmp_path / "bridge.yaml"
    table.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "unused.db"))
    result = CliRunner().invoke(
        app, ["migrate", "--config", str(table)], env={"BRIDGE_DATABASE_URL": url}
    )
    assert result.exit_code == 0, result.output
    backend = "postgres" if url.startswith("postgres") else "sqlite"
    assert f"schema at version {latest(backend)} ({backend})" in result.stdout
    open_close(url, migrate=False)
    open_close(url, migrate=True)  # idempotent


def test_a_newer_schema_is_refused(url: str) -> None:
    open_close(url, migrate=True)
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (999, 0)")
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (999, 0)")
    with pytest.raises(StoreUnavailable, match="newer than this bridge"):
        open_close(url, migrate=True)


def test_two_processes_opening_a_new_sqlite_file_at_once_both_start(tmp_path: Path) -> None:
    """Both read the version before either migrates; the second must not apply it again."""
    path = tmp_path / "m.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("BEGIN IMMEDIATE")  # another writer: both bridges read, then wait for it
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_close(f"sqlite:///{path}", migrate=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # both have read no version and wait for the write lock
    holder.execute("ROLLBACK")
    holder.close()
    for thread in threads:
        thread.join()
    assert errors == []
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, latest("sqlite") + 1))


def test_a_sqlite_database_from_before_versioned_migrations_is_migrated(tmp_path: Path) -> None:
    """The first bridges made 0001's tables with a schema_version of (version) alone."""
    path = tmp_path / "m.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(migrations("sqlite")[0].sql)
        conn.executescript(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);"
            "INSERT INTO schema_version (version) VALUES (1);"
            "INSERT INTO events (source, event_id, type, received_at, payload)"
            " VALUES ('stripe', 'evt_old', 'invoice.paid', 1, '{}');"
            "INSERT INTO deliveries (event_pk, route, destination, order_key, status, next_at,"
            " created_at, updated_at, window_at) VALUES (1, 0, 'dub', 'in_old', 'pending', 1, 1,"
            " 1, 1);"
        )
    url = f"sqlite:///{path}"

    async def run() -> None:
        store = connect(url, migrate=True)
        await store.open()
        try:
            [old] = await store.claim("dub", 10, 2.0, 30.0, "w1")
            assert (old.event_id, old.order_key) == ("evt_old", "in_old")
            assert await store.ingest(ingest_of("evt_new"), 3.0)
            assert await store.counts() == {"in_flight": 1, "pending": 1}
        finally:
            await store.close()

    asyncio.run(run())
    open_close(url, migrate=False)  # at the latest version now


@pytest.fixture
def pg_app_url(pg_url: str) -> Iterator[str]:
    """``pg_url``'s database as a role that may read and write its tables but create nothing
    (PostgreSQL 15's public schema takes no CREATE from others than its owner)."""
    import uuid

    import psycopg

    role = f"app_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        conn.execute(
            f"ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
        )
        conn.execute(f"ALTER DEFAULT PRIVILEGES GRANT USAGE ON SEQUENCES TO {role}")
    yield pg_url.replace("//bridge@", f"//{role}@", 1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_postgres_a_role_without_create_rights_opens_a_migrated_database(
    pg_url: str, pg_app_url: str
) -> None:
    open_close(pg_url, migrate=True)  # by the tables' owner (`bridge migrate`)

    async def run(migrate: bool) -> None:
        store = connect(pg_app_url, migrate=migrate)
        await store.open()
        try:
            assert await store.ingest(ingest_of(f"evt_{migrate}"), 1.0)
        finally:
            await store.close()

    asyncio.run(run(migrate=False))
    asyncio.run(run(migrate=True))  # nothing to apply: nothing to create


def test_postgres_a_migration_the_role_may_not_make_is_one_line(
    pg_app_url: str, tmp_path: Path
) -> None:
    table = tmp_path / "bridge.yaml"
    table.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "unused.db"))
    for command in ("migrate", "deliveries"):
        args = [command, "--config", str(table)]
        if command == "deliveries":
            args.insert(1, "list")
        result = CliRunner().invoke(app, args, env={"BRIDGE_DATABASE_URL": pg_app_url})
        assert result.exit_code == 1
        assert isinstance(result.exception, SystemExit), result.exception
        assert result.stderr.strip().splitlines() == [
            "storage unavailable: cannot migrate the schema: permission denied for schema public"
        ]


def test_postgres_a_database_that_refuses_the_connection_says_why(pg_url: str) -> None:
    """A missing database (or a refused login) is the server's own reason, at once: the pool
    would wait its ten seconds and say only that it has no connection."""
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database"

    async def run() -> None:
        store = connect(missing)
        with pytest.raises(StoreUnavailable) as refused:
            await store.open()
        assert 'database "no_such_database" does not exist' in str(refused.value)
        assert "pool" not in str(refused.value)

    asyncio.run(run())
