"""Per source, the time of the newest message recorded about each resource.

Kafka keeps one person's messages in order, but a dead-lettered message replayed after the
source has moved on (a fixed mapping, an operator's replay) arrives late: it must not put the
older words back over newer ones. The recorder asks which writes are stale and records what it
wrote, in the write's own transaction."""
from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection

Key = tuple[str, str, str]  # (resource type, id, source)


async def newest(conn: AsyncConnection, keys: set[Key]) -> dict[Key, datetime]:
    """The received-at of the newest recorded message for each key that has one."""
    if not keys:
        return {}
    ordered = sorted(keys)
    cur = await conn.execute(
        "SELECT f.res_type, f.res_id, f.source, f.received_at FROM source_freshness f "
        "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k(res_type, res_id, source) "
        "USING (res_type, res_id, source)",
        ([k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered]))
    return {(t, i, s): at for t, i, s, at in await cur.fetchall()}


async def remember(conn: AsyncConnection, written: dict[Key, datetime]) -> None:
    """Record these messages' times (keeping a newer time already there)."""
    if not written:
        return
    items = sorted(written.items())
    await conn.execute(
        "INSERT INTO source_freshness (res_type, res_id, source, received_at) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) "
        "ON CONFLICT (res_type, res_id, source) DO UPDATE "
        "SET received_at = GREATEST(source_freshness.received_at, EXCLUDED.received_at)",
        ([k[0] for k, _ in items], [k[1] for k, _ in items], [k[2] for k, _ in items], [at for _, at in items]))
