"""The record store on PostgreSQL: create, read, vread, update, delete and history of any
supported resource, each write keeping every version and refreshing the search index in the
same transaction.

Functions take an open async connection; the caller (an API route, a Bundle, a worker step)
owns the transaction, so several writes can commit or roll back together."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.consent.grants import grants_of
from hub.consent.parts import compartment_patient, record_part
from hub.fhir import jsontext
from hub.fhir.errors import FhirError, gone, not_found
from hub.search.access import Viewer, visible_sql
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

_READ = ("SELECT version, last_updated, deleted, content::text, patient_id FROM resource r "
         "WHERE res_type = %s AND res_id = %s")
_VREAD = ("SELECT version, last_updated, deleted, content::text, patient_id FROM resource_version r "
          "WHERE res_type = %s AND res_id = %s AND version = %s")
_LOCK = "SELECT version, deleted FROM resource WHERE res_type = %s AND res_id = %s FOR UPDATE"
_INSERT_NEW = (
    "INSERT INTO resource (res_type, res_id, version, last_updated, deleted, content, patient_id, part) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (res_type, res_id) DO NOTHING RETURNING 1"
)
_UPDATE = ("UPDATE resource SET version = %s, last_updated = %s, deleted = %s, content = %s, "
           "patient_id = %s, part = %s WHERE res_type = %s AND res_id = %s")
_LOCK_CONTENT = ("SELECT version, deleted, content::text, last_updated FROM resource "
                 "WHERE res_type = %s AND res_id = %s FOR UPDATE")
# Each version goes to resource_version and, in the same statement (no extra round trip), a
# change event to the outbox that the pipeline's relay publishes to Kafka.
# The patient and record part travel with the version and the change event, so history and
# event delivery can be filtered by consent exactly as reads are.
_INSERT_VERSION = (
    "WITH v AS (INSERT INTO resource_version "
    "(res_type, res_id, version, last_updated, deleted, method, content, patient_id, part) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)) "
    "INSERT INTO outbox (res_type, res_id, version, method, patient_id, part) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)
_DELETE_GRANTS = "DELETE FROM consent_grant WHERE consent_id = %s"
_INSERT_GRANT = ("INSERT INTO consent_grant (consent_id, patient_id, role, org_id, org_code, part, permit) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s)")


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
    # The Patient whose record holds this resource (None: in nobody's), for audit and events.
    patient_id: str | None = None

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


def _with_visibility(statement: str, params: tuple, viewer: Viewer | None) -> tuple[str, list]:
    """`statement` (a SELECT of one row from alias r) with a last column saying whether
    `viewer` may see that row: the consent check rides on the read itself, one round trip."""
    if viewer is None:
        return statement.replace(" FROM ", ", TRUE FROM ", 1), list(params)
    text, extra = visible_sql(viewer, "r")
    key = (statement, text)
    full = _VISIBLE_STATEMENTS.get(key)
    if full is None:
        if len(_VISIBLE_STATEMENTS) >= 1024:
            _VISIBLE_STATEMENTS.clear()
        full = _VISIBLE_STATEMENTS[key] = statement.replace(" FROM ", f", {text} FROM ", 1)
    extra += params
    return full, extra


# (statement, visibility predicate) → the statement with the predicate as its last column:
# one entry per statement and organisation reading, built once rather than per read.
_VISIBLE_STATEMENTS: dict[tuple[str, str], str] = {}


async def read(conn: AsyncConnection, res_type: str, res_id: str, *, viewer: Viewer | None = None) -> Version:
    """The current version. What `viewer` may not see answers exactly as if it did not exist
    (404, never 403 or 410): a refusal would tell a partner that, say, a safeguarding record
    exists for this person, which is itself the sensitive fact."""
    cur = await conn.execute(*_with_visibility(_READ, (res_type, res_id), viewer))
    row = await cur.fetchone()
    if row is None or not row[5]:
        raise not_found(res_type, res_id)
    version, last_updated, deleted, content, patient_id, _ = row
    if deleted:
        raise gone(res_type, res_id, version)
    return Version(res_type, res_id, version, last_updated, content, patient_id=patient_id)


async def vread(conn: AsyncConnection, res_type: str, res_id: str, version: int, *,
                viewer: Viewer | None = None) -> Version:
    """One version, judged by that version's own record part (as read() judges the current)."""
    cur = await conn.execute(*_with_visibility(_VREAD, (res_type, res_id, version), viewer))
    row = await cur.fetchone()
    if row is None or not row[5]:
        raise FhirError("not-found", f"{res_type}/{res_id} has no version {version}")
    _, last_updated, deleted, content, patient_id, _ = row
    if deleted:
        raise gone(res_type, res_id, version)
    return Version(res_type, res_id, version, last_updated, content, patient_id=patient_id)


