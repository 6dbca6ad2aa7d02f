"""Resources and their versions on PostgreSQL: create, read, vread, update and delete of any
supported resource, each write keeping every version, refreshing the index (hub.store.index)
and adding a change event to the outbox in the same transaction.

Functions take an open async connection; the caller (an interaction, a Bundle, a worker step)
owns the transaction, so several writes commit or roll back together. Each takes the caller's
`Access`, with no default: a client sees and writes only what its consent allows, and the
hub's own work says so with `Access.system()`."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.consent.grants import write_grants
from hub.consent.parts import compartment_patient, outside_part, record_part
from hub.fhir import jsontext
from hub.fhir.errors import FhirError, gone, not_found
from hub.search.access import Access, visible_sql
from hub.search.extract import IndexRows
from hub.store import index
from hub.store.plans import check_one_plan_per_period

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


def version_from_etag(value: str | None, header: str = "If-Match") -> int | None:
    """`W/"3"`, `"3"` or `3` → 3: the version an If-Match, If-None-Match or Bundle ifMatch names.
    The weak and strong forms name the same version: the hub's ETags are versions."""
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 18:
        raise FhirError("invalid", f"{header} '{value[:40]}' is not a version ETag such as W/\"3\"")
    return int(text)


def new_id() -> str:
    return str(uuid.uuid4())


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC with microseconds, as meta.lastUpdated carries it."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _with_visibility(statement: str, params: tuple, access: Access) -> tuple[str, list]:
    """`statement` (a SELECT of one row from alias r) with a last column saying whether
    `access` may see that row: the consent check rides on the read itself, one round trip."""
    visible = visible_sql(access, "r")
    if visible is None:
        return statement.replace(" FROM ", ", TRUE FROM ", 1), list(params)
    text, extra = visible
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


async def read(conn: AsyncConnection, res_type: str, res_id: str, *, access: Access) -> Version:
    """The current version. What `access` may not see answers exactly as if it did not exist
    (404, never 403 or 410): a refusal would tell a partner that, say, a safeguarding record
    exists for this person, which is itself the sensitive fact."""
    cur = await conn.execute(*_with_visibility(_READ, (res_type, res_id), access))
    row = await cur.fetchone()
    if row is None or not row[5]:
        raise not_found(res_type, res_id)
    version, last_updated, deleted, content, patient_id, _ = row
    if deleted:
        raise gone(res_type, res_id, version)
    return Version(res_type, res_id, version, last_updated, content, patient_id=patient_id)


async def vread(conn: AsyncConnection, res_type: str, res_id: str, version: int, *,
                access: Access) -> Version:
    """One version, judged by that version's own record part (as read() judges the current)."""
    cur = await conn.execute(*_with_visibility(_VREAD, (res_type, res_id, version), access))
    row = await cur.fetchone()
    if row is None or not row[5]:
        raise FhirError("not-found", f"{res_type}/{res_id} has no version {version}")
    _, last_updated, deleted, content, patient_id, _ = row
    if deleted:
        raise gone(res_type, res_id, version)
    return Version(res_type, res_id, version, last_updated, content, patient_id=patient_id)


async def current_version(conn: AsyncConnection, res_type: str, res_id: str, *,
                          access: Access) -> Version | None:
    """The current version including a deletion marker, or None if the resource never existed
    (or `access` may not see it)."""
    cur = await conn.execute(*_with_visibility(_READ, (res_type, res_id), access))
    row = await cur.fetchone()
    if row is None or not row[5]:
        return None
    version, last_updated, deleted, content, patient_id, _ = row
    return Version(res_type, res_id, version, last_updated, content, deleted, patient_id=patient_id)


async def create(conn: AsyncConnection, resource: dict[str, Any], *, access: Access,
                 res_id: str | None = None) -> Version:
    """Store a new resource under a server-assigned id (any id in the body is replaced)."""
    res_id = res_id or new_id()
    return await _put(conn, resource["resourceType"], res_id, resource, if_match=None, method="POST",
                      access=access)


