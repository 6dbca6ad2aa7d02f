"""Index writes: the rows each current version adds to the search index tables (idx_*) and to
resource_link (the literal local references it makes, for referential integrity on delete).
Written with the version, replaced by the next one, removed on delete, in the write's own
transaction: the index never disagrees with the record."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.references import literal_references
from hub.search.definitions import resource_types, supported_params
from hub.search.extract import IndexRows, index_rows

# Where each kind of index row goes, and its columns after (res_type, res_id).
INDEX_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tokens": ("idx_token", ("param", "system", "code", "text")),
    "strings": ("idx_string", ("param", "value_norm", "value_exact")),
    "references": ("idx_reference", ("param", "target_type", "target_id", "url")),
    "dates": ("idx_date", ("param", "low", "high")),
    "numbers": ("idx_number", ("param", "low", "high")),
    "quantities": ("idx_quantity", ("param", "low", "high", "system", "code", "unit")),
    "uris": ("idx_uri", ("param", "uri")),
}
LINK_TABLE = ("resource_link", ("target_type", "target_id"))
# Every table keyed by (res_type, res_id) whose rows belong to the current version.
ROW_TABLES = [table for table, _ in INDEX_TABLES.values()] + [LINK_TABLE[0]]

_INSERT_INDEX = {
    kind: f"INSERT INTO {table} (res_type, res_id, {', '.join(cols)}) "
          f"VALUES (%s, %s, {', '.join(['%s'] * len(cols))})"
    for kind, (table, cols) in INDEX_TABLES.items()
}
_INSERT_LINK = "INSERT INTO resource_link (res_type, res_id, target_type, target_id) VALUES (%s, %s, %s, %s)"
DELETE_INDEX_MANY = (
    "WITH k AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS k(res_type, res_id))"
    + "".join(f", d{n} AS (DELETE FROM {table} t USING k WHERE t.res_type = k.res_type AND t.res_id = k.res_id)"
              for n, table in enumerate(ROW_TABLES))
    + " SELECT 1"
)


@dataclass(slots=True, frozen=True)
class Rows:
    """What one version adds to the index: search rows and its unversioned local references."""

    search: IndexRows
    links: tuple[tuple[str, str], ...]


def rows_for(resource: dict[str, Any]) -> Rows:
    links = {(ref.res_type, ref.res_id) for ref in literal_references(resource) if ref.version is None}
    return Rows(index_rows(resource), tuple(sorted(links)))


async def insert(conn: AsyncConnection, res_type: str, res_id: str, rows: Rows) -> None:
    async with conn.cursor() as cur:
        for kind, statement in _INSERT_INDEX.items():
            values = getattr(rows.search, kind)
            if values:
                await cur.executemany(statement, [(res_type, res_id, *value) for value in values])
        if rows.links:
            await cur.executemany(_INSERT_LINK, [(res_type, res_id, t, i) for t, i in rows.links])


async def delete(conn: AsyncConnection, res_type: str, res_id: str) -> None:
    """Remove one resource's rows from every table in one statement (one round trip)."""
    await conn.execute(DELETE_INDEX_MANY, ([res_type], [res_id]))


async def copy_rows(conn: AsyncConnection, last: dict[tuple[str, str], Rows]) -> None:
    """The index rows of many resources (each one's current version), one COPY per table."""
    async with conn.cursor() as cur:
        for kind, (table, cols) in INDEX_TABLES.items():
            found = [(t, i, *row) for (t, i), rows in last.items() for row in getattr(rows.search, kind)]
            if found:
                async with cur.copy(f"COPY {table} (res_type, res_id, {', '.join(cols)}) FROM STDIN") as copy:
                    for row in found:
                        await copy.write_row(row)
        links = [(t, i, *link) for (t, i), rows in last.items() for link in rows.links]
        if links:
            async with cur.copy("COPY resource_link (res_type, res_id, target_type, target_id) FROM STDIN") as copy:
                for row in links:
                    await copy.write_row(row)


# Search parameters whose index rows changed meaning after resources were stored, with the
# element every resource that has rows must carry: backfill() writes their rows where absent.
BACKFILLED = {"phonetic": "name"}
_BACKFILL_BATCH = 1000


async def backfill(conn: AsyncConnection) -> int:
    """Write the rows of each BACKFILLED parameter for the current resources that have none (those
    stored before the parameter was indexed as it is now); returns how many resources gained
    rows. Idempotent, under an advisory lock, so API processes starting together do it once."""
    done = 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('ipc-hub:index-backfill', 0))")
        for param, element in BACKFILLED.items():
            types = sorted(_types_with(param))
            cur = await conn.execute(
                "SELECT r.res_type, r.res_id, r.content::text FROM resource r WHERE r.res_type = ANY(%s) "
                "AND NOT r.deleted AND r.content::jsonb ? %s AND NOT EXISTS (SELECT 1 FROM idx_string s "
                "WHERE s.res_type = r.res_type AND s.res_id = r.res_id AND s.param = %s) LIMIT %s",
                (types, element, param, _BACKFILL_BATCH * 100))
            found = []
            for res_type, res_id, content in await cur.fetchall():
                rows = [row for row in index_rows(jsontext.loads(content)).strings if row[0] == param]
                found += [(res_type, res_id, *row) for row in rows]
                done += bool(rows)
            if found:
                async with conn.cursor() as cur2:
                    await cur2.executemany(_INSERT_INDEX["strings"], found)
    return done


def _types_with(param: str) -> list[str]:
    return [t for t in resource_types() if param in supported_params(t)]
