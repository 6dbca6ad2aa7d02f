"""Shared fixtures: one real embedded PostgreSQL per test session (a fresh data folder), with
the hub's schema migrated. Tests that need a clean slate truncate through `clean_db`."""
from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from hub.runtime.embedded import EmbeddedPostgres
from hub.store.migrate import migrate


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database: HUB_TEST_DATABASE_URL if set, else an embedded server."""
    url = os.environ.get("HUB_TEST_DATABASE_URL")
    server = None
    if not url:
        server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("hub-data")))
        url = server.start()
    migrate(url)
    yield url
    if server is not None:
        server.stop()


def empty_database(url: str) -> None:
    """Every table of the hub's schema emptied (the migration record kept)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migration'"
        )]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(tables))


@pytest.fixture()
def clean_db(pg_url: str) -> str:
    empty_database(pg_url)
    return pg_url