async def current_version(conn: AsyncConnection, res_type: str, res_id: str, *,
                          viewer: Viewer | None = None) -> Version | None:
    """The current version including a deletion marker, or None if the resource never existed
    (or `viewer` may not see it)."""
    cur = await conn.execute(*_with_visibility(_READ, (res_type, res_id), viewer))
    row = await cur.fetchone()
    if row is None or not row[5]:
        return None
    version, last_updated, deleted, content, patient_id, _ = row
    return Version(res_type, res_id, version, last_updated, content, deleted, patient_id=patient_id)


async def create(conn: AsyncConnection, resource: dict[str, Any], *, res_id: str | None = None,
                 viewer: Viewer | None = None) -> Version:
    """Store a new resource under a server-assigned id (any id in the body is replaced)."""
    res_id = res_id or new_id()
    return await _put(conn, resource["resourceType"], res_id, resource, if_match=None, method="POST",
                      viewer=viewer)


async def update(
    conn: AsyncConnection,
    res_type: str,
    res_id: str,
    resource: dict[str, Any],
    *,
    if_match: int | None = None,
    skip_unchanged: bool = False,
    viewer: Viewer | None = None,
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
                       previous=previous, viewer=viewer)
    return saved, previous is None or previous[1]


async def delete(conn: AsyncConnection, res_type: str, res_id: str, *, if_match: int | None = None,
                 viewer: Viewer | None = None) -> Version | None:
    """Mark the resource deleted (its history stays). Deleting what is absent or already deleted
    changes nothing and returns None, as the FHIR delete interaction allows."""
    place = await _current_place(conn, res_type, res_id)
    await check_may_write(conn, viewer, res_type, res_id, place, existing=True)
    previous = await _lock(conn, res_type, res_id)
    if previous is None or previous[1]:
        if if_match is not None:
            raise _stale(res_type, res_id, if_match, None)
        return None
    if if_match is not None and previous[0] != if_match:
        raise _stale(res_type, res_id, if_match, previous[0])
    version = previous[0] + 1
    moment = datetime.now(UTC)
    patient_id, part = place
    await conn.execute(_UPDATE, (version, moment, True, None, patient_id, part, res_type, res_id))
    await conn.execute(_INSERT_VERSION, (res_type, res_id, version, moment, True, "DELETE", None,
                                         patient_id, part, res_type, res_id, version, "DELETE",
                                         patient_id, part))
    for statement in _DELETE_INDEX:
        await conn.execute(statement, (res_type, res_id))
    if res_type == "Consent":
        await conn.execute(_DELETE_GRANTS, (res_id,))
    return Version(res_type, res_id, version, moment, None, deleted=True, method="DELETE",
                   patient_id=patient_id)


def place_of(res_type: str, res_id: str, resource: dict[str, Any], rows: IndexRows) -> tuple[str | None, str | None]:
    """(patient id, record part) of a resource about to be stored; (None, None) outside every
    patient's compartment."""
    patient_id = compartment_patient(res_type, res_id, rows.references)
    return (patient_id, record_part(resource)) if patient_id else (None, None)


def _provenance_targets(rows: IndexRows) -> list[tuple[str, str]]:
    return [(t, i) for param, t, i, *_ in rows.references if param == "target" and t and i]


_PLACES = ("SELECT r.res_type, r.res_id, r.patient_id, r.part FROM resource r "
           "JOIN unnest(%s::text[], %s::text[]) AS k(res_type, res_id) USING (res_type, res_id) "
           "WHERE r.patient_id IS NOT NULL")


