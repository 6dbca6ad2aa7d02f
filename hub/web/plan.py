"""The plan (`/app/plans/{id}`): the one-page profile, goals by IPC life area with their
progress, actions and who provides them, the stage, who has agreed, the review schedule, and
the plan's versions and audit trail.

Editing is optimistic: each form carries the version it was made from and is saved with
`If-Match`. When someone else saved first, nothing is overwritten: the page says who changed
what since, keeps what this person typed, and asks them to check and save again."""
from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from hub.plans.agreement import ROLE_NAMES
from hub.web import facts
from hub.web.access import Workspace, posted, signed_in
from hub.web.context import page_context
from hub.web.errors import PageError
from hub.web.pages import concept_text, render
from hub.web.record import Record
from hub.web.signoff import signing_role

router = APIRouter(include_in_schema=False)

EDITABLE = (("description", "One-page profile: who they are and what matters to them"),
            ("stage", "Stage"), ("next_review", "Next review date"))


@router.get("/app/plans/{plan_id}")
async def plan_page(plan_id: str, request: Request) -> Response:
    workspace = await signed_in(request)
    return await _render(workspace, plan_id, saved=request.query_params.get("saved"))


async def _render(workspace: Workspace, plan_id: str, *, conflict: dict[str, Any] | None = None,
                  draft: dict[str, str] | None = None, saved: str | None = None, error: str | None = None,
                  status: int = 200) -> Response:
    record = workspace.record
    plan = await record.read("CarePlan", plan_id)
    if plan is None:
        raise PageError(404, "Plan not found", "There is no such plan, or it is not shared with your organisation.")
    goal_ids = [g["reference"].split("/", 1)[1] for g in plan.get("goal") or []
                if g.get("reference", "").startswith("Goal/")]
    goals = (await record.search("Goal", [("_id", ",".join(goal_ids)), ("_count", "100")])).matches if goal_ids else []
    patient_ref = (plan.get("subject") or {}).get("reference", "")
    patient = await record.read("Patient", patient_ref.split("/", 1)[1]) if patient_ref.startswith("Patient/") else None
    versions = await record.history("CarePlan", plan_id)
    trail = await record.audit_trail(f"CarePlan/{plan_id}")
    goal_trails = {g["id"]: await record.audit_trail(f"Goal/{g['id']}") for g in goals}
    goal_versions = {g["id"]: len(await record.history("Goal", g["id"])) for g in goals}
    names = await practitioner_names(record, [*trail, *(e for t in goal_trails.values() for e in t)])
    performers = await record.names({p.get("reference", "") for a in plan.get("activity") or []
                                         for p in (a.get("detail") or {}).get("performer") or []})
    code, stage_name = facts.stage(plan)
    values = draft or {"description": plan.get("description", ""), "stage": code or "",
                       "next_review": facts.next_review(plan) or ""}
    return render("plan", status=status, **page_context(
        workspace, "caseload", plan.get("title") or "Care and support plan", plan=plan, patient=patient,
        goals=_by_life_area(goals), activities=_activities(plan, performers), stage=stage_name, stages=facts.STAGES,
        achievements=facts.ACHIEVEMENTS, agreements=facts.agreements(plan),
        interval=facts.ext_value(plan, "review-interval"), next_review=facts.next_review(plan),
        coordinator=facts.coordinator(plan), version=plan["meta"]["versionId"], versions=versions,
        trail=facts.audit_rows(trail, names),
        goal_trails={k: facts.audit_rows(v, names) for k, v in goal_trails.items()}, goal_versions=goal_versions, values=values, conflict=conflict,
        saved=saved, error=error, review_overdue=facts.is_overdue(facts.next_review(plan)),
        sign_as=ROLE_NAMES.get(signing_role(workspace, plan) or ""), profile=facts.one_page_profile(plan),
        needs=facts.needs(plan)))


async def practitioner_names(record: Record, events: list[dict[str, Any]]) -> dict[str, str]:
    return await record.names(facts.practitioners_named(events))


