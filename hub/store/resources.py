"""Resources and their versions on PostgreSQL: create, read, vread, update and delete of any
supported resource, each write keeping every version, refreshing the index (hub.store.index)
and adding a change event to the outbox in the same transaction.

Functions take an open async connection; the caller (an interaction, a Bundle, a worker step)
owns the transaction, so several writes commit or roll back together. Each takes the caller's
`Access`, with no default: a client sees and writes only what its consent allows, and the
hub's own work says so with `Access.system()`."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, pq

from hub.consent.authority import authorise
from hub.consent.grants import decides_access, write_grants
from hub.consent.placement import Place
from hub.fhir import ids, jsontext
from hub.fhir.errors import FhirError, gone, not_found
from hub.search.access import Access, visible_sql
from hub.store import index, placing
from hub.store.audit import record_consent_change
from hub.store.plans import check_ehc_plan_end, check_one_plan_per_period, queue_followups, settle_plan

_READ = ("SELECT version, last_updated, deleted, content::text, patient_id FROM resource r "
         "WHERE res_type = %s AND res_id = %s")
_VREAD = ("SELECT version, last_updated, deleted, content::text, patient_id FROM resource_version r "
          "WHERE res_type = %s AND res_id = %s AND version = %s")
# The row a write is about to replace, locked, with where it sits (and, as the last column,
# whether the writer may see it): one statement, whether the resource is absent or hidden.
_LOCK = ("SELECT version, deleted, patient_id, part, owner FROM resource r "
         "WHERE res_type = %s AND res_id = %s FOR UPDATE")
_INSERT_NEW = (
    "INSERT INTO resource (res_type, res_id, version, last_updated, deleted, content, patient_id, part, owner) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (res_type, res_id) DO NOTHING RETURNING 1"
)
_INSERT_FIRST = (
    "INSERT INTO resource (res_type, res_id, version, last_updated, deleted, content, patient_id, part, owner) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPDATE = ("UPDATE resource SET version = %s, last_updated = %s, deleted = %s, content = %s, "
           "patient_id = %s, part = %s, owner = %s WHERE res_type = %s AND res_id = %s")
_LOCK_CONTENT = ("SELECT version, deleted, content::text, last_updated FROM resource "
                 "WHERE res_type = %s AND res_id = %s FOR UPDATE")
# Each version goes to resource_version and, in the same statement (no extra round trip), a
# change event to the outbox that the pipeline's relay publishes to Kafka.
# The patient and record part travel with the version and the change event, so history and
# event delivery can be filtered by consent exactly as reads are.
_INSERT_VERSION = (
    "WITH v AS (INSERT INTO resource_version "
    "(res_type, res_id, version, last_updated, deleted, method, content, patient_id, part, owner) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)) "
    "INSERT INTO outbox (res_type, res_id, version, method, patient_id, part, owner) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
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
    # The Patient whose record holds this resource (None: in nobody's), for audit and events;
    # as written, its record part and (kept apart with one organisation) its owner.
    patient_id: str | None = None
    part: str | None = None
    owner: str | None = None

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
    """A fresh id in the hub's own id space (hub.fhir.ids)."""
    return ids.new_id()


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
                 res_id: str | None = None, hold_apart: bool = False) -> Version:
    """Store a new resource under a server-assigned id (any id in the body is replaced): a fresh
    one from new_id(), which `res_id` must be when given (a transaction assigns them ahead).
    `hold_apart`: a Patient that duplicates someone `access` may not see, kept as the writer's
    own record (hub.identity.duplicates)."""
    res_id = res_id or new_id()
    return await _put(conn, resource["resourceType"], res_id, resource, if_match=None, method="POST",
                      access=access, hold_apart=hold_apart)


