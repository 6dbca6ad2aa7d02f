"""The runtime role docker-compose.yml runs the services as: rows yes, schema no."""
from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from hub.store.migrate import migrate


def _as(url: str, user: str, database: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:@{host}", f"/{database}", parts.query, parts.fragment))


@pytest.fixture()
def runtime_database(pg_url: str) -> str:
    """A fresh database, migrated by the owner after the runtime role exists (as in compose)."""
    name = f"lp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'hub_runtime'").fetchone():
            conn.execute("CREATE ROLE hub_runtime LOGIN")
    owner_url = _as(pg_url, "postgres", name)
    migrate(owner_url)
    yield _as(pg_url, "hub_runtime", name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_runtime_role_reads_and_writes_rows_but_cannot_change_the_schema(runtime_database):
    with psycopg.connect(runtime_database, autocommit=True) as conn:
        conn.execute("INSERT INTO oauth_client (client_id, name, organisation, organisation_system, partner_class,"
                     " scopes, auth_method, secret_hash) VALUES ('c', 'n', 'o', 's', 'nhs', '{}',"
                     " 'client_secret_basic', 'h')")
        assert conn.execute("SELECT count(*) FROM oauth_client").fetchone()[0] == 1
        conn.execute("DELETE FROM oauth_client")
        assert conn.execute("SELECT count(*) FROM resource").fetchone()[0] == 0
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        for table in tables:  # every table, those of later migrations included
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
        for ddl in ("CREATE TABLE intruder (x int)", "DROP TABLE oauth_client",
                    "ALTER TABLE resource ADD COLUMN x int", "TRUNCATE oauth_revoked_token"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(ddl)