async def _places(conn: AsyncConnection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    if not keys:
        return {}
    cur = await conn.execute(_PLACES, ([t for t, _ in keys], [i for _, i in keys]))
    return {(t, i): (p, part) for t, i, p, part in await cur.fetchall()}


async def _provenance_place(conn: AsyncConnection, rows: IndexRows) -> tuple[str | None, str | None]:
    """A Provenance says where a fact about someone came from, so it sits in its target's place
    (patient and part): a client that may not see the target may not see its origin either."""
    targets = _provenance_targets(rows)
    found = await _places(conn, targets)
    return next((found[k] for k in targets if k in found), (None, None))


async def _place_provenance(conn: AsyncConnection, staged: list[Staged]) -> list[Staged]:
    """The recorder's batches: Provenance placed like its target, found in the batch itself or,
    failing that, in the store (one query for the whole batch)."""
    unplaced = [s for s in staged if s.version.res_type == "Provenance" and s.version.patient_id is None]
    if not unplaced:
        return staged
    in_batch = {(s.version.res_type, s.version.res_id): (s.version.patient_id, s.part) for s in staged
                if s.version.patient_id is not None}
    wanted = sorted({k for s in unplaced for k in _provenance_targets(s.rows) if k not in in_batch})
    known = {**await _places(conn, wanted), **in_batch}
    unplaced_ids = {id(s) for s in unplaced}
    placed = []
    for s in staged:
        if id(s) in unplaced_ids:
            place = next((known[k] for k in _provenance_targets(s.rows) if k in known), None)
            if place is not None:
                s = replace(s, version=replace(s.version, patient_id=place[0]), part=place[1])
        placed.append(s)
    return placed


async def _current_place(conn: AsyncConnection, res_type: str, res_id: str) -> tuple[str | None, str | None]:
    cur = await conn.execute("SELECT patient_id, part FROM resource WHERE res_type = %s AND res_id = %s",
                             (res_type, res_id))
    row = await cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


async def check_may_write(
    conn: AsyncConnection, viewer: Viewer | None, res_type: str, res_id: str,
    place: tuple[str | None, str | None], *, existing: bool,
) -> None:
    """A client may write only into record parts it may see, and may not overwrite or delete
    what it may not see (403: the client is told it may not, not that the record is absent,
    because it asserted the content itself). `existing` also checks the stored version."""
    if viewer is None:
        return
    predicate, params = visible_sql(viewer, "r")
    checks = [f"(SELECT {predicate} FROM (VALUES (%s::text, %s::text)) AS r(patient_id, part))"]
    args: list[Any] = [*params, *place]
    if existing:
        checks.append(f"(SELECT {predicate} FROM resource r WHERE r.res_type = %s AND r.res_id = %s)")
        args += [*params, res_type, res_id]
    cur = await conn.execute("SELECT " + ", ".join(checks), args)
    row = await cur.fetchone()
    if not row[0] or (existing and row[1] is False):
        raise FhirError("forbidden", f"this client may not write {res_type} resources in this part of "
                        "the person's record (no consent covers it)", status=403)


async def _write_grants(conn: AsyncConnection, res_id: str, resource: dict[str, Any] | None,
                        patient_id: str | None) -> None:
    """Replace a Consent's grants, in the Consent's own transaction: withdrawing consent takes
    effect on the very next request."""
    await conn.execute(_DELETE_GRANTS, (res_id,))
    found = grants_of(resource, patient_id) if resource is not None else []
    if found:
        async with conn.cursor() as cur:
            await cur.executemany(_INSERT_GRANT, [(res_id, g.patient_id, g.role, g.org_id, g.org_code,
                                                   g.part, g.permit) for g in found])


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
    viewer: Viewer | None = None,
) -> Version:
    rows = index_rows(resource)
    patient_id, part = place_of(res_type, res_id, resource, rows)
    if patient_id is None and res_type == "Provenance":
        patient_id, part = await _provenance_place(conn, rows)
    await check_may_write(conn, viewer, res_type, res_id, (patient_id, part), existing=previous is not None)
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
            cur = await conn.execute(_INSERT_NEW, (res_type, res_id, version, moment, False, content,
                                                   patient_id, part))
            if await cur.fetchone() is None:
                # Another writer created it between our look and our insert: take its row lock
                # and write the next version on top.
                previous = await _lock(conn, res_type, res_id)
                continue
        else:
            await conn.execute(_UPDATE, (version, moment, False, content, patient_id, part, res_type, res_id))
            for statement in _DELETE_INDEX:
                await conn.execute(statement, (res_type, res_id))
        await conn.execute(_INSERT_VERSION, (res_type, res_id, version, moment, False, method, content,
                                             patient_id, part, res_type, res_id, version, method,
                                             patient_id, part))
        await _insert_index(conn, res_type, res_id, rows)
        if res_type == "Consent":
            await _write_grants(conn, res_id, resource, patient_id)
        return Version(res_type, res_id, version, moment, content, method=method, patient_id=patient_id)


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
    "content = v.content::json, patient_id = v.patient_id, part = v.part "
    "FROM unnest(%s::text[], %s::text[], %s::int[], %s::timestamptz[], %s::text[], %s::text[], %s::text[]) "
    "AS v(res_type, res_id, version, last_updated, content, patient_id, part) "
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
    part: str | None = None  # the record part (version.patient_id says whose record)


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
    rows = index_rows(resource)
    patient_id, part = place_of(res_type, res_id, resource, rows)
    return Staged(Version(res_type, res_id, version, moment, content, patient_id=patient_id), rows, part)