async def update(
    conn: AsyncConnection,
    res_type: str,
    res_id: str,
    resource: dict[str, Any],
    *,
    access: Access,
    if_match: int | None = None,
    skip_unchanged: bool = False,
    chosen: bool = True,
    accept_chosen: bool = False,
    hold_apart: bool = False,
) -> tuple[Version, bool]:
    """Store a new version (or the first, update-as-create). Returns (version, created).

    Concurrent writers to one resource are serialised by a row lock; with `if_match` the write
    happens only if the current version is still that one (else 412), which is how two
    coordinators editing one plan learn that the other saved first.

    What `access` may not see is, to it, absent: it cannot overwrite it, and since the id is
    taken it cannot create it either. So a client (`chosen`: the client chose the id, as a PUT
    does) never creates under an id it chose, absent or hidden alike (`unknown_id`): an
    update-as-create could otherwise tell a free id (201) from one a hidden resource holds. The
    hub's own work (trusted access: feeds, loaders) still creates under the ids it derives.
    `accept_chosen` (HUB_CLIENT_IDS=accept) restores FHIR's update-as-create for ids not of the
    hub's form, with that inference.

    With `skip_unchanged` (the hub's own writes: the recorder, Provenance, review Tasks), content
    equal to the current version's apart from id and meta writes nothing and returns the current
    version, so replaying a message leaves no empty versions. The REST API keeps FHIR's plain
    semantics: every PUT is a version.
    """
    if skip_unchanged:
        if not access.trusted:
            raise ValueError("skip_unchanged is for the hub's own writes")
        cur = await conn.execute(_LOCK_CONTENT, (res_type, res_id))
        row = await cur.fetchone()
        previous = Locked(row[0], row[1], True, None, None, None) if row else None
        if row is not None and not row[1] and (if_match is None or if_match == row[0]):
            if same_content(resource, row[2]):
                return Version(res_type, res_id, row[0], row[3], row[2], method=UNCHANGED), False
    else:
        previous = await lock(conn, access, res_type, res_id)
        if chosen and not access.trusted and (previous is None or not previous.visible) \
                and (ids.is_hub_form(res_id) or not accept_chosen):
            # Nothing the caller may see holds the id: a create under an id the client chose, which
            # the hub does not take from clients (405, FHIR R4 http.html#update), whether the id is
            # free or held by something hidden, so the answer tells the two apart by nothing; ids
            # of the hub's own form never (404). (A deleted resource the caller may see is
            # re-created as FHIR allows: it knows the id.)
            raise unknown_id(res_type, res_id)
        if previous is not None and not previous.visible:
            raise not_found(res_type, res_id)   # HUB_CLIENT_IDS=accept: the inference it accepts
    saved = await _put(conn, res_type, res_id, resource, if_match=if_match, method="PUT",
                       previous=previous, access=access, hold_apart=hold_apart)
    return saved, previous is None or previous.deleted


def unknown_id(res_type: str, res_id: str) -> FhirError:
    """What an update answers for an id the caller may not create: the same whether nothing,
    or something it may not see, holds it. Ids of the hub's own form are the hub's (404: no such
    resource); any other id would be one the client chose, which the hub does not accept from
    clients (405 Method Not Allowed, as FHIR R4 says of a server without client-defined ids;
    CapabilityStatement `updateCreate` false)."""
    if ids.is_hub_form(res_id):
        return FhirError("not-found", f"{res_type}/{res_id} is not known to the hub (ids of this form are the "
                         "hub's own: create a new resource with POST)")
    return FhirError("not-supported", f"{res_type}/{res_id}: no resource you may update has this id, and the hub "
                     "does not create resources under ids a client chooses: create it with POST (the hub assigns "
                     "the id), or use a conditional update without an id", status=405)


