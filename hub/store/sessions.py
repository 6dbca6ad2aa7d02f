"""Browser sessions (`browser_session`), looked up by the SHA-256 of the cookie value: a copy
of the table cannot be replayed as cookies. A session ends at sign-out, after its idle timeout
without a request, or at its absolute expiry, whichever is first; an ended session is deleted
when next presented."""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection

from hub.store.grants import digest


@dataclass(frozen=True)
class SessionRecord:
    kind: str  # sign-in (the authorisation server's) or workspace (the web workspace's)
    user_id: str
    csrf_token: str
    auth_time: int
    access_token: str | None
    refresh_token: str | None
    access_expires_at: int | None


async def create_session(conn: AsyncConnection, session_id: str, *, kind: str, user_id: str, csrf_token: str,
                         auth_time: int, absolute_s: int, access_token: str | None = None,
                         refresh_token: str | None = None, access_expires_at: int | None = None) -> None:
    await conn.execute("DELETE FROM browser_session WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO browser_session (session_hash, kind, user_id, csrf_token, auth_time, access_token,"
        " refresh_token, access_expires_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))",
        (digest(session_id), kind, user_id, csrf_token, auth_time, access_token, refresh_token,
         access_expires_at, absolute_s))


async def touch_session(conn: AsyncConnection, session_id: str, *, kind: str, idle_s: int) -> SessionRecord | None:
    """The live session for this cookie value (its idle clock restarted), or None when there is
    none: unknown, of another kind, idle too long or past its expiry (then it is deleted)."""
    key = digest(session_id)
    cur = await conn.execute(
        "UPDATE browser_session SET last_seen_at = now()"
        " WHERE session_hash = %s AND kind = %s AND expires_at > now()"
        "   AND last_seen_at > now() - make_interval(secs => %s)"
        " RETURNING kind, user_id, csrf_token, auth_time, access_token, refresh_token, access_expires_at",
        (key, kind, idle_s))
    row = await cur.fetchone()
    if row is None:
        await conn.execute("DELETE FROM browser_session WHERE session_hash = %s AND kind = %s", (key, kind))
        return None
    return SessionRecord(*row)


async def store_tokens(conn: AsyncConnection, session_id: str, *, access_token: str, refresh_token: str | None,
                       access_expires_at: int) -> None:
    await conn.execute(
        "UPDATE browser_session SET access_token = %s, refresh_token = %s, access_expires_at = %s"
        " WHERE session_hash = %s", (access_token, refresh_token, access_expires_at, digest(session_id)))


async def end_session(conn: AsyncConnection, session_id: str) -> SessionRecord | None:
    cur = await conn.execute(
        "DELETE FROM browser_session WHERE session_hash = %s"
        " RETURNING kind, user_id, csrf_token, auth_time, access_token, refresh_token, access_expires_at",
        (digest(session_id),))
    row = await cur.fetchone()
    return SessionRecord(*row) if row else None
