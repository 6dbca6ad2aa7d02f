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
from hub.store.resources import update


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
               ) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, dict]]:
    """(who meets the definition with the inclusion criteria each meets, who an exclusion
    removed and which, the current Patients of those found) among `scope` (None: everyone)."""
    met: dict[str, list[str]] = {}
    included: set[str] | None = None
    for criterion in definition.inclusions:
        people = await criterion_people(conn, criterion, scope)
        for p in people:
            met.setdefault(p, []).append(criterion.name)
        if definition.combination == "all-of":
            included = people if included is None else included & people
        else:
            included = people if included is None else included | people
    included = included or set()
    excluded_by: dict[str, list[str]] = {}
    for criterion in definition.exclusions:
        for p in await criterion_people(conn, criterion, included):
            excluded_by.setdefault(p, []).append(criterion.name)
    candidates = included - excluded_by.keys()
    people = await store.current_people(conn, candidates) if candidates else {}
    found = {p: met[p] for p in sorted(people)}
    return found, {p: why for p, why in excluded_by.items() if p in included}, people


async def evaluate(conn: AsyncConnection, definition: CohortDefinition, scope: Collection[str] | None = None,
                   now: datetime | None = None) -> Result:
    """Evaluate one definition (for the people in `scope`, or everyone) and write what changed,
    in the caller's transaction (the caller commits)."""
    now = now or datetime.now(UTC)
    gid = cohort_id(definition.id)
    await store.hold(conn, gid)
    current = await store.lock(conn, "Group", gid)
    group = current[1] if current else None
    found, excluded_by, people = await find(conn, definition, scope)
    change: Change = next_group(definition, group, found, excluded_by, set(scope) if scope is not None else None, now)
    if change.any or current is None or _defined_by(group) != definition.reference:
        await update(conn, "Group", gid, change.group, access=Access.system())
    tasks = [offer_task(definition, people[patient_id], criteria, now) for patient_id, criteria in change.entered.items()]
    offers = [task["id"] for task in tasks]
    if change.left:
        for task_id, task in await store.open_offers(conn, f"Group/{gid}", change.left):
            patient_id = ((task.get("for") or {}).get("reference") or "").removeprefix("Patient/")
            tasks.append({**withdrawn_offer(task, change.left.get(patient_id, "left"), now), "id": task_id})
    await _write_tasks(conn, tasks)
    members = change.group.get("quantity", 0)
    return Result(definition.id, gid, members, sorted(change.entered), sorted(change.left), offers)


async def _write_tasks(conn: AsyncConnection, tasks: list[dict], chunk: int = 2000) -> None:
    """The offers and withdrawals, written as the recorder writes a batch (hub.store.batch: a
    few statements per chunk, not a dozen round trips per Task): a first evaluation of a large
    population raises tens of thousands of offers at once (make bench, section cohorts)."""
    for start in range(0, len(tasks), chunk):
        part = tasks[start:start + chunk]
        current = await batch.lock_current(conn, {("Task", task["id"]) for task in part})
        staged = [s for task in part
                  if (s := batch.stage("Task", task["id"], task, current.get(("Task", task["id"])))) is not None]
        await batch.write_staged(conn, staged, set(current))


def _defined_by(group: dict | None) -> str | None:
    for extension in (group or {}).get("extension") or ():
        if isinstance(extension, dict) and "valueReference" in extension:
            return (extension["valueReference"] or {}).get("reference")
    return None
