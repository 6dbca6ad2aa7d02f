"""The record store on PostgreSQL: create, read, vread, update, delete and history of any
supported resource, each write keeping every version and refreshing the search index in the
same transaction.

Functions take an open async connection; the caller (an API route, a Bundle, a worker step)
owns the transaction, so several writes can commit or roll back together."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.errors import FhirError, gone, not_found
from hub.search.extract import IndexRows, index_rows
from hub.search.parse import SearchRequest
from hub.search.sql import (
    build_count_sql,
    build_include_sql,
    build_revinclude_sql,
    build_search_sql,
    known_total,
)
from hub.store.plans import check_one_plan_per_period, check_plans_written_together

# Where each kind of index row goes, and its columns after (res_type, res_id).
_INDEX_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tokens": ("idx_token", ("param", "system", "code", "text")),
    "strings": ("idx_string", ("param", "value_norm", "value_exact")),
    "references": ("idx_reference", ("param", "target_type", "target_id", "url")),
    "dates": ("idx_date", ("param", "low", "high")),
    "numbers": ("idx_number", ("param", "low", "high")),
    "quantities": ("idx_quantity", ("param", "low", "high", "system", "code", "unit")),
    "uris": ("idx_uri", ("param", "uri")),
}
_INSERT_INDEX = {
    kind: f"INSERT INTO {table} (res_type, res_id, {', '.join(cols)}) "
          f"VALUES (%s, %s, {', '.join(['%s'] * len(cols))})"
    for kind, (table, cols) in _INDEX_TABLES.items()
}
_DELETE_INDEX = [f"DELETE FROM {table} WHERE res_type = %s AND res_id = %s"
                 for table, _ in _INDEX_TABLES.values()]

_READ = ("SELECT version, last_updated, deleted, content::text FROM resource "
         "WHERE res_type = %s AND res_id = %s")
_VREAD = ("SELECT version, last_updated, deleted, content::text FROM resource_version "
          "WHERE res_type = %s AND res_id = %s AND version = %s")
_LOCK = "SELECT version, deleted FROM resource WHERE res_type = %s AND res_id = %s FOR UPDATE"
_INSERT_NEW = (
    "INSERT INTO resource (res_type, res_id, version, last_updated, deleted, content) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (res_type, res_id) DO NOTHING RETURNING 1"
)
_UPDATE = ("UPDATE resource SET version = %s, last_updated = %s, deleted = %s, content = %s "
           "WHERE res_type = %s AND res_id = %s")
_LOCK_CONTENT = ("SELECT version, deleted, content::text, last_updated FROM resource "
                 "WHERE res_type = %s AND res_id = %s FOR UPDATE")
# Each version goes to resource_version and, in the same statement (no extra round trip), a
# change event to the outbox that the pipeline's relay publishes to Kafka.
_INSERT_VERSION = (
    "WITH v AS (INSERT INTO resource_version "
    "(res_type, res_id, version, last_updated, deleted, method, content) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)) "
    "INSERT INTO outbox (res_type, res_id, version, method) VALUES (%s, %s, %s, %s)"
)


# Version.method of what update(skip_unchanged=True) returns when it wrote nothing.
UNCHANGED = "UNCHANGED"


@dataclass(slots=True, frozen=True)
class Version:
    """One stored version of a resource. `content` is the JSON text as served (None if deleted)."""

    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    content: str | None
    deleted: bool = False
    method: str = "PUT"

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def reference(self) -> str:
        return f"{self.res_type}/{self.res_id}"


def version_from_etag(value: str | None) -> int | None:
    """`W/"3"` (or `"3"`, or `3`) → 3: the version an If-Match or Bundle ifMatch names."""
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise FhirError("invalid", f"If-Match '{value[:40]}' is not a version ETag such as W/\"3\"")
    return int(text)


def new_id() -> str:
    return str(uuid.uuid4())


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC with microseconds, as meta.lastUpdated carries it."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def read(conn: AsyncConnection, res_type: str, res_id: str) -> Version:
    cur = await conn.execute(_READ, (res_type, res_id))
    row = await cur.fetchone()
    if row is None:
        raise not_found(res_type, res_id)
    version, last_updated, deleted, content = row
    if deleted:
        raise gone(res_type, res_id, version)
    return Version(res_type, res_id, version, last_updated, content)


async def vread(conn: AsyncConnection, res_type: str, res_id: str, version: int) -> Version:
    cur = await conn.execute(_VREAD, (res_type, res_id, version))
    row = await cur.fetchone()
    if row is None:
        raise FhirError("not-found", f"{res_type}/{res_id} has no version {version}")
    _, last_updated, deleted, content = row
    if deleted:
        raise gone(res_type, res_id, version)
    return Version(res_type, res_id, version, last_updated, content)


async def current_version(conn: AsyncConnection, res_type: str, res_id: str) -> Version | None:
    """The current version including a deletion marker, or None if the resource never existed."""
    cur = await conn.execute(_READ, (res_type, res_id))
    row = await cur.fetchone()
    if row is None:
        return None
    version, last_updated, deleted, content = row
    return Version(res_type, res_id, version, last_updated, content, deleted)


async def create(conn: AsyncConnection, resource: dict[str, Any], *, res_id: str | None = None) -> Version:
    """Store a new resource under a server-assigned id (any id in the body is replaced)."""
    res_id = res_id or new_id()
    return await _put(conn, resource["resourceType"], res_id, resource, if_match=None, method="POST")


async def update(
    conn: AsyncConnection,
    res_type: str,
    res_id: str,
    resource: dict[str, Any],
    *,
    if_match: int | None = None,
    skip_unchanged: bool = False,
) -> tuple[Version, bool]:
    """Store a new version (or the first, update-as-create). Returns (version, created).

    Concurrent writers to one resource are serialised by a row lock; with `if_match` the write
    happens only if the current version is still that one (else 412), which is how two
    coordinators editing one plan learn that the other saved first.

    With `skip_unchanged` (the pipeline's recorder), content equal to the current version's
    apart from id and meta writes nothing and returns the current version, so replaying a
    message leaves no empty versions. The REST API keeps FHIR's plain semantics: every PUT is a
    version.
    """
    if skip_unchanged:
        cur = await conn.execute(_LOCK_CONTENT, (res_type, res_id))
        row = await cur.fetchone()
        previous = (row[0], row[1]) if row else None
        if row is not None and not row[1] and (if_match is None or if_match == row[0]):
            if _same_content(resource, row[2]):
                return Version(res_type, res_id, row[0], row[3], row[2], method=UNCHANGED), False
    else:
        previous = await _lock(conn, res_type, res_id)
    saved = await _put(conn, res_type, res_id, resource, if_match=if_match, method="PUT",
                       previous=previous)
    return saved, previous is None or previous[1]


async def delete(conn: AsyncConnection, res_type: str, res_id: str, *, if_match: int | None = None) -> Version | None:
    """Mark the resource deleted (its history stays). Deleting what is absent or already deleted
    changes nothing and returns None, as the FHIR delete interaction allows."""
    previous = await _lock(conn, res_type, res_id)
    if previous is None or previous[1]:
        if if_match is not None:
            raise _stale(res_type, res_id, if_match, None)
        return None
    if if_match is not None and previous[0] != if_match:
        raise _stale(res_type, res_id, if_match, previous[0])
    version = previous[0] + 1
    moment = datetime.now(UTC)
    await conn.execute(_UPDATE, (version, moment, True, None, res_type, res_id))
    await conn.execute(_INSERT_VERSION, (res_type, res_id, version, moment, True, "DELETE", None,
                                         res_type, res_id, version, "DELETE"))
    for statement in _DELETE_INDEX:
        await conn.execute(statement, (res_type, res_id))
    return Version(res_type, res_id, version, moment, None, deleted=True, method="DELETE")


async def _lock(conn: AsyncConnection, res_type: str, res_id: str) -> tuple[int, bool] | None:
    cur = await conn.execute(_LOCK, (res_type, res_id))
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None


def _stale(res_type: str, res_id: str, expected: int, actual: int | None) -> FhirError:
    now = "does not exist" if actual is None else f"is at version {actual}"
    return FhirError("conflict", f"If-Match version {expected} is stale: {res_type}/{res_id} {now}",
                     status=412)


async def _put(
    conn: AsyncConnection,
    res_type: str,
    res_id: str,
    resource: dict[str, Any],
    *,
    if_match: int | None,
    method: str,
    previous: tuple[int, bool] | None = None,
) -> Version:
    await check_one_plan_per_period(conn, resource, res_id)
    while True:
        if previous is not None and if_match is not None and previous[0] != if_match:
            raise _stale(res_type, res_id, if_match, previous[0])
        if previous is None and if_match is not None:
            raise _stale(res_type, res_id, if_match, None)
        version = 1 if previous is None else previous[0] + 1
        moment = datetime.now(UTC)
        content = _stamp(resource, res_id, version, moment)
        if previous is None:
            cur = await conn.execute(_INSERT_NEW, (res_type, res_id, version, moment, False, content))
            if await cur.fetchone() is None:
                # Another writer created it between our look and our insert: take its row lock
                # and write the next version on top.
                previous = await _lock(conn, res_type, res_id)
                continue
        else:
            await conn.execute(_UPDATE, (version, moment, False, content, res_type, res_id))
            for statement in _DELETE_INDEX:
                await conn.execute(statement, (res_type, res_id))
        await conn.execute(_INSERT_VERSION, (res_type, res_id, version, moment, False, method, content,
                                             res_type, res_id, version, method))
        await _insert_index(conn, res_type, res_id, index_rows(resource))
        return Version(res_type, res_id, version, moment, content, method=method)


def _same_content(resource: dict[str, Any], stored: str) -> bool:
    """True when two bodies differ at most in id and meta (compared as written: 1.50 ≠ 1.5)."""
    def body(value: dict[str, Any]) -> bytes:
        return jsontext.dumps({k: v for k, v in value.items() if k not in ("id", "meta")})

    return body(resource) == body(jsontext.loads(stored))


def _stamp(resource: dict[str, Any], res_id: str, version: int, moment: datetime) -> str:
    """Set the server-owned parts (id, meta.versionId, meta.lastUpdated) and serialise."""
    resource["id"] = res_id
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(moment)
    resource["meta"] = meta
    if next(iter(resource)) != "resourceType":
        resource = {"resourceType": resource["resourceType"], **resource}
    return jsontext.dumps(resource).decode()


async def _insert_index(conn: AsyncConnection, res_type: str, res_id: str, rows: IndexRows) -> None:
    async with conn.cursor() as cur:
        for kind, statement in _INSERT_INDEX.items():
            values = getattr(rows, kind)
            if values:
                await cur.executemany(statement, [(res_type, res_id, *value) for value in values])



# The recorder's batch write: every resource of a polled batch locked with one statement, the
# new versions worked out in memory, then written with one statement or COPY per table instead
# of ~20 round trips per message. The REST API keeps update()/_put() above.
_LOCK_MANY = (
    "SELECT r.res_type, r.res_id, r.version, r.deleted, r.content::text, r.last_updated "
    "FROM resource r JOIN unnest(%s::text[], %s::text[]) AS k(res_type, res_id) USING (res_type, res_id) "
    "ORDER BY r.res_type, r.res_id FOR UPDATE OF r"
)
_UPDATE_MANY = (
    "UPDATE resource r SET version = v.version, last_updated = v.last_updated, deleted = false, "
    "content = v.content::json FROM unnest(%s::text[], %s::text[], %s::int[], %s::timestamptz[], %s::text[]) "
    "AS v(res_type, res_id, version, last_updated, content) "
    "WHERE r.res_type = v.res_type AND r.res_id = v.res_id"
)
_DELETE_INDEX_MANY = (
    "WITH k AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS k(res_type, res_id))"
    + "".join(f", d{n} AS (DELETE FROM {table} t USING k WHERE t.res_type = k.res_type AND t.res_id = k.res_id)"
              for n, (table, _) in enumerate(_INDEX_TABLES.values()))
    + " SELECT 1"
)


@dataclass(slots=True, frozen=True)
class Staged:
    """A version worked out in memory by stage(), written by write_staged()."""

    version: Version
    rows: IndexRows


async def lock_current(conn: AsyncConnection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Version]:
    """Lock the rows of these (type, id) keys (in key order) and return their current versions,
    deletion markers included; keys never written are absent."""
    if not keys:
        return {}
    ordered = sorted(keys)
    cur = await conn.execute(_LOCK_MANY, ([t for t, _ in ordered], [i for _, i in ordered]))
    return {(t, i): Version(t, i, v, lu, c, d) for t, i, v, d, c, lu in await cur.fetchall()}


def stage(res_type: str, res_id: str, resource: dict[str, Any], current: Version | None) -> Staged | None:
    """update(skip_unchanged=True) worked out in memory against `current` (locked by
    lock_current, or staged earlier in the same batch): None when the content is unchanged."""
    if current is not None and not current.deleted and _same_content(resource, current.content):
        return None
    version = 1 if current is None else current.version + 1
    moment = datetime.now(UTC)
    content = _stamp(resource, res_id, version, moment)
    return Staged(Version(res_type, res_id, version, moment, content), index_rows(resource))


async def write_staged(conn: AsyncConnection, staged: list[Staged], existing: set[tuple[str, str]]) -> None:
    """Write staged versions in order: every version (and its change event) with one COPY each,
    each resource's current row and index once, for its last version. `existing` holds the keys
    that had a row before the batch (updated in place; the others are inserted)."""
    if not staged:
        return
    last: dict[tuple[str, str], Staged] = {}
    for s in staged:
        last[(s.version.res_type, s.version.res_id)] = s
    await check_plans_written_together(conn, [(jsontext.loads(s.version.content), s.version.res_id)
                                              for s in last.values() if s.version.res_type == "CarePlan"])
    updated = [s.version for k, s in last.items() if k in existing]
    inserted = [s.version for k, s in last.items() if k not in existing]
    async with conn.cursor() as cur:
        if updated:
            types, ids = [v.res_type for v in updated], [v.res_id for v in updated]
            await cur.execute(_UPDATE_MANY, (types, ids, [v.version for v in updated],
                                             [v.last_updated for v in updated], [v.content for v in updated]))
            await cur.execute(_DELETE_INDEX_MANY, (types, ids))
        if inserted:
            async with cur.copy("COPY resource (res_type, res_id, version, last_updated, deleted, content) "
                                "FROM STDIN") as copy:
                for v in inserted:
                    await copy.write_row((v.res_type, v.res_id, v.version, v.last_updated, False, v.content))
        async with cur.copy("COPY resource_version (res_type, res_id, version, last_updated, deleted, method, "
                            "content) FROM STDIN") as copy:
            for s in staged:
                v = s.version
                await copy.write_row((v.res_type, v.res_id, v.version, v.last_updated, False, v.method, v.content))
        async with cur.copy("COPY outbox (res_type, res_id, version, method) FROM STDIN") as copy:
            for s in staged:
                v = s.version
                await copy.write_row((v.res_type, v.res_id, v.version, v.method))
        for kind, (table, cols) in _INDEX_TABLES.items():
            rows = [(res_type, res_id, *row) for (res_type, res_id), s in last.items() for row in getattr(s.rows, kind)]
            if rows:
                async with cur.copy(f"COPY {table} (res_type, res_id, {', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(row)


async def history(
    conn: AsyncConnection,
    *,
    res_type: str | None = None,
    res_id: str | None = None,
    since: datetime | None = None,
    count: int = 50,
    offset: int = 0,
) -> tuple[list[Version], int]:
    """Versions newest first, for one resource, one type or the whole server; and their total."""
    where, args = [], []
    if res_type is not None:
        where.append("res_type = %s")
        args.append(res_type)
    if res_id is not None:
        where.append("res_id = %s")
        args.append(res_id)
    if since is not None:
        where.append("last_updated >= %s")
        args.append(since)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    cur = await conn.execute(
        "SELECT res_type, res_id, version, last_updated, deleted, method, content::text, "
        f"count(*) OVER () FROM resource_version {clause} "
        "ORDER BY last_updated DESC, res_type, res_id, version DESC LIMIT %s OFFSET %s",
        (*args, count, offset),
    )
    rows = await cur.fetchall()
    if not rows and offset:
        cur = await conn.execute(f"SELECT count(*) FROM resource_version {clause}", args)
        total = (await cur.fetchone())[0]
    else:
        total = rows[0][7] if rows else 0
    versions = [Version(t, i, v, lu, c, d, m) for t, i, v, lu, d, m, c, _ in rows]
    return versions, total


async def everything(
    conn: AsyncConnection,
    patient_id: str,
    *,
    types: list[str] | None = None,
    count: int,
    offset: int,
) -> tuple[list[Version], int]:
    """The person's whole record: the Patient, every resource that references them, and what
    the Patient itself references (registered GP, managing organisation, linked records)."""
    await read(conn, "Patient", patient_id)  # 404 / 410 for an unknown or deleted person
    type_filter = "AND r.res_type = ANY(%s)" if types else ""
    args: list[Any] = [patient_id, patient_id, patient_id]
    if types:
        args.append(types)
    cur = await conn.execute(
        "WITH members AS ("
        "  SELECT 'Patient' AS res_type, %s AS res_id"
        "  UNION SELECT res_type, res_id FROM idx_reference"
        "        WHERE target_type = 'Patient' AND target_id = %s"
        "  UNION SELECT target_type, target_id FROM idx_reference"
        "        WHERE res_type = 'Patient' AND res_id = %s AND target_id IS NOT NULL)"
        " SELECT r.res_type, r.res_id, r.version, r.last_updated, r.content::text, count(*) OVER ()"
        " FROM resource r JOIN members m USING (res_type, res_id)"
        f" WHERE NOT r.deleted {type_filter}"
        " ORDER BY r.res_type <> 'Patient', r.res_type, r.res_id LIMIT %s OFFSET %s",
        (*args, count, offset),
    )
    rows = await cur.fetchall()
    total = rows[0][5] if rows else 0
    return [Version(t, i, v, lu, c) for t, i, v, lu, c, _ in rows], total


@dataclass(slots=True)
class SearchResult:
    matches: list[Version]
    included: list[Version]
    total: int | None  # None when the client asked for no total (_total=none)
    more: bool  # another page follows


async def search(conn: AsyncConnection, req: SearchRequest, *, with_total: bool = True) -> SearchResult:
    """One page of matches, what they include, and the total (counted only when the page alone
    cannot tell it)."""
    if req.summary == "count":
        sql, params = build_count_sql(req)
        cur = await conn.execute(sql, params)
        return SearchResult([], [], (await cur.fetchone())[0], False)
    sql, params = build_search_sql(req, extra_row=True)
    cur = await conn.execute(sql, params)
    rows = await cur.fetchall()
    more = len(rows) > req.count
    matches = [Version(req.res_type, i, v, lu, c) for i, v, lu, c in rows[: req.count]]
    total = None
    if with_total and req.total != "none":
        total = known_total(req, len(matches))
        if total is None:
            sql, params = build_count_sql(req)
            cur = await conn.execute(sql, params)
            total = (await cur.fetchone())[0]
    included = await _included(conn, req, matches) if (req.include or req.revinclude) else []
    return SearchResult(matches, included, total, more)


_INCLUDE_LEVELS = 4  # how far :iterate follows references before stopping


async def _included(conn: AsyncConnection, req: SearchRequest, matches: list[Version]) -> list[Version]:
    seen = {(v.res_type, v.res_id) for v in matches}
    included: list[Version] = []
    frontier = matches
    for level in range(_INCLUDE_LEVELS):
        includes = [i for i in req.include if level == 0 or i.iterate]
        revincludes = [i for i in req.revinclude if level == 0 or i.iterate]
        found: list[Version] = []
        for res_type in {v.res_type for v in frontier}:
            ids = [v.res_id for v in frontier if v.res_type == res_type]
            for built in (build_include_sql(res_type, ids, includes),
                          build_revinclude_sql(res_type, ids, revincludes)):
                if built is None:
                    continue
                cur = await conn.execute(*built)
                for t, i, v, lu, c in await cur.fetchall():
                    if (t, i) not in seen:
                        seen.add((t, i))
                        found.append(Version(t, i, v, lu, c))
        included += found
        frontier = found
        if not found:
            break
    return included
