"""The OAuth2 client registry and revocations in PostgreSQL. Revocations are announced on one
notification channel so every API process updates its in-memory deny set at once."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

REVOCATION_CHANNEL = "hub_auth_revocation"

_COLUMNS = ("client_id, name, organisation, organisation_system, partner_class, scopes, auth_method, "
            "secret_hash, jwks, status, created_at, rotated_at, revoked_at, redirect_uris")


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    name: str
    organisation: str
    organisation_system: str
    partner_class: str
    scopes: tuple[str, ...]
    auth_method: str  # client_secret_basic, private_key_jwt, or none (a public app: PKCE only)
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    status: str = "active"
    created_at: datetime | None = None
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None
    # Where an app acting for a signed-in person may receive codes (compared exactly).
    redirect_uris: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.status == "active"


def _record(row: tuple) -> ClientRecord:
    values = list(row)
    values[5] = tuple(values[5])
    values[13] = tuple(values[13] or ())
    return ClientRecord(*values)


async def insert_client(conn: AsyncConnection, client: ClientRecord) -> None:
    await conn.execute(
        "INSERT INTO oauth_client (client_id, name, organisation, organisation_system, partner_class,"
        " scopes, auth_method, secret_hash, jwks, redirect_uris)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (client.client_id, client.name, client.organisation, client.organisation_system,
         client.partner_class, list(client.scopes), client.auth_method, client.secret_hash,
         Jsonb(client.jwks) if client.jwks is not None else None, list(client.redirect_uris)))


async def save_app_client(conn: AsyncConnection, client: ClientRecord) -> None:
    """Register (or bring up to date) an app the hub itself provides, such as the workspace; a
    revoked one stays revoked."""
    await conn.execute(
        "INSERT INTO oauth_client (client_id, name, organisation, organisation_system, partner_class,"
        " scopes, auth_method, redirect_uris) VALUES (%s, %s, %s, %s, %s, %s, 'none', %s)"
        " ON CONFLICT (client_id) DO UPDATE SET name = EXCLUDED.name, scopes = EXCLUDED.scopes,"
        " redirect_uris = EXCLUDED.redirect_uris",
        (client.client_id, client.name, client.organisation, client.organisation_system, client.partner_class,
         list(client.scopes), list(client.redirect_uris)))


async def get_client(conn: AsyncConnection, client_id: str) -> ClientRecord | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM oauth_client WHERE client_id = %s", (client_id,))
    row = await cur.fetchone()
    return _record(row) if row else None


async def list_clients(conn: AsyncConnection) -> list[ClientRecord]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM oauth_client ORDER BY created_at, client_id")
    return [_record(row) for row in await cur.fetchall()]


async def rotate_credentials(conn: AsyncConnection, client_id: str, *, secret_hash: str | None = None,
                             jwks: dict[str, Any] | None = None) -> bool:
    """Replace an active client's secret hash or JWKS; False if there is no such active client."""
    cur = await conn.execute(
        "UPDATE oauth_client SET secret_hash = %s, jwks = %s, rotated_at = now(),"
        " auth_method = CASE WHEN %s::text IS NULL THEN 'private_key_jwt' ELSE 'client_secret_basic' END"
        " WHERE client_id = %s AND status = 'active'",
        (secret_hash, Jsonb(jwks) if jwks is not None else None, secret_hash, client_id))
    return cur.rowcount == 1


async def revoke_client(conn: AsyncConnection, client_id: str) -> bool:
    """Disable a client and tell every API process; False if it was unknown or already revoked."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE oauth_client SET status = 'revoked', revoked_at = now()"
            " WHERE client_id = %s AND status = 'active'", (client_id,))
        if cur.rowcount != 1:
            return False
        await conn.execute("SELECT pg_notify(%s, %s)", (REVOCATION_CHANNEL, f"client {client_id}"))
    return True


async def revoke_token(conn: AsyncConnection, jti: str, client_id: str, expires_at: int) -> None:
    """Record a revoked access token and tell every API process (idempotent)."""
    async with conn.transaction():
        await note_revoked_token(conn, jti, client_id, expires_at)


async def note_revoked_token(conn: AsyncConnection, jti: str, client_id: str, expires_at: int) -> None:
    """`revoke_token` inside the caller's transaction (the notice goes out at its commit)."""
    await conn.execute(
        "INSERT INTO oauth_revoked_token (jti, client_id, expires_at)"
        " VALUES (%s, %s, to_timestamp(%s)) ON CONFLICT (jti) DO NOTHING",
        (jti, client_id, expires_at))
    await conn.execute("SELECT pg_notify(%s, %s)", (REVOCATION_CHANNEL, f"token {jti} {expires_at}"))


async def record_assertion(conn: AsyncConnection, client_id: str, jti: str, expires_at: int) -> bool:
    """Remember a client assertion id; False if it was used before (a replay)."""
    await conn.execute("DELETE FROM oauth_assertion_jti WHERE expires_at < now() - interval '5 minutes'")
    cur = await conn.execute(
        "INSERT INTO oauth_assertion_jti (client_id, jti, expires_at) VALUES (%s, %s, to_timestamp(%s))"
        " ON CONFLICT DO NOTHING", (client_id, jti, expires_at))
    return cur.rowcount == 1


async def load_revocations(conn: AsyncConnection) -> tuple[list[tuple[str, int]], list[str]]:
    """(unexpired revoked token ids with their expiry, revoked client ids)."""
    cur = await conn.execute(
        "SELECT jti, extract(epoch FROM expires_at)::bigint FROM oauth_revoked_token WHERE expires_at > now()")
    tokens = [(jti, int(exp)) for jti, exp in await cur.fetchall()]
    cur = await conn.execute("SELECT client_id FROM oauth_client WHERE status = 'revoked'")
    clients = [row[0] for row in await cur.fetchall()]
    return tokens, clients


async def listen_revocations(conn: AsyncConnection) -> None:
    """Subscribe a dedicated autocommit connection to revocation notices. Call before
    load_revocations so nothing committed between the two is missed."""
    await conn.execute(f"LISTEN {REVOCATION_CHANNEL}")


async def revocation_notices(conn: AsyncConnection) -> AsyncIterator[str]:
    """Notices (`token <jti> <exp>`, `client <id>`) as they are committed."""
    async for notice in conn.notifies():
        yield notice.payload
