"""The recorder's batch write: every resource of a polled batch locked with one statement, the
new versions worked out in memory, then written with one statement or COPY per table instead of
~20 round trips per message (the API's interactions write through hub.store.resources).

Always the hub's own work (trusted): what a batch holds came from the feeds through the
pipeline. Its literal local references are still checked (hub.store.integrity), against the
record and the batch itself, so no feed message leaves a reference pointing at nobody."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.consent.authority import FEED, POLICY_BASE
from hub.consent.grants import is_record_sharing, write_grants
from hub.consent.placement import Place, Pointers, decide, pointers
from hub.fhir import jsontext
from hub.search.access import Access
from hub.store import index, integrity, placing
from hub.store.audit import record_consent_change
from hub.store.plans import check_plans_written_together, queue_followups, settle_plan
from hub.store.resources import Version, same_content, stamp

_LOCK_MANY = (
    "SELECT r.res_type, r.res_id, r.version, r.deleted, r.content::text, r.last_updated "
    "FROM resource r JOIN unnest(%s::text[], %s::text[]) AS k(res_type, res_id) USING (res_type, res_id) "
    "ORDER BY r.res_type, r.res_id FOR UPDATE OF r"
)
_UPDATE_MANY = (
    "UPDATE resource r SET version = v.version, last_updated = v.last_updated, deleted = false, "
    "content = v.content::json, patient_id = v.patient_id, part = v.part, owner = v.owner "
    "FROM unnest(%s::text[], %s::text[], %s::int[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], "
    "%s::text[]) AS v(res_type, res_id, version, last_updated, content, patient_id, part, owner) "
    "WHERE r.res_type = v.res_type AND r.res_id = v.res_id"
)
_SHARING_BEFORE = ("SELECT res_id, content::text, patient_id FROM resource WHERE res_type = 'Consent' "
                   "AND res_id = ANY(%s) AND NOT deleted")


@dataclass(slots=True, frozen=True)
class Staged:
    """A version worked out in memory by stage(), written by write_staged()."""

    version: Version
    rows: index.Rows
    part: str | None = None  # the record part (version.patient_id says whose record)
    resource: dict[str, Any] | None = None  # as stamped, for the reference check
    pointers: Pointers | None = None  # how it points at people (hub.consent.placement)


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
    lock_current, or staged earlier in the same batch): None when the content is unchanged.
    Its place is worked out from its literal references now, and settled by write_staged once
    the store has said who any identifiers name."""
    if current is not None and not current.deleted and same_content(resource, current.content):
        return None
    version = 1 if current is None else current.version + 1
    moment = datetime.now(UTC)
    content = stamp(resource, res_id, version, moment)
    rows = index.rows_for(resource)
    found = pointers(res_type, res_id, resource, rows.search)
    place = decide(found, people={}, entry_places={}, owners={}, writer="hub")
    return Staged(Version(res_type, res_id, version, moment, content, patient_id=place.patient_id, part=place.part,
                          owner=place.owner), rows, place.part, resource, found)


async def _settle_places(conn: AsyncConnection, staged: list[Staged]) -> list[Staged]:
    """Every staged version's place, as the store says it: identifiers resolved, the owner of
    each person's record, entries (a Provenance's targets) found in the batch or the store —
    a handful of statements for the whole batch. The batch's own resources are placed first, so
    a Provenance of a line whose person was named by identifier sits where that line now does."""
    placed = await _settle(conn, staged, lambda s: s.version.res_type != "Provenance")
    return await _settle(conn, placed, lambda s: s.version.res_type == "Provenance")


async def _settle(conn: AsyncConnection, staged: list[Staged], chosen: Callable[[Staged], bool]) -> list[Staged]:
    found = [s.pointers for s in staged if s.pointers is not None and chosen(s)]
    if not found:
        return staged
    known = {(s.version.res_type, s.version.res_id): Place(s.version.patient_id, s.part, s.version.owner)
             for s in staged if s.version.res_type != "Provenance"
             and (s.version.patient_id is not None or s.version.owner is not None)}
    settled = iter(await placing.resolve(conn, Access.system(), found, known=known))
    placed = []
    for s in staged:
        if s.pointers is not None and chosen(s):
            place = next(settled)
            s = replace(s, version=replace(s.version, patient_id=place.patient_id, part=place.part, owner=place.owner),
                        part=place.part)
        placed.append(s)
    return placed


