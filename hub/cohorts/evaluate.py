"""Evaluating cohort definitions against the record and writing what changed: the member Group,
an offer Task for each person who entered, and the withdrawal of offers not yet made to people
who left. One transaction per definition, under an advisory lock on the cohort, so two workers
(or a worker and an on-demand evaluation) never interleave their views of one Group.

Finding is the hub's own work for the people's care teams, so the record is read with trusted
access; who may then see a cohort is decided when its Group or Tasks are read or exported
(the Group is held in the `health` part, the Tasks in each person's record).

Only `approved` definitions are evaluated: a draft finds nobody until a clinician signs it off,
and a retired one keeps its Group as it last was. A person whose record is deleted, or retired
into another by a merge, is never found (so never offered twice)."""
from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg import AsyncConnection

from hub.cohorts.definitions import DEFINITION_PROFILE, CohortDefinition, Criterion, read_definition
from hub.cohorts.membership import Change, cohort_id, next_group, offer_task, withdrawn_offer
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.store import batch
from hub.store import cohorts as store
from hub.store.resources import Version, update


@dataclass(slots=True)
class Result:
    """What one evaluation did, in counts and ids (never names)."""

    definition: str
    cohort: str
    members: int
    entered: list[str]
    left: list[str]
    offers: list[str]


async def approved_definitions(conn: AsyncConnection) -> tuple[list[CohortDefinition], dict[str, str]]:
    """Every approved definition, and the problems of those that cannot be read (by id): a
    broken definition is reported, never half-evaluated."""
    found: list[CohortDefinition] = []
    broken: dict[str, str] = {}
    for gid, version, content in await store.groups_with_profile(conn, DEFINITION_PROFILE):
        try:
            definition = read_definition(content, version)
        except FhirError as exc:
            broken[gid] = exc.issues[0].diagnostics or "unreadable"
            continue
        if definition.evaluated:
            found.append(definition)
    return found, broken


async def criterion_people(conn: AsyncConnection, criterion: Criterion, scope: Collection[str] | None) -> set[str]:
    """The people whose record meets one criterion (among `scope`, when given)."""
    if criterion.search is not None:
        return await store.people_found(conn, criterion.res_type, criterion.search, criterion.minimum, scope)
    assert criterion.matches is not None
    counts: dict[str, int] = {}
    async for patient_id, content in store.rows_in_records(conn, criterion.res_type, scope):
        if criterion.matches(jsontext.loads(content)):
            counts[patient_id] = counts.get(patient_id, 0) + 1
    return {p for p, n in counts.items() if n >= criterion.minimum}


async def find(conn: AsyncConnection, definition: CohortDefinition, scope: Collection[str] | None
               ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(who meets the definition with the inclusion criteria each meets, who an exclusion
    removed and which) among `scope` (None: everyone). The inclusions are read first, in SQL
    over the search index where written in search syntax; each exclusion is then read only for
    those they found (a FHIRPath exclusion loads no one else's resources)."""
    met: dict[str, list[str]] = {}
    included: set[str] | None = None
    for criterion in definition.inclusions:
        people = await criterion_people(conn, criterion, scope if included is None or definition.combination == "any-of"
                                        else included)
        for p in people:
            met.setdefault(p, []).append(criterion.name)
        if definition.combination == "all-of":
            included = people if included is None else included & people
        else:
            included = people if included is None else included | people
    included = included or set()
    excluded_by: dict[str, list[str]] = {}
    for criterion in definition.exclusions:
        if not included:
            break
        for p in await criterion_people(conn, criterion, included):
            excluded_by.setdefault(p, []).append(criterion.name)
    candidates = included - excluded_by.keys()
    current = await store.current_people(conn, candidates) if candidates else set()
    found = {p: met[p] for p in sorted(current)}
    return found, {p: why for p, why in excluded_by.items() if p in included}


async def evaluate(conn: AsyncConnection, definition: CohortDefinition, scope: Collection[str] | None = None,
                   now: datetime | None = None) -> Result:
    """Evaluate one definition (for the people in `scope`, or everyone) and write what changed,
    in the caller's transaction (the caller commits)."""
    now = now or datetime.now(UTC)
    gid = cohort_id(definition.id)
    await store.hold(conn, gid)
    current = await store.lock(conn, "Group", gid)
    group = current[1] if current else None
    found, excluded_by = await find(conn, definition, scope)
    change: Change = next_group(definition, group, found, excluded_by, set(scope) if scope is not None else None, now)
    if change.any or current is None or _defined_by(group) != definition.reference:
        # Through the store's own update, not the batch writer: the Group sits outside every
        # record, and a batch places what the hub writes there as the hub's own (owner "hub").
        await update(conn, "Group", gid, change.group, access=Access.system())
    people = await store.patient_contents(conn, change.entered) if change.entered else {}
    # (a Patient deleted since it was found still gets its offer, without preferences: the
    # member entry is written, and the next evaluation withdraws both)
    tasks = [offer_task(definition, people.get(patient_id) or {"id": patient_id}, criteria, now)
             for patient_id, criteria in change.entered.items()]
    offers = [task["id"] for task in tasks]
    if change.left:
        for task_id, task in await store.open_offers(conn, f"Group/{gid}", change.left):
            patient_id = ((task.get("for") or {}).get("reference") or "").removeprefix("Patient/")
            tasks.append({**withdrawn_offer(task, change.left.get(patient_id, "left"), now), "id": task_id})
    await _write(conn, [("Task", task["id"], task) for task in tasks])
    members = change.group.get("quantity", 0)
    return Result(definition.id, gid, members, sorted(change.entered), sorted(change.left), offers)


async def _write(conn: AsyncConnection, writes: list[tuple[str, str, dict]], chunk: int = 2000) -> None:
    """The offers and withdrawals, written as the recorder writes a batch
    (hub.store.batch: the current rows locked with one statement, each table written with one
    COPY per chunk): a first evaluation of a large population raises tens of thousands of
    offers at once (make bench, section cohorts), where a dozen round trips per Task took
    minutes.

    Working out a chunk's versions and index rows is Python's work and writing the one before
    it is PostgreSQL's, so the next chunk is staged in a thread while the database writes: the
    two overlap on a machine with a core to spare."""
    parts = [writes[start:start + chunk] for start in range(0, len(writes), chunk)]
    if not parts:
        return
    current = await batch.lock_current(conn, {(t, i) for t, i, _ in parts[0]})
    staging = asyncio.create_task(asyncio.to_thread(_stage, parts[0], current))
    for n, _part in enumerate(parts):
        staged, existing = await staging
        if n + 1 < len(parts):
            following = await batch.lock_current(conn, {(t, i) for t, i, _ in parts[n + 1]})
            staging = asyncio.create_task(asyncio.to_thread(_stage, parts[n + 1], following))
        try:
            await batch.write_staged(conn, staged, existing)
        except BaseException:
            if n + 1 < len(parts):
                await asyncio.gather(staging, return_exceptions=True)
            raise


def _stage(part: list[tuple[str, str, dict]], current: dict[tuple[str, str], Version]
           ) -> tuple[list[batch.Staged], set[tuple[str, str]]]:
    staged = [s for t, i, resource in part if (s := batch.stage(t, i, resource, current.get((t, i)))) is not None]
    return staged, set(current)


def _defined_by(group: dict | None) -> str | None:
    for extension in (group or {}).get("extension") or ():
        if isinstance(extension, dict) and "valueReference" in extension:
            return (extension["valueReference"] or {}).get("reference")
    return None