def _by_life_area(goals: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    areas: dict[str, list[dict[str, Any]]] = {}
    for goal in goals:
        areas.setdefault(concept_text(goal.get("category")) or "Other", []).append(goal)
    return sorted(areas.items())


def _activities(plan: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    found = []
    for activity in plan.get("activity") or []:
        detail = activity.get("detail") or {}
        who = [p.get("display") or names.get(p.get("reference", "")) or "someone not shared with you"
               for p in detail.get("performer") or []]
        found.append({"what": detail.get("description") or concept_text(detail.get("code")),
                      "area": concept_text(detail.get("code")), "status": detail.get("status", ""),
                      "who": ", ".join(who)})
    return found


def apply_edits(plan: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The plan with the form's edits (profile text, stage, next review date) applied."""
    changed = copy.deepcopy(plan)
    text = fields.get("description", "").strip()
    if text:
        changed["description"] = text
    else:
        changed.pop("description", None)
    _set_extension(changed, "ipc-stage", {"valueCodeableConcept": {"coding": [
        {"system": facts.STAGE_SYSTEM, "code": fields["stage"], "display": dict(facts.STAGES)[fields["stage"]]}]}}
        if fields.get("stage") in dict(facts.STAGES) else None)
    review = fields.get("next_review", "").strip()
    _set_extension(changed, "next-review-date", {"valueDate": review} if review else None)
    return changed


def _set_extension(resource: dict[str, Any], name: str, value: dict[str, Any] | None) -> None:
    url = f"{facts.SD}/{name}"
    kept = [e for e in resource.get("extension") or [] if e.get("url") != url]
    if value is not None:
        kept.append({"url": url, **value})
    resource["extension"] = kept


def what_changed(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, str]]:
    """The editable fields that differ between two versions of a plan, as people read them."""
    def shown(plan: dict[str, Any]) -> dict[str, str]:
        return {"description": plan.get("description", ""), "stage": facts.stage(plan)[1],
                "next_review": facts.next_review(plan) or ""}
    old, new = shown(before), shown(after)
    return [{"field": label, "before": old[key], "after": new[key]} for key, label in EDITABLE if old[key] != new[key]]


def _check(fields: dict[str, str]) -> str | None:
    review = fields.get("next_review", "").strip()
    if review:
        try:
            date.fromisoformat(review)
        except ValueError:
            return "Enter the next review date as a date, for example 2027-03-31"
    if fields.get("stage") and fields["stage"] not in dict(facts.STAGES):
        return "Choose a stage from the list"
    return None


@router.post("/app/plans/{plan_id}")
async def save_plan(plan_id: str, request: Request) -> Response:
    workspace = await signed_in(request)
    fields = await posted(request, workspace)
    problem = _check(fields)
    if problem:
        return await _render(workspace, plan_id, draft=fields, error=problem, status=400)
    record = workspace.record
    seen = fields.get("version", "")
    current = await record.read("CarePlan", plan_id)
    if current is None:
        raise PageError(404, "Plan not found", "There is no such plan, or it is not shared with your organisation.")
    if current["meta"]["versionId"] != seen:
        return await _conflict(workspace, record, plan_id, seen, current, fields)
    written = await record.update(apply_edits(current, fields), seen)
    if written.status == "conflict":
        return await _conflict(workspace, record, plan_id, seen, written.resource or current, fields)
    if written.status != "ok":
        return await _render(workspace, plan_id, draft=fields, error=written.message, status=422)
    return RedirectResponse(f"/app/plans/{plan_id}?saved=plan", status_code=303)


async def _conflict(workspace: Workspace, record: Record, plan_id: str, seen: str, current: dict[str, Any],
                    fields: dict[str, str]) -> Response:
    before = await record.read_version("CarePlan", plan_id, seen) if seen.isdigit() else None
    changes = what_changed(before, current) if before is not None else []
    conflict = {"their_version": current["meta"]["versionId"], "when": current["meta"].get("lastUpdated"),
                "changes": changes}
    return await _render(workspace, plan_id, conflict=conflict, draft=fields, status=409)


@router.post("/app/goals/{goal_id}/progress")
async def record_progress(goal_id: str, request: Request) -> Response:
    workspace = await signed_in(request)
    fields = await posted(request, workspace)
    plan_id = fields.get("plan", "")
    record = workspace.record
    goal = await record.read("Goal", goal_id)
    if goal is None:
        raise PageError(404, "Goal not found", "There is no such goal, or it is not shared with your organisation.")
    achievement = fields.get("achievement", "")
    if achievement not in dict(facts.ACHIEVEMENTS):
        return await _render(workspace, plan_id, error="Choose how the goal is going", status=400)
    if goal["meta"]["versionId"] != fields.get("version"):
        return await _render(workspace, plan_id, status=409, error=(
            "Someone else recorded progress on this goal since you opened the page; nothing was overwritten. "
            "Check the goal below and record your progress again."))
    goal["achievementStatus"] = {"coding": [{"system": facts.GOAL_ACHIEVEMENT, "code": achievement,
                                             "display": dict(facts.ACHIEVEMENTS)[achievement]}]}
    note = fields.get("note", "").strip()[:2000]
    if note:
        goal["note"] = [*(goal.get("note") or []), {
            "authorReference": {"reference": workspace.user.practitioner, "display": workspace.user.display_name},
            "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), "text": note}]
    written = await record.update(goal, fields.get("version"))
    if written.status == "conflict":
        return await _render(workspace, plan_id, status=409, error=(
            "Someone else recorded progress on this goal at the same moment; nothing was overwritten. "
            "Check the goal below and record your progress again."))
    if written.status != "ok":
        return await _render(workspace, plan_id, error=written.message, status=422)
    return RedirectResponse(f"/app/plans/{plan_id}?saved=goal-{goal_id}#goal-{goal_id}", status_code=303)