async def write_staged(conn: AsyncConnection, staged: list[Staged], existing: set[tuple[str, str]]) -> None:
    """Write staged versions in order: every version (and its change event) with one COPY each,
    each resource's current row and index once, for its last version. `existing` holds the keys
    that had a row before the batch (updated in place; the others are inserted). Refused whole
    (FhirError) when a resource refers to something neither the record nor the batch holds."""
    if not staged:
        return
    staged = await _settle_plans(conn, staged)
    staged = await _settle_places(conn, staged)
    last: dict[tuple[str, str], Staged] = {}
    for s in staged:
        last[(s.version.res_type, s.version.res_id)] = s
    await integrity.check_references(
        conn, Access.system(),
        [integrity.Written(s.resource, *key) for key, s in last.items() if s.resource is not None],
        pending=set(last))
    await check_plans_written_together(conn, [(jsontext.loads(s.version.content), s.version.res_id)
                                              for s in last.values() if s.version.res_type == "CarePlan"])
    updated = [s.version for k, s in last.items() if k in existing]
    inserted = [s.version for k, s in last.items() if k not in existing]
    consents = sorted(res_id for res_type, res_id in last if res_type == "Consent")
    before: dict[str, tuple[bool, str | None]] = {}
    if consents:
        cur = await conn.execute(_SHARING_BEFORE, (consents,))
        before = {i: (is_record_sharing(jsontext.loads(c)), p) for i, c, p in await cur.fetchall() if c}
    async with conn.cursor() as cur:
        if updated:
            types, ids = [v.res_type for v in updated], [v.res_id for v in updated]
            parts = [last[(v.res_type, v.res_id)].part for v in updated]
            await cur.execute(_UPDATE_MANY, (types, ids, [v.version for v in updated],
                                             [v.last_updated for v in updated], [v.content for v in updated],
                                             [v.patient_id for v in updated], parts, [v.owner for v in updated]))
            await cur.execute(index.DELETE_INDEX_MANY, (types, ids))
        if inserted:
            async with cur.copy("COPY resource (res_type, res_id, version, last_updated, deleted, content, "
                                "patient_id, part, owner) FROM STDIN") as copy:
                for v in inserted:
                    await copy.write_row((v.res_type, v.res_id, v.version, v.last_updated, False, v.content,
                                          v.patient_id, last[(v.res_type, v.res_id)].part, v.owner))
        async with cur.copy("COPY resource_version (res_type, res_id, version, last_updated, deleted, method, "
                            "content, patient_id, part, owner) FROM STDIN") as copy:
            for s in staged:
                v = s.version
                await copy.write_row((v.res_type, v.res_id, v.version, v.last_updated, False, v.method, v.content,
                                      v.patient_id, s.part, v.owner))
        async with cur.copy("COPY outbox (res_type, res_id, version, method, patient_id, part, owner) "
                            "FROM STDIN") as copy:
            for s in staged:
                v = s.version
                await copy.write_row((v.res_type, v.res_id, v.version, v.method, v.patient_id, s.part, v.owner))
    await index.copy_rows(conn, {key: s.rows for key, s in last.items()})
    for res_id in consents:
        s = last[("Consent", res_id)]
        content = jsontext.loads(s.version.content)
        await write_grants(conn, res_id, content, s.version.patient_id)
        was_sharing, was_patient = before.get(res_id, (False, None))
        if was_sharing or is_record_sharing(content):
            # A feed's consent: its Provenance (written in this batch) names the feed.
            await record_consent_change(
                conn, consent_id=res_id, version=s.version.version, method="PUT",
                patient_ids=[p for p in (was_patient, s.version.patient_id) if p], policy=POLICY_BASE + FEED,
                client_id=None, organisation=None, organisation_system=None, partner_class=None, user_ref=None)
    await queue_followups(conn, [(s.resource, res_id) for (_, res_id), s in last.items() if s.resource is not None])


async def _settle_plans(conn: AsyncConnection, staged: list[Staged]) -> list[Staged]:
    """Each care and support plan's last version in the batch passed through the plan's life
    cycle (hub.store.plans.settle_plan), judged with the batch's own budget statements: a
    derived status or review date is staged in its place."""
    last = {}
    for index_, s in enumerate(staged):
        if s.version.res_type == "CarePlan":
            last[s.version.res_id] = index_
    if not last:
        return staged
    pending = [(staged[i].resource, res_id) for res_id, i in last.items() if staged[i].resource is not None]
    out = list(staged)
    for res_id, i in last.items():
        s = staged[i]
        if s.resource is None:
            continue
        settled = await settle_plan(conn, s.resource, res_id, pending)
        if settled is not s.resource:
            v = s.version
            content = stamp(settled, res_id, v.version, v.last_updated)
            rows = index.rows_for(settled)
            found = pointers("CarePlan", res_id, settled, rows.search)
            place = decide(found, people={}, entry_places={}, owners={}, writer="hub")
            out[i] = Staged(replace(v, content=content, patient_id=place.patient_id, part=place.part,
                                    owner=place.owner), rows, place.part, settled, found)
    return out