async def write_staged(conn: AsyncConnection, staged: list[Staged], existing: set[tuple[str, str]]) -> None:
    """Write staged versions in order: every version (and its change event) with one COPY each,
    each resource's current row and index once, for its last version. `existing` holds the keys
    that had a row before the batch (updated in place; the others are inserted)."""
    if not staged:
        return
    staged = await _place_provenance(conn, staged)
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
            parts = [last[(v.res_type, v.res_id)].part for v in updated]
            await cur.execute(_UPDATE_MANY, (types, ids, [v.version for v in updated],
                                             [v.last_updated for v in updated], [v.content for v in updated],
                                             [v.patient_id for v in updated], parts))
            await cur.execute(_DELETE_INDEX_MANY, (types, ids))
        if inserted:
            async with cur.copy("COPY resource (res_type, res_id, version, last_updated, deleted, content, "
                                "patient_id, part) FROM STDIN") as copy:
                for v in inserted:
                    await copy.write_row((v.res_type, v.res_id, v.version, v.last_updated, False, v.content,
                                          v.patient_id, last[(v.res_type, v.res_id)].part))
        async with cur.copy("COPY resource_version (res_type, res_id, version, last_updated, deleted, method, "
                            "content, patient_id, part) FROM STDIN") as copy:
            for s in staged:
                v = s.version
                await copy.write_row((v.res_type, v.res_id, v.version, v.last_updated, False, v.method, v.content,
                                      v.patient_id, s.part))
        async with cur.copy("COPY outbox (res_type, res_id, version, method, patient_id, part) FROM STDIN") as copy:
            for s in staged:
                v = s.version
                await copy.write_row((v.res_type, v.res_id, v.version, v.method, v.patient_id, s.part))
        for kind, (table, cols) in _INDEX_TABLES.items():
            rows = [(res_type, res_id, *row) for (res_type, res_id), s in last.items() for row in getattr(s.rows, kind)]
            if rows:
                async with cur.copy(f"COPY {table} (res_type, res_id, {', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(row)
    for (res_type, res_id), s in last.items():
        if res_type == "Consent":
            await _write_grants(conn, res_id, jsontext.loads(s.version.content), s.version.patient_id)


async def history(
    conn: AsyncConnection,
    *,
    res_type: str | None = None,
    res_id: str | None = None,
    since: datetime | None = None,
    count: int = 50,
    offset: int = 0,
    viewer: Viewer | None = None,
    types: list[str] | None = None,
) -> tuple[list[Version], int]:
    """Versions newest first, for one resource, one type or the whole server; and their total.
    With a viewer, only the versions it may see (each judged by its own record part), of
    `types` when given (system history: the types the client may search)."""
    where: list[str] = []
    args: list[Any] = []
    if viewer is not None:
        predicate, params = visible_sql(viewer, "resource_version")
        where.append(predicate)
        args += params
    if types is not None:
        where.append("res_type = ANY(%s)")
        args.append(types)
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
        "SELECT res_type, res_id, version, last_updated, deleted, method, content::text, patient_id, "
        f"count(*) OVER () FROM resource_version {clause} "
        "ORDER BY last_updated DESC, res_type, res_id, version DESC LIMIT %s OFFSET %s",
        (*args, count, offset),
    )
    rows = await cur.fetchall()
    if not rows and offset:
        cur = await conn.execute(f"SELECT count(*) FROM resource_version {clause}", args)
        total = (await cur.fetchone())[0]
    else:
        total = rows[0][8] if rows else 0
    versions = [Version(t, i, v, lu, c, d, m, p) for t, i, v, lu, d, m, c, p, _ in rows]
    return versions, total