async def update(
    conn: AsyncConnection,
    res_type: str,
    res_id: str,
    resource: dict[str, Any],
    *,
    access: Access,
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
            if same_content(resource, row[2]):
                return Version(res_type, res_id, row[0], row[3], row[2], method=UNCHANGED), False
    else:
        previous = await _lock(conn, res_type, res_id)
    saved = await _put(conn, res_type, res_id, resource, if_match=if_match, method="PUT",
                       previous=previous, access=access)
    return saved, previous is None or previous[1]


async def delete(conn: AsyncConnection, res_type: str, res_id: str, *, access: Access,
                 if_match: int | None = None) -> Version | None:
    """Mark the resource deleted (its history stays). Deleting what is absent or already deleted
    changes nothing and returns None, as the FHIR delete interaction allows. (Whether anything
    still refers to it is the interaction's question: hub.store.integrity.)"""
    place = await _current_place(conn, res_type, res_id)
    await check_may_write(conn, access, res_type, res_id, place, existing=True)
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
    await index.delete(conn, res_type, res_id)
    if res_type == "Consent":
        await write_grants(conn, res_id, None, None)
    return Version(res_type, res_id, version, moment, None, deleted=True, method="DELETE",
                   patient_id=patient_id)


def place_of(res_type: str, res_id: str, resource: dict[str, Any], rows: IndexRows) -> tuple[str | None, str | None]:
    """(patient id, record part) of a resource about to be stored; (None, None) outside every
    patient's compartment."""
    patient_id = compartment_patient(res_type, res_id, rows.references)
    return (patient_id, record_part(resource)) if patient_id else (None, outside_part(resource))


def provenance_targets(rows: IndexRows) -> list[tuple[str, str]]:
    return [(t, i) for param, t, i, *_ in rows.references if param == "target" and t and i]


_PLACES = ("SELECT r.res_type, r.res_id, r.patient_id, r.part FROM resource r "
           "JOIN unnest(%s::text[], %s::text[]) AS k(res_type, res_id) USING (res_type, res_id) "
           "WHERE r.patient_id IS NOT NULL")


async def places(conn: AsyncConnection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """(patient id, record part) of each stored resource among `keys` that sits in someone's record."""
    if not keys:
        return {}
    cur = await conn.execute(_PLACES, ([t for t, _ in keys], [i for _, i in keys]))
    return {(t, i): (p, part) for t, i, p, part in await cur.fetchall()}


async def _provenance_place(conn: AsyncConnection, rows: IndexRows) -> tuple[str | None, str | None]:
    """A Provenance says where a fact about someone came from, so it sits in its target's place
    (patient and part): a client that may not see the target may not see its origin either."""
    targets = provenance_targets(rows)
    found = await places(conn, targets)
    return next((found[k] for k in targets if k in found), (None, None))


async def _current_place(conn: AsyncConnection, res_type: str, res_id: str) -> tuple[str | None, str | None]:
    cur = await conn.execute("SELECT patient_id, part FROM resource WHERE res_type = %s AND res_id = %s",
                             (res_type, res_id))
    row = await cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


async def check_may_write(
    conn: AsyncConnection, access: Access, res_type: str, res_id: str,
    place: tuple[str | None, str | None], *, existing: bool,
) -> None:
    """A client may write only into record parts it may see, and may not overwrite or delete
    what it may not see (403: the client is told it may not, not that the record is absent,
    because it asserted the content itself). `existing` also checks the stored version."""
    visible = visible_sql(access, "r")
    if visible is None:
        return
    predicate, params = visible
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
    access: Access,
    previous: tuple[int, bool] | None = None,
) -> Version:
    rows = index.rows_for(resource)
    patient_id, part = place_of(res_type, res_id, resource, rows.search)
    if patient_id is None and res_type == "Provenance":
        patient_id, part = await _provenance_place(conn, rows.search)
    await check_may_write(conn, access, res_type, res_id, (patient_id, part), existing=previous is not None)
    await check_one_plan_per_period(conn, resource, res_id)
    while True:
        if previous is not None and if_match is not None and previous[0] != if_match:
            raise _stale(res_type, res_id, if_match, previous[0])
        if previous is None and if_match is not None:
            raise _stale(res_type, res_id, if_match, None)
        version = 1 if previous is None else previous[0] + 1
        moment = datetime.now(UTC)
        content = stamp(resource, res_id, version, moment)
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
            await index.delete(conn, res_type, res_id)
        await conn.execute(_INSERT_VERSION, (res_type, res_id, version, moment, False, method, content,
                                             patient_id, part, res_type, res_id, version, method,
                                             patient_id, part))
        await index.insert(conn, res_type, res_id, rows)
        if res_type == "Consent":
            await write_grants(conn, res_id, resource, patient_id)
        return Version(res_type, res_id, version, moment, content, method=method, patient_id=patient_id)


def same_content(resource: dict[str, Any], stored: str) -> bool:
    """True when two bodies differ at most in id and meta (compared as written: 1.50 ≠ 1.5)."""
    def body(value: dict[str, Any]) -> bytes:
        return jsontext.dumps({k: v for k, v in value.items() if k not in ("id", "meta")})

    return body(resource) == body(jsontext.loads(stored))


def stamp(resource: dict[str, Any], res_id: str, version: int, moment: datetime) -> str:
    """Set the server-owned parts (id, meta.versionId, meta.lastUpdated) and serialise."""
    resource["id"] = res_id
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(moment)
    resource["meta"] = meta
    if next(iter(resource)) != "resourceType":
        resource = {"resourceType": resource["resourceType"], **resource}
    return jsontext.dumps(resource).decode()
