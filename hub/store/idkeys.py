"""The id key in the store: which key this record's derived ids were made with, and the ids
made before ids were keyed (hub/fhir/ids.py says why they are keyed).

`ensure` runs when a process that writes starts (the API, the recorder): the first start
records the key's fingerprint; a process started with another key stops, naming the setting,
instead of deriving different ids for the same source records (which would split people's
records). The first start with a key also maps, once, every id of the old derived form (UUIDv5)
to the keyed id a feed now derives for the same source record (`id_alias`), and `apply` turns
a recorder batch's keyed ids back into those old ids, so a message recorded before the change
and replayed after it still lands on the same resources. Existing records keep their ids: a
partner that holds one can still read it, and nothing is renamed."""
from __future__ import annotations

import logging
import uuid
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import ids
from hub.fhir.references import references, repoint

log = logging.getLogger(__name__)

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('ipc-hub:id-key', 0))"
_LEGACY = ("SELECT res_type, res_id FROM resource WHERE res_id ~ "
           "'^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' ORDER BY 1, 2")
_INSERT_ALIAS = ("INSERT INTO id_alias (res_type, keyed_id, legacy_id) SELECT * FROM "
                 "unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING")


class KeyMismatch(RuntimeError):
    """This process's id key is not the one the record's ids were made with."""


async def ensure(conn: AsyncConnection) -> int:
    """Check (or, on the first start, record) the key's fingerprint and build the aliases of
    ids derived before keying, once. Returns the number of aliases made now."""
    fingerprint = ids.fingerprint()
    async with conn.transaction():
        await conn.execute(_LOCK)
        cur = await conn.execute("SELECT fingerprint, aliases_built IS NOT NULL FROM id_key")
        known = dict(await cur.fetchall())
        if known and fingerprint not in known:
            raise KeyMismatch("the id key (HUB_ID_KEY_FILE, or HUB_DATA_DIR/ids/id.key) is not the one this "
                              "record's ids were made with: every hub process must use the same key file")
        if not known:
            await conn.execute("INSERT INTO id_key (fingerprint) VALUES (%s)", (fingerprint,))
        if known.get(fingerprint):
            return 0
        made = await _build_aliases(conn)
        await conn.execute("UPDATE id_key SET aliases_built = now() WHERE fingerprint = %s", (fingerprint,))
    global _any_aliases
    _any_aliases = None  # asked again by the next `apply`
    if made:
        log.info("mapped %d ids derived before ids were keyed to their keyed form", made)
    return made


async def _build_aliases(conn: AsyncConnection) -> int:
    cur = await conn.execute(_LEGACY)
    rows = [(t, ids.seal(uuid.UUID(i)), i) for t, i in await cur.fetchall() if ids.legacy_form(i)]
    for start in range(0, len(rows), 5000):
        chunk = rows[start:start + 5000]
        await conn.execute(_INSERT_ALIAS, ([r[0] for r in chunk], [r[1] for r in chunk], [r[2] for r in chunk]))
    return len(rows)


async def apply(conn: AsyncConnection, messages: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Each mapped message's resources with every keyed id that stands for an id derived before
    keying (and every reference to it) put back to that old id. One statement for the batch;
    none at all once the store is known to hold no such ids (a hub that started keyed)."""
    global _any_aliases
    if _any_aliases is None:
        cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM id_alias)")
        _any_aliases = bool((await cur.fetchone())[0])
    if not _any_aliases:
        return messages
    keys: set[tuple[str, str]] = set()
    for resources in messages:
        keys |= {(r["resourceType"], r["id"]) for r in resources if isinstance(r.get("id"), str)}
        for ref in references(resources):
            res_type, _, res_id = ref.partition("/")
            if res_type and "/" not in res_id:
                keys.add((res_type, res_id))
    keys = {k for k in keys if ids.is_hub_form(k[1]) and not ids.legacy_form(k[1])}
    if not keys:
        return messages
    ordered = sorted(keys)
    cur = await conn.execute("SELECT a.res_type, a.keyed_id, a.legacy_id FROM id_alias a JOIN unnest(%s::text[], "
                             "%s::text[]) AS k(res_type, keyed_id) USING (res_type, keyed_id)",
                             ([t for t, _ in ordered], [i for _, i in ordered]))
    found = {(t, k): legacy for t, k, legacy in await cur.fetchall()}
    if not found:
        return messages
    moved = {f"{t}/{k}": f"{t}/{legacy}" for (t, k), legacy in found.items()}
    out = []
    for resources in messages:
        renamed = []
        for resource in resources:
            resource = repoint(resource, moved)
            legacy = found.get((resource["resourceType"], resource.get("id")))
            renamed.append({**resource, "id": legacy} if legacy is not None else resource)
        out.append(renamed)
    return out


# Whether the store holds any alias (None: not asked yet). Aliases are made once, by `ensure`,
# which every process that records runs before its first message; after that the answer holds.
_any_aliases: bool | None = None
