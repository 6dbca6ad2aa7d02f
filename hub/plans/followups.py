"""What the hub does after a plan changes, worked out as pure functions of what the record holds
(the plan worker, hub.pipeline.planlife, loads it and writes what these return):

- sign-off requests: a Task to each commissioner whose funding the plan's budget statement names
  and who has not agreed it (owned by the funder's Organization, so it is on their worklist),
  once the plan is at 'record and agree' or agreed; completed by the agreement, reopened if it
  is withdrawn, cancelled when the funder leaves or the plan closes;
- a Flag on the person's record while an agreement stays withdrawn;
- a finished review (an `ipc-plan-meeting` Encounter of type plan-review) moves the plan back
  from 'review' to 'make it happen', sets its next review date from the review's date and
  completes the open review Tasks and the accepted review requests; a review in progress moves
  an agreed plan to 'review';
- a plan that replaces another, once agreed, closes the one it replaces;
- review Tasks for a due date the plan no longer has are cancelled.

Each function returns whole resources to write, only where something changes, with ids derived
from the plan (a sign-off request per plan and role), so running them twice writes nothing new."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.ids import derived_id
from hub.plans import agreement, reviews
from hub.plans.model import (
    AGREEMENT_ROLE_SYSTEM,
    ALLOCATION,
    BUDGET,
    CARE_PLAN,
    CONTACT_TYPE_SYSTEM,
    FLAG_SYSTEM,
    FUNDING_SOURCE_SYSTEM,
    LAST_REVIEW,
    NEXT_REVIEW,
    PLAN,
    PLAN_TASK_SYSTEM,
    agreements,
    code_in,
    concept,
    coordinator,
    extensions,
    funders,
    is_open,
    next_review,
    parent_plans,
    plan_kind,
    stage,
    stage_rank,
    sub_value,
    subject,
    value,
    with_extension,
    with_stage,
)

OPEN_TASK = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")
PART_TAG = {"system": f"{CANONICAL_BASE}/CodeSystem/ipc-record-part", "code": "care-support-plan"}
_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/"
QUESTIONNAIRES = f"{CANONICAL_BASE}/Questionnaire/"
_FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
ROLE_DISPLAY = {"nhs-commissioner": "NHS commissioner", "local-authority-commissioner": "Local authority commissioner",
                "education-commissioner": "Education commissioner", "other-funder": "Other funder"}


@dataclass
class PlanState:
    """A plan and what hangs off it, as the record holds them now."""

    plan_id: str
    plan: dict[str, Any]
    budgets: list[dict[str, Any]] = field(default_factory=list)      # open statements part of the plan
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)   # Tasks whose focus is the plan, by id
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)   # Flags about the plan, by id
    encounters: dict[str, dict[str, Any]] = field(default_factory=dict)  # meetings about the plan, by id
    replaced: dict[str, dict[str, Any]] = field(default_factory=dict)    # plans it replaces, by id

    @property
    def reference(self) -> str:
        return f"CarePlan/{self.plan_id}"

    def funders(self) -> set[str]:
        return set().union(*(funders(b) for b in self.budgets)) if self.budgets else set()

    def funder_organisation(self, role: str) -> str | None:
        """Who a sign-off request in `role` goes to: the Organization the budget statements name
        as funding that source (allocation `funder`), else the one that agreed (or withdrew) in
        that role before; None when the record names neither (the request then reaches every
        commissioner of the role's kind who may see the plan: hub/web/worklist.py)."""
        sources = {source for source, wanted in agreement.ROLE_FOR_FUNDER.items() if wanted == role}
        for budget in self.budgets:
            for allocation in extensions(budget, ALLOCATION):
                if code_in(sub_value(allocation, "fundingSource"), FUNDING_SOURCE_SYSTEM) in sources:
                    funder = sub_value(allocation, "funder")
                    ref = funder.get("reference") if isinstance(funder, dict) else None
                    if isinstance(ref, str) and ref.startswith("Organization/"):
                        return ref
        earlier = sorted((a for a in agreements(self.plan) if a.role == role and a.party
                          and a.party.startswith("Organization/")), key=lambda a: a.date or "")
        return earlier[-1].party if earlier else None


def task_code(task: dict[str, Any]) -> str | None:
    return code_in(task.get("code"), PLAN_TASK_SYSTEM)


def is_review_meeting(encounter: dict[str, Any]) -> bool:
    return any(code_in(t, CONTACT_TYPE_SYSTEM) == "plan-review" for t in encounter.get("type") or ())


def meeting_day(encounter: dict[str, Any]) -> str | None:
    period = encounter.get("period") or {}
    return (period.get("end") or period.get("start") or "")[:10] or None


def triggers(resource: dict[str, Any], res_id: str) -> list[tuple[str, str]]:
    """What the plan worker must look at once `resource` is written: its plan (a plan, or the
    plan a budget statement is part of), a meeting about a plan, an outcome response."""
    kind = plan_kind(resource)
    if kind == PLAN:
        return [("CarePlan", res_id)]
    if kind == BUDGET:
        return [("CarePlan", plan_id) for plan_id in parent_plans(resource)]
    res_type = resource.get("resourceType")
    if res_type == "Encounter" and extensions(resource, CARE_PLAN):
        return [("Encounter", res_id)]
    if res_type == "QuestionnaireResponse" and str(resource.get("questionnaire", "")).startswith(QUESTIONNAIRES):
        return [("QuestionnaireResponse", res_id)]
    return []


# --- sign-off requests --------------------------------------------------------------------------

def signoff_task_id(plan_id: str, role: str) -> str:
    return derived_id("plan-sign-off", plan_id, role)


def signoff_task(state: PlanState, role: str, now: str) -> dict[str, Any]:
    plan = state.plan
    task: dict[str, Any] = {
        "resourceType": "Task", "id": signoff_task_id(state.plan_id, role),
        "meta": {"profile": [_PROFILE + "ipc-sign-off-task"]},
        "status": "requested", "intent": "order", "priority": "routine",
        "code": concept(PLAN_TASK_SYSTEM, "plan-sign-off", "Plan sign-off"),
        "description": f"Agree the personalised care and support plan as its {ROLE_DISPLAY[role].lower()}: "
                       "its budget statement names your funding",
        "basedOn": [{"reference": state.reference}], "focus": {"reference": state.reference},
        "for": {"reference": subject(plan)}, "authoredOn": now, "lastModified": now,
        "performerType": [concept(AGREEMENT_ROLE_SYSTEM, role, ROLE_DISPLAY[role])],
    }
    if coordinator(plan):
        task["requester"] = {"reference": coordinator(plan)}
    owner = state.funder_organisation(role)
    if owner:
        task["owner"] = {"reference": owner}
    return task


def signoff_requests(state: PlanState, now: str) -> list[dict[str, Any]]:
    plan = state.plan
    wanted: dict[str, str] = {}
    asking = is_open(plan) and (plan.get("status") == "active" or stage_rank(stage(plan)) >= stage_rank("record-and-agree"))
    if asking:
        agreed = agreement.agreed_roles(plan)
        for role in agreement.commissioner_roles(state.funders()):
            wanted[role] = "completed" if role in agreed else "requested"
    out = []
    for role in ROLE_DISPLAY:
        task = state.tasks.get(signoff_task_id(state.plan_id, role))
        want = wanted.get(role)
        if task is None:
            if want == "requested":
                out.append(signoff_task(state, role, now))
            continue
        status = task.get("status")
        owner = state.funder_organisation(role)
        if want == "requested" and status not in OPEN_TASK:
            out.append(_owned(_moved(task, "requested", now, reason=None), owner))
        elif want == "requested" and owner and (task.get("owner") or {}).get("reference") != owner:
            out.append(_owned(_moved(task, status, now, reason=None), owner))   # its funder is now known
        elif want == "completed" and status in OPEN_TASK:
            done = _moved(task, "completed", now, reason=None)
            when = _agreed_date(plan, role)
            if when:
                done["output"] = [{"type": {"text": "Agreement recorded on the plan"}, "valueDateTime": when}]
            out.append(done)
        elif want is None and status in OPEN_TASK:
            why = ("the plan is closed" if not is_open(plan) else
                   "the budget statement no longer names this funding" if asking else
                   "the plan moved back before 'record and agree'")
            out.append(_moved(task, "cancelled", now, reason=why))
    return out


def _owned(task: dict[str, Any], owner: str | None) -> dict[str, Any]:
    if owner:
        task["owner"] = {"reference": owner}
    return task


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """A copy to write back: the profiles and tags kept, the server's version stamp dropped."""
    out = copy.deepcopy(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k in ("profile", "tag", "security")}
    if meta:
        out["meta"] = meta
    return out


def _agreed_date(plan: dict[str, Any], role: str) -> str | None:
    dates = sorted(a.date for a in agreement.live(plan) if a.role == role and a.date)
    return dates[-1] if dates else None


def _moved(task: dict[str, Any], status: str, now: str, *, reason: str | None,
           output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = _without_server_meta(task)
    out["status"] = status
    out["lastModified"] = now
    out.pop("statusReason", None)
    if reason:
        out["statusReason"] = {"text": reason}
    if output:
        out["output"] = output
    return out


# --- withdrawn agreements --------------------------------------------------------------------------

def withdrawal_flag_id(plan_id: str, role: str | None, party: str | None) -> str:
    return derived_id("plan-agreement-withdrawn", plan_id, role or "", party or "")


def withdrawal_flags(state: PlanState, now: str) -> list[dict[str, Any]]:
    plan = state.plan
    out = []
    wanted = {}
    if is_open(plan):
        for gone in agreement.withdrawn(plan):
            wanted[withdrawal_flag_id(state.plan_id, gone.role, gone.party)] = gone
    for flag_id, gone in wanted.items():
        existing = state.flags.get(flag_id)
        if existing is None or existing.get("status") != "active":
            out.append(_withdrawal_flag(state, flag_id, gone))
    for flag_id, flag in state.flags.items():
        if flag_id not in wanted and flag.get("status") == "active" \
                and code_in(flag.get("code"), FLAG_SYSTEM) == "plan-agreement-withdrawn":
            ended = _without_server_meta(flag)
            ended["status"] = "inactive"
            start = (ended.get("period") or {}).get("start") or now
            ended["period"] = {"start": start, "end": max(start, now)}
            out.append(ended)
    return out


def _withdrawal_flag(state: PlanState, flag_id: str, gone: agreement.Agreement) -> dict[str, Any]:
    who = agreement.ROLE_NAMES.get(gone.role or "", "a party")
    text = f"Agreement to the plan withdrawn by {who} on {str(gone.withdrawn)[:10]}"
    if gone.reason:
        text += f": {gone.reason}"
    return {
        "resourceType": "Flag", "id": flag_id,
        "meta": {"profile": [_PROFILE + "ipc-flag"], "tag": [PART_TAG]},
        "extension": [{"url": CARE_PLAN, "valueReference": {"reference": state.reference}}],
        "status": "active",
        "category": [concept(_FLAG_CATEGORY, "admin", "Administrative")],
        "code": {**concept(FLAG_SYSTEM, "plan-agreement-withdrawn", "Plan agreement withdrawn"), "text": text},
        "subject": {"reference": subject(state.plan)},
        "period": {"start": str(gone.withdrawn)},
    }


# --- reviews --------------------------------------------------------------------------------------

def review_held(state: PlanState, encounter_id: str, now: str) -> list[dict[str, Any]]:
    """What a review meeting brings about when written: in progress, an agreed plan moves to
    'review'; finished (and newer than the review last applied), the plan moves back to 'make
    it happen' with its next review date from the meeting's date, and the open review Tasks and
    accepted review requests are completed with the meeting as their output. The plan (if
    changed) comes first in the list, then the Tasks."""
    encounter = state.encounters.get(encounter_id)
    plan = state.plan
    if encounter is None or not is_review_meeting(encounter) or plan.get("status") != "active":
        return []
    applied = last_review_of(plan)
    if encounter.get("status") == "in-progress":
        if applied == f"Encounter/{encounter_id}" or stage(plan) == "review":
            return []
        return [with_stage(plan, "review")]
    if encounter.get("status") != "finished" or applied == f"Encounter/{encounter_id}":
        return []
    day = meeting_day(encounter)
    before = state.encounters.get((applied or "").removeprefix("Encounter/"))
    if before is not None and (meeting_day(before) or "") > (day or ""):
        return []   # an older meeting recorded late does not move the schedule back
    changed = with_extension(plan, LAST_REVIEW, "valueReference", {"reference": f"Encounter/{encounter_id}"})
    if stage(changed) == "review":
        changed = with_stage(changed, "make-it-happen")
    held_on = reviews.as_day(day) or reviews.today()
    changed = with_extension(changed, NEXT_REVIEW, "valueDate", reviews.next_review_after(changed, held_on))
    out: list[dict[str, Any]] = [changed]
    output = [{"type": {"text": "Review meeting"}, "valueReference": {"reference": f"Encounter/{encounter_id}"}}]
    for task in state.tasks.values():
        code = task_code(task)
        if (code == "plan-review" and task.get("status") in OPEN_TASK) or \
                (code == "plan-review-request" and task.get("status") in ("accepted", "in-progress")):
            out.append(_moved(task, "completed", now, reason=None, output=output))
    return out


def last_review_of(plan: dict[str, Any]) -> str | None:
    found = extensions(plan, LAST_REVIEW)
    ref = value(found[0]) if found else None
    return ref.get("reference") if isinstance(ref, dict) else None


def stale_reviews(state: PlanState, now: str) -> list[dict[str, Any]]:
    """Open review Tasks for a due date the plan no longer has (its next review date moved, or
    the plan closed), cancelled so the worklist shows only the review that is due."""
    due = next_review(state.plan) if is_open(state.plan) else None
    out = []
    for task in state.tasks.values():
        if task_code(task) != "plan-review" or task.get("status") not in OPEN_TASK:
            continue
        task_due = ((task.get("restriction") or {}).get("period") or {}).get("end")
        if task_due != due:
            why = f"the next review is now due {due}" if due else "the plan is closed"
            out.append(_moved(task, "cancelled", now, reason=why))
    return out


# --- a plan replacing another ---------------------------------------------------------------------

def superseded(state: PlanState, today: str) -> list[dict[str, Any]]:
    """The open plans an agreed plan replaces, closed (completed) the day it took over."""
    plan = state.plan
    if plan.get("status") != "active":
        return []
    out = []
    for old_id, old in state.replaced.items():
        if not is_open(old) or old_id == state.plan_id:
            continue
        closed = _without_server_meta(old)
        closed["status"] = "completed"
        period = dict(closed.get("period") or {})
        start = period.get("start") or today
        takeover = ((plan.get("period") or {}).get("start") or today)[:10]
        if not period.get("end") or period["end"][:10] > takeover:
            period["end"] = max(start[:10], takeover)
        closed["period"] = period
        closed["note"] = [*(closed.get("note") or []),
                          {"text": f"Replaced by CarePlan/{state.plan_id}, agreed and in effect from {takeover}."}]
        out.append(closed)
    return out
