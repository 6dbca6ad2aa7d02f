"""What a signed-in person's authorisation left behind: authorization codes and refresh tokens,
kept only as SHA-256 digests, and grouped in families (every token one sign-in led to).

Codes and refresh tokens are single use. Each is claimed by one `UPDATE … WHERE used_at IS
NULL`, so of two requests racing with one value only one wins; a value presented after its use
revokes its family (RFC 6749 §4.1.2 and §10.4; OAuth 2.0 Security BCP §4.14): the refresh
tokens, and the access tokens issued with them through the revocation deny list."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import AsyncConnection

from hub.store.clients import note_revoked_token


def digest(value: str) -> str:
    """The stored form of a code, refresh token or session id (the value itself is never kept)."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class CodeRecord:
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    challenge_method: str
    nonce: str | None
    auth_time: int
    family_id: str
    expires_at: int  # epoch seconds
    used: bool


@dataclass(frozen=True)
class RefreshRecord:
    family_id: str
    client_id: str
    user_id: str
    scope: str
    expires_at: int
    used: bool
    revoked: bool


async def insert_code(conn: AsyncConnection, code: str, record: CodeRecord) -> None:
    await conn.execute(
        "DELETE FROM oauth_code WHERE expires_at < now() - interval '1 day'")
    await conn.execute(
        "INSERT INTO oauth_code (code_hash, client_id, user_id, redirect_uri, scope, code_challenge,"
        " challenge_method, nonce, auth_time, family_id, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s))",
        (digest(code), record.client_id, record.user_id, record.redirect_uri, record.scope,
         record.code_challenge, record.challenge_method, record.nonce, record.auth_time,
         record.family_id, record.expires_at))


async def get_code(conn: AsyncConnection, code: str) -> CodeRecord | None:
    cur = await conn.execute(
        "SELECT client_id, user_id, redirect_uri, scope, code_challenge, challenge_method, nonce,"
        " auth_time, family_id, extract(epoch FROM expires_at)::bigint, used_at IS NOT NULL"
        " FROM oauth_code WHERE code_hash = %s", (digest(code),))
    row = await cur.fetchone()
    return CodeRecord(*row) if row else None


async def claim_code(conn: AsyncConnection, code: str) -> bool:
    """Mark a code used; False if it already was (another request won the race)."""
    cur = await conn.execute(
        "UPDATE oauth_code SET used_at = now() WHERE code_hash = %s AND used_at IS NULL", (digest(code),))
    return cur.rowcount == 1


async def insert_refresh(conn: AsyncConnection, token: str, *, family_id: str, client_id: str, user_id: str,
                         scope: str, access_jti: str, access_expires_at: int, expires_at: int) -> None:
    await conn.execute(
        "INSERT INTO oauth_refresh_token (token_hash, family_id, client_id, user_id, scope, access_jti,"
        " access_expires_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s))",
        (digest(token), family_id, client_id, user_id, scope, access_jti, access_expires_at, expires_at))


async def note_access_token(conn: AsyncConnection, *, family_id: str, client_id: str, user_id: str,
                            access_jti: str, access_expires_at: int) -> None:
    """Remember an access token issued without a refresh token, so revoking its family (a code
    used twice) reaches it too: a refresh row that can never be presented (empty hash input)."""
    await conn.execute(
        "INSERT INTO oauth_refresh_token (token_hash, family_id, client_id, user_id, scope, access_jti,"
        " access_expires_at, expires_at, used_at)"
        " VALUES (%s, %s, %s, %s, '', %s, to_timestamp(%s), to_timestamp(%s), now())",
        (f"access:{access_jti}", family_id, client_id, user_id, access_jti, access_expires_at,
         access_expires_at))


async def get_refresh(conn: AsyncConnection, token: str) -> RefreshRecord | None:
    cur = await conn.execute(
        "SELECT family_id, client_id, user_id, scope, extract(epoch FROM expires_at)::bigint,"
        " used_at IS NOT NULL, revoked_at IS NOT NULL FROM oauth_refresh_token WHERE token_hash = %s",
        (digest(token),))
    row = await cur.fetchone()
    return RefreshRecord(*row) if row else None


async def claim_refresh(conn: AsyncConnection, token: str) -> bool:
    """Mark a refresh token used (rotated); False if it was used or revoked meanwhile."""
    cur = await conn.execute(
        "UPDATE oauth_refresh_token SET used_at = now()"
        " WHERE token_hash = %s AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()",
        (digest(token),))
    return cur.rowcount == 1


async def revoke_family(conn: AsyncConnection, family_id: str) -> int:
    """Revoke every refresh token of a family and deny its unexpired access tokens (one
    transaction; the deny notices go out at commit). Returns the access tokens denied."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE oauth_refresh_token SET revoked_at = coalesce(revoked_at, now()) WHERE family_id = %s"
            " RETURNING access_jti, client_id, extract(epoch FROM access_expires_at)::bigint,"
            " access_expires_at > now()", (family_id,))
        denied = 0
        for jti, client_id, expires_at, live in await cur.fetchall():
            if live:
                await note_revoked_token(conn, jti, client_id, int(expires_at))
                denied += 1
        await conn.execute("UPDATE oauth_code SET used_at = coalesce(used_at, now()) WHERE family_id = %s",
                           (family_id,))
    return denied


async def revoke_families_of_user(conn: AsyncConnection, user_id: str) -> None:
    cur = await conn.execute(
        "SELECT DISTINCT family_id FROM oauth_refresh_token WHERE user_id = %s AND revoked_at IS NULL",
        (user_id,))
    for (family_id,) in await cur.fetchall():
        await revoke_family(conn, family_id)


async def family_of_refresh(conn: AsyncConnection, token: str, client_id: str) -> str | None:
    """The family of a refresh token issued to this client (for RFC 7009 revocation)."""
    cur = await conn.execute("SELECT family_id FROM oauth_refresh_token WHERE token_hash = %s AND client_id = %s",
                             (digest(token), client_id))
    row = await cur.fetchone()
    return row[0] if row else None
