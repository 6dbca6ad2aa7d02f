"""One plan per person, assembled from every source's part.

The MOD handover drafts a veteran's care and support plan, the local authority adds the services
it arranges and its share of the budget, a charity adds what it does — and none of them knows the
id the shared record gave that person's plan. So a source's mapping sends its part as a whole
CarePlan of the plan's kind (the IPC `care-support-plan` or `budget-statement` category) under its
own id, and the recorder joins it to the person's open plan of that kind whose period it overlaps,
or lets it become that plan when there is none. Joining is deterministic, so a replayed part
changes nothing; parts for one person are serialised by the same advisory lock as the
one-plan-per-period rule, so two sources sending at once cannot make two plans."""
from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.references import parse_reference, repoint
from hub.money.statement import is_statement, settled
from hub.plans import model, stages
from hub.plans.periods import periods_overlap
from hub.store import plans as plan_store

PLAN_KINDS = ("care-support-plan", "budget-statement")
_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition"
ALLOCATION = f"{_EXTENSION}/budget-allocation"
# The plan profiles' extensions that may appear once (max 1 in ipc-care-plan and
# ipc-budget-statement; a unit test keeps this in step): the owner's wins. Any other extension
# (agreements, linked plans) is a list, and every source's entries are kept.
STAGE = model.STAGE
SINGLE_VALUED = frozenset(f"{_EXTENSION}/{name}" for name in (
    "ipc-stage", "care-coordinator", "review-interval", "next-review-date", "last-review", "one-page-profile",
    "budget-type", "indicative-amount", "indicative-basis", "agreed-amount"))
_LISTS = ("goal", "careTeam", "addresses", "supportingInfo", "contributor", "basedOn", "replaces", "note")


def plan_kind(resource: dict[str, Any]) -> str | None:
    """The plan kind of an open IPC plan or budget statement; None for any other resource."""
    return model.plan_kind(resource) if model.is_open(resource) else None


class PlanTargets:
    """Which plan each part joins, within one database transaction. Plans chosen earlier in the
    same transaction (a recorder batch, written only at its end) are remembered here, because the
    store cannot see them yet."""

    def __init__(self) -> None:
        self._chosen: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._locked: set[str] = set()

    async def retarget(self, conn: AsyncConnection,
                       resources: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[str]]:
        """The resources with each plan part given the id of the plan it joins and references to
        the part pointed at that plan; and the ids of plans parts joined from outside (for `join`'s
        `own`)."""
        moved: dict[str, str] = {}
        out = []
        for resource in resources:
            kind = plan_kind(resource)
            if kind is not None:
                target = await self._target(conn, kind, resource)
                if target != resource["id"]:
                    moved[f"CarePlan/{resource['id']}"] = f"CarePlan/{target}"
                    resource = {**resource, "id": target}
            out.append(resource)
        if not moved:
            return out, set()
        return [repoint(r, moved) for r in out], {target.removeprefix("CarePlan/") for target in moved.values()}

    async def _target(self, conn: AsyncConnection, kind: str, part: dict[str, Any]) -> str:
        subject = (part.get("subject") or {}).get("reference") or ""
        parsed = parse_reference(subject)
        if parsed is None or parsed[0] is None:
            return part["id"]
        if subject not in self._locked:
            await plan_store.lock_plans_of(conn, parsed[0], parsed[1])
            self._locked.add(subject)
        chosen = self._chosen.setdefault((kind, subject), [])
        for plan in chosen:
            if periods_overlap(plan, part):
                return plan["id"]
        for plan_id, content in await plan_store.open_plans(conn, parsed[0], parsed[1], kind):
            plan = jsontext.loads(content)
            if periods_overlap(plan, part):
                chosen.append({**plan, "id": plan_id})
                return plan_id
        chosen.append(part)
        return part["id"]