async def delete(conn: AsyncConnection, res_type: str, res_id: str, *, access: Access,
                 if_match: int | None = None) -> Version | None:
    """Mark the resource deleted (its history stays). Deleting what is absent or already deleted
    changes nothing and returns None, as the FHIR delete interaction allows — and so does
    deleting what `access` may not see: to it, that is absent too (one statement either way).
    (Whether anything still refers to it is the interaction's question: hub.store.integrity.)"""
    previous = await lock(conn, access, res_type, res_id)
    if previous is None or previous.deleted or not previous.visible:
        if if_match is not None:
            raise _stale(res_type, res_id, if_match, None)
        return None
    if if_match is not None and previous.version != if_match:
        raise _stale(res_type, res_id, if_match, previous.version)
    consent = await _consent_change(conn, access, res_type, res_id, None, None, previous)
    version = previous.version + 1
    moment = datetime.now(UTC)
    patient_id, part, owner = previous.patient_id, previous.part, previous.owner
    await conn.execute(_UPDATE, (version, moment, True, None, patient_id, part, owner, res_type, res_id))
    await conn.execute(_INSERT_VERSION, (res_type, res_id, version, moment, True, "DELETE", None,
                                         patient_id, part, owner, res_type, res_id, version, "DELETE",
                                         patient_id, part, owner))
    await index.delete(conn, res_type, res_id)
    if res_type == "Consent":
        await write_grants(conn, res_id, None, None)
        await _audit_consent(conn, access, consent, res_id, version, "DELETE")
    return Version(res_type, res_id, version, moment, None, deleted=True, method="DELETE",
                   patient_id=patient_id, part=part, owner=owner)


@dataclass(slots=True, frozen=True)
class Locked:
    """The locked current row a write replaces: its version, whether it is a deletion marker,
    whether the writer may see it, and where it sits."""

    version: int
    deleted: bool
    visible: bool
    patient_id: str | None
    part: str | None
    owner: str | None


async def lock(conn: AsyncConnection, access: Access, res_type: str, res_id: str) -> Locked | None:
    cur = await conn.execute(*_with_visibility(_LOCK, (res_type, res_id), access))
    row = await cur.fetchone()
    if row is None:
        return None
    version, deleted, patient_id, part, owner, visible = row
    return Locked(version, deleted, bool(visible), patient_id, part, owner)


async def check_may_write(conn: AsyncConnection, access: Access, res_type: str, place: Place) -> None:
    """A client may write only into record parts it may see (403: it asserted the content, so it
    is told it may not, not that the record is absent). Judged only when the person the place
    belongs to is someone the writer may see: a resource pointing at a person it may not see, or
    at no one, is refused by the reference check instead, exactly as one pointing at nobody (so
    the part check never tells whether a hidden person exists)."""
    visible = visible_sql(access, "r")
    if visible is None:
        return
    predicate, params = visible
    cur = await conn.execute(
        f"SELECT (SELECT {predicate} FROM (VALUES (%s::text, %s::text, %s::text)) AS r(patient_id, part, owner)), "
        f"(SELECT {predicate} FROM resource r WHERE r.res_type = 'Patient' AND r.res_id = %s AND NOT r.deleted)",
        [*params, place.patient_id, place.part, place.owner, *params, place.patient_id])
    may, anchor = await cur.fetchone()
    if res_type != "Patient" and place.patient_id is not None and anchor is not True:
        return  # the person is absent or hidden: hub.store.integrity refuses the reference (422)
    if not may:
        raise FhirError("forbidden", f"this client may not write {res_type} resources in this part of "
                        "the person's record (no consent covers it)", status=403)


def _stale(res_type: str, res_id: str, expected: int, actual: int | None) -> FhirError:
    now = "does not exist" if actual is None else f"is at version {actual}"
    return FhirError("conflict", f"If-Match version {expected} is stale: {res_type}/{res_id} {now}",
                     status=412)


@dataclass(slots=True, frozen=True)
class _ConsentChange:
    authority_policy: str
    who: str | None
    patient_ids: list[str]


