"""Shared fixtures: one real embedded PostgreSQL per test session (a fresh data folder), with
the hub's schema migrated. Tests that need a clean slate truncate through `clean_db`."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import psycopg
import pytest

# The id key derived ids are keyed with (hub/fhir/ids.py): one per test process, inherited by
# every hub process a test starts, so ids agree across them and no key lands in the worktree.
if "HUB_ID_KEY_FILE" not in os.environ:
    import secrets
    import tempfile

    _key_dir = Path(tempfile.mkdtemp(prefix="ipc-hub-test-idkey-"))
    (_key_dir / "id.key").write_text(secrets.token_hex(32) + "\n")
    os.environ["HUB_ID_KEY_FILE"] = str(_key_dir / "id.key")

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


@pytest.fixture(scope="session")
def hold_referenced(pg_url: str) -> Callable[..., None]:
    """`hold_referenced(resources)`: the record holds something under every literal local
    reference `resources` make (a bare resource of that type and id is written, by the hub
    itself, where nothing is), except what `resources` themselves define. For examples written
    one at a time whose references name other examples or resources outside the set: the hub
    refuses a dangling reference (hub.store.integrity)."""
    import asyncio

    from psycopg import AsyncConnection

    from hub.fhir.references import literal_references
    from hub.search.access import Access
    from hub.store import resources as store

    async def hold(found: Iterable[dict]) -> None:
        found = list(found)
        defined = {(r.get("resourceType"), r.get("id")) for r in found}
        wanted = {(ref.res_type, ref.res_id) for r in found for ref in literal_references(r)} - defined
        async with await AsyncConnection.connect(pg_url) as conn, conn.transaction():
            for res_type, res_id in sorted(wanted):
                current = await store.current_version(conn, res_type, res_id, access=Access.system())
                if current is None or current.deleted:
                    await store.update(conn, res_type, res_id, {"resourceType": res_type, "id": res_id},
                                       access=Access.system())

    return lambda resources: asyncio.run(hold(resources))