def join(existing: dict[str, Any] | None, part: dict[str, Any], *, own: bool) -> dict[str, Any]:
    """The plan after a source's part joins it. `own`: the plan was first recorded from this
    source's part, so the source's single-valued fields are the plan's (it is updating its own
    words); otherwise fields already on the plan stay and the part only fills gaps. Activities are
    matched by element id, budget allocations are the part's for its funding sources, and list
    references are unioned — so each source adds and replaces only what is its own. A budget
    statement's agreed amount and budget type are then restated from the joined allocations
    (hub.money.statement.settled); its indicative amount, an estimate, is the owner's."""
    if existing is None:
        plan = _clamped_stage(part, model.stage(part), None)
        return settled(plan) if is_statement(plan) else plan
    first, second = (part, existing) if own else (existing, part)
    merged = {**second, **first, "id": existing["id"]}
    merged.pop("meta", None)
    if existing.get("status") != "draft":
        # An agreed (or closed) plan's status is the coordinator's and the commissioners': a feed
        # part restating "draft" does not take it back.
        merged["status"] = existing.get("status")
    for name in _LISTS:
        values = jsontext.union(existing.get(name), part.get(name))
        if values:
            merged[name] = values
    activities = _by_element_id(existing.get("activity"), part.get("activity"))
    if activities:
        merged["activity"] = activities
    extensions = _extensions(existing.get("extension"), part.get("extension"), own=own)
    if extensions:
        merged["extension"] = extensions
    if model.stage(existing) is not None:
        merged = model.with_stage(merged, model.stage(existing))
    merged = _clamped_stage(merged, model.stage(part), model.stage(existing))
    return settled(merged) if is_statement(merged) else merged


def _clamped_stage(plan: dict[str, Any], proposed: str | None, current: str | None) -> dict[str, Any]:
    """The plan at the furthest IPC stage the part's stage may move it to (hub.plans.stages:
    forward only, as far as the entry rules allow, and not at all once the plan is agreed)."""
    code = stages.furthest_allowed(plan, proposed, current)
    if code is None or code == model.stage(plan):
        return plan
    return model.with_stage(plan, code)


def _by_element_id(existing: list | None, part: list | None) -> list:
    """The part's activities replace those with the same element id; others are added."""
    incoming = {a["id"]: a for a in part or [] if isinstance(a, dict) and a.get("id")}
    out = [incoming.pop(a["id"], a) if isinstance(a, dict) and a.get("id") else a for a in existing or []]
    placed = {a.get("id") for a in out if isinstance(a, dict)}
    for activity in part or []:
        if not (isinstance(activity, dict) and activity.get("id")):
            out = jsontext.union(out, [activity])
        elif activity["id"] not in placed:
            out.append(activity)
            placed.add(activity["id"])
    return out


def _funding_sources(allocation: dict[str, Any]) -> set[str]:
    return {coding.get("code") for sub in allocation.get("extension") or [] if sub.get("url") == "fundingSource"
            for coding in (sub.get("valueCodeableConcept") or {}).get("coding") or []}


def _extensions(existing: list | None, part: list | None, *, own: bool) -> list:
    """Allocations: the part's allocations stand for every funding source they name (a source
    restating its share replaces its old share). Single-valued extensions: the owner's first (the
    stage is settled by `join`). Others: every source's, each once."""
    part_sources = set().union(*(_funding_sources(e) for e in part or [] if e.get("url") == ALLOCATION))
    kept = [e for e in existing or []
            if e.get("url") != ALLOCATION or not (_funding_sources(e) & part_sources)]
    others_first, others_second = (part, kept) if own else (kept, part)
    out: list = []
    single: set[str] = set()
    for extension in [*(others_first or []), *(others_second or [])]:
        url = extension.get("url")
        if url == ALLOCATION or url in single:
            continue
        if url in SINGLE_VALUED:
            single.add(url)
            out.append(extension)
        else:
            out = jsontext.union(out, [extension])
    allocations = [e for e in kept if e.get("url") == ALLOCATION]
    allocations += [e for e in part or [] if e.get("url") == ALLOCATION]
    return out + allocations