async def _consent_change(conn: AsyncConnection, access: Access, res_type: str, res_id: str,
                          resource: dict[str, Any] | None, place: Place | None,
                          previous: Locked | None) -> _ConsentChange | None:
    """For a write (or delete: `resource` None) of a record-sharing or proxy delegation Consent,
    or of a Consent that was one: the authority it is made on (hub.consent.authority; 403 if none). None for anything
    else."""
    if res_type != "Consent":
        return None
    old_sharing, old_patient = False, None
    if previous is not None and not previous.deleted:
        cur = await conn.execute("SELECT content::text, patient_id FROM resource WHERE res_type = 'Consent' "
                                 "AND res_id = %s", (res_id,))
        row = await cur.fetchone()
        if row is not None and row[0] is not None:
            old_sharing, old_patient = decides_access(jsontext.loads(row[0])), row[1]
    new_sharing = resource is not None and decides_access(resource)
    if not (old_sharing or new_sharing):
        return None
    patient_ids = {p for p in (old_patient if old_sharing else None,
                               place.patient_id if new_sharing and place is not None else None) if p}
    authority = await authorise(conn, access, patient_ids, resource)
    return _ConsentChange(authority.policy, authority.who, sorted(patient_ids))


def _identifiers(resource: dict[str, Any]) -> set[tuple[Any, Any]]:
    return {(i.get("system"), i.get("value")) for i in resource.get("identifier") or () if isinstance(i, dict)}


async def _check_organisation_identity(conn: AsyncConnection, access: Access, res_id: str,
                                       resource: dict[str, Any]) -> None:
    """Changing an Organization's identifiers is an operator's act (a staff user in the operator
    role, or the hub itself): an organisation's identity is what consent grants and clients are
    bound to, and no partner may rename one, or itself into one."""
    if access.trusted or access.user_role == "operator":
        return
    cur = await conn.execute("SELECT content::text FROM resource WHERE res_type = 'Organization' AND res_id = %s",
                             (res_id,))
    row = await cur.fetchone()
    if row is None or row[0] is None or _identifiers(jsontext.loads(row[0])) == _identifiers(resource):
        return
    raise FhirError("forbidden", f"changing the identifiers of Organization/{res_id} is an operator's act (a "
                    "partner client may update an Organization's other details only)",
                    expression="Organization.identifier", status=403)


async def _audit_consent(conn: AsyncConnection, access: Access, change: _ConsentChange | None, res_id: str,
                         version: int, method: str) -> None:
    if change is None:
        return
    await record_consent_change(
        conn, consent_id=res_id, version=version, method=method, patient_ids=change.patient_ids,
        policy=change.authority_policy, client_id=access.client_id,
        organisation=None if access.trusted else access.org_code,
        organisation_system=None if access.trusted else access.org_system,
        partner_class=None if access.trusted else access.partner_class, user_ref=change.who)