async def everything(
    conn: AsyncConnection,
    patient_id: str,
    *,
    types: list[str] | None = None,
    count: int,
    offset: int,
    viewer: Viewer | None = None,
) -> tuple[list[Version], int]:
    """The person's whole record: the Patient, every resource that references them, and what
    the Patient itself references (registered GP, managing organisation, linked records).
    With a viewer, only what it may see; `types` (also the client's readable types) narrows."""
    await read(conn, "Patient", patient_id, viewer=viewer)  # 404 / 410 for an unknown, hidden or deleted person
    type_filter = "AND r.res_type = ANY(%s)" if types is not None else ""
    args: list[Any] = [patient_id, patient_id, patient_id]
    if types is not None:
        args.append(types)
    if viewer is not None:
        predicate, params = visible_sql(viewer, "r")
        type_filter += f" AND {predicate}"
        args += params
    cur = await conn.execute(
        "WITH members AS ("
        "  SELECT 'Patient' AS res_type, %s AS res_id"
        "  UNION SELECT res_type, res_id FROM idx_reference"
        "        WHERE target_type = 'Patient' AND target_id = %s"
        "  UNION SELECT target_type, target_id FROM idx_reference"
        "        WHERE res_type = 'Patient' AND res_id = %s AND target_id IS NOT NULL)"
        " SELECT r.res_type, r.res_id, r.version, r.last_updated, r.content::text, r.patient_id, count(*) OVER ()"
        " FROM resource r JOIN members m USING (res_type, res_id)"
        f" WHERE NOT r.deleted {type_filter}"
        " ORDER BY r.res_type <> 'Patient', r.res_type, r.res_id LIMIT %s OFFSET %s",
        (*args, count, offset),
    )
    rows = await cur.fetchall()
    total = rows[0][6] if rows else 0
    return [Version(t, i, v, lu, c, patient_id=p) for t, i, v, lu, c, p, _ in rows], total


@dataclass(slots=True)
class SearchResult:
    matches: list[Version]
    included: list[Version]
    total: int | None  # None when the client asked for no total (_total=none)
    more: bool  # another page follows


async def search(conn: AsyncConnection, req: SearchRequest, *, with_total: bool = True,
                 viewer: Viewer | None = None) -> SearchResult:
    """One page of matches, what they include, and the total (counted only when the page alone
    cannot tell it). With a viewer, matches, total and includes count only what it may see,
    and includes only of types it may read."""
    if req.summary == "count":
        sql, params = build_count_sql(req, viewer=viewer)
        cur = await conn.execute(sql, params)
        return SearchResult([], [], (await cur.fetchone())[0], False)
    sql, params = build_search_sql(req, extra_row=True, viewer=viewer)
    cur = await conn.execute(sql, params)
    rows = await cur.fetchall()
    more = len(rows) > req.count
    matches = [Version(req.res_type, i, v, lu, c, patient_id=p) for i, v, lu, c, p in rows[: req.count]]
    total = None
    if with_total and req.total != "none":
        total = known_total(req, len(matches))
        if total is None:
            sql, params = build_count_sql(req, viewer=viewer)
            cur = await conn.execute(sql, params)
            total = (await cur.fetchone())[0]
    included = await _included(conn, req, matches, viewer) if (req.include or req.revinclude) else []
    return SearchResult(matches, included, total, more)


_INCLUDE_LEVELS = 4  # how far :iterate follows references before stopping


async def _included(conn: AsyncConnection, req: SearchRequest, matches: list[Version],
                    viewer: Viewer | None) -> list[Version]:
    seen = {(v.res_type, v.res_id) for v in matches}
    included: list[Version] = []
    frontier = matches
    for level in range(_INCLUDE_LEVELS):
        includes = [i for i in req.include if level == 0 or i.iterate]
        revincludes = [i for i in req.revinclude if level == 0 or i.iterate]
        found: list[Version] = []
        for res_type in {v.res_type for v in frontier}:
            ids = [v.res_id for v in frontier if v.res_type == res_type]
            for built in (build_include_sql(res_type, ids, includes, viewer=viewer),
                          build_revinclude_sql(res_type, ids, revincludes, viewer=viewer)):
                if built is None:
                    continue
                cur = await conn.execute(*built)
                for t, i, v, lu, c, p in await cur.fetchall():
                    if (t, i) not in seen:
                        seen.add((t, i))
                        found.append(Version(t, i, v, lu, c, patient_id=p))
        included += found
        frontier = found
        if not found:
            break
    return included