async def _put(
    conn: AsyncConnection,
    res_type: str,
    res_id: str,
    resource: dict[str, Any],
    *,
    if_match: int | None,
    method: str,
    access: Access,
    previous: Locked | None = None,
    hold_apart: bool = False,
) -> Version:
    rows = index.rows_for(resource)
    place = await placing.place(conn, access, res_type, res_id, resource, rows.search)
    # A Patient held apart is judged exactly as if it were joining the shared record (so the
    # answer is the one an absent person would get), and then kept with its writer.
    await check_may_write(conn, access, res_type, place)
    if hold_apart:
        place = Place(place.patient_id, place.part, access.owner_key)
    settled = await settle_plan(conn, resource, res_id)
    if settled is not resource:   # the plan's life cycle derived something (status, next review date)
        resource = settled
        rows = index.rows_for(resource)
        replaced = await placing.place(conn, access, res_type, res_id, resource, rows.search)
        place = Place(replaced.patient_id, replaced.part, place.owner)
    consent = await _consent_change(conn, access, res_type, res_id, resource, place, previous)
    if res_type == "Organization" and previous is not None and not previous.deleted:
        await _check_organisation_identity(conn, access, res_id, resource)
    await check_ehc_plan_end(conn, resource)
    await check_one_plan_per_period(conn, resource, res_id)
    patient_id, part, owner = place.patient_id, place.part, place.owner
    while True:
        if previous is not None and if_match is not None and previous.version != if_match:
            raise _stale(res_type, res_id, if_match, previous.version)
        if previous is None and if_match is not None:
            raise _stale(res_type, res_id, if_match, None)
        version = 1 if previous is None else previous.version + 1
        moment = datetime.now(UTC)
        content = stamp(resource, res_id, version, moment)
        if previous is None and method == "POST":
            # A create's id is new and random (create()): no other writer can hold it, so the
            # insert needs no answer and goes with the rest (a clash could only be a fault, and
            # fails the transaction rather than overwrite anything).
            await conn.execute(_INSERT_FIRST, (res_type, res_id, version, moment, False, content,
                                               patient_id, part, owner))
        elif previous is None:
            cur = await conn.execute(_INSERT_NEW, (res_type, res_id, version, moment, False, content,
                                                   patient_id, part, owner))
            if await cur.fetchone() is None:
                # Another writer created it between our look and our insert: take its row lock
                # and write the next version on top (unless this writer may not see it).
                previous = await lock(conn, access, res_type, res_id)
                if previous is not None and not previous.visible:
                    raise unknown_id(res_type, res_id)
                continue
        # What follows needs no answer from the database: sent together, one round trip.
        async with unanswered(conn):
            if previous is not None:
                await conn.execute(_UPDATE, (version, moment, False, content, patient_id, part, owner,
                                             res_type, res_id))
                await index.delete(conn, res_type, res_id)
            await conn.execute(_INSERT_VERSION, (res_type, res_id, version, moment, False, method, content,
                                                 patient_id, part, owner, res_type, res_id, version, method,
                                                 patient_id, part, owner))
            await index.insert(conn, res_type, res_id, rows)
            await queue_followups(conn, [(resource, res_id)])
        if res_type == "Consent":
            await write_grants(conn, res_id, resource, patient_id)
            await _audit_consent(conn, access, consent, res_id, version, method)
        return Version(res_type, res_id, version, moment, content, method=method, patient_id=patient_id,
                       part=part, owner=owner)


@asynccontextmanager
async def unanswered(conn: AsyncConnection) -> AsyncIterator[None]:
    """Statements whose answers nobody reads, sent in one round trip. Inside a pipeline already
    open (a transaction Bundle runs all its entries in one: hub.interactions.bundle) they are
    only queued and go with the next statement that needs an answer, so an entry's writes and
    the next entry's first read share a round trip; an error among them still fails the
    transaction, at that read or at the pipeline's end."""
    if conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        yield
        return
    async with conn.pipeline():
        yield


async def insert_attribution(conn: AsyncConnection, proof: dict[str, Any], place: Place) -> None:
    """The hub's Provenance for what one client request wrote, in the request's transaction and
    placed where its targets are (the caller groups targets by place: hub.interactions.context).
    Its id derives from the target versions, all new in this transaction, so there is no current
    row to lock, compare or place, and it goes in one round trip (a clash with a stored id could
    only be a fault, and fails the request's transaction rather than overwrite anything)."""
    rows = index.rows_for(proof)
    moment = datetime.now(UTC)
    res_id = proof["id"]
    content = stamp(proof, res_id, 1, moment)
    async with unanswered(conn):
        await conn.execute(_INSERT_FIRST, ("Provenance", res_id, 1, moment, False, content,
                                           place.patient_id, place.part, place.owner))
        await conn.execute(_INSERT_VERSION, ("Provenance", res_id, 1, moment, False, "PUT", content,
                                             place.patient_id, place.part, place.owner, "Provenance", res_id, 1,
                                             "PUT", place.patient_id, place.part, place.owner))
        await index.insert(conn, "Provenance", res_id, rows)


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
