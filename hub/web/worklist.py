"""The worklist (`/app/worklist`): open Tasks owned by me or my organisation (MOD handovers to
the receiving GP practice and commissioners, due and overdue; plan sign-off requests to the
funder's commissioner, each with a link to the plan to agree) and identity review candidates,
which a person decides: confirm (the two records are merged: the newer one is retired and
linked `replaced-by` the other, which gains its identifiers) or reject (they are kept apart).
Each decision is written through the API in one transaction, so it is audited and its
Provenance names who decided."""
from __future__ import annotations

import copy
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from hub.plans import agreement
from hub.plans.model import AGREEMENT_ROLE_SYSTEM, PLAN_TASK_SYSTEM
from hub.web import facts
from hub.web.access import Workspace, posted, signed_in
from hub.web.context import page_context
from hub.web.errors import PageError
from hub.web.pages import render
from hub.web.record import Record

router = APIRouter(include_in_schema=False)

OPEN = "requested,received,accepted,in-progress"
REVIEW_CODE = "review-possible-duplicate"
SIGN_OFF = "plan-sign-off"


def is_review(task: dict[str, Any]) -> bool:
    return facts.code_of(task.get("code"), facts.TASK_CODE) == REVIEW_CODE


async def review_queue(record: Record) -> list[dict[str, Any]]:
    """Open identity reviews, each with the two people (as far as this person may see them)."""
    tasks = await record.search("Task", [("code", f"{facts.TASK_CODE}|{REVIEW_CODE}"), ("status", OPEN),
                                         ("_count", "200")])
    queue = []
    for task in tasks.matches:
        first = await record.read("Patient", _ref_id((task.get("for") or {}).get("reference")))
        other_ref = next((i.get("valueReference", {}).get("reference") for i in task.get("input") or []), None)
        second = await record.read("Patient", _ref_id(other_ref))
        queue.append({"task": task, "first": first, "second": second})
    return queue


def is_sign_off(task: dict[str, Any]) -> bool:
    return facts.code_of(task.get("code"), PLAN_TASK_SYSTEM) == SIGN_OFF


def signs_as(task: dict[str, Any], workspace: Workspace) -> bool:
    """A plan sign-off request no organisation owns yet (the record names no funder for it:
    hub.plans.followups) reaches every commissioner of its role's kind who may see the plan: the
    NHS commissioner role to NHS commissioners, the local authority's to councils', education's
    to education's. One owned by an Organization reaches that organisation's staff (`_mine`)."""
    user = workspace.user
    if user.role != "commissioner" or not is_sign_off(task) or (task.get("owner") or {}).get("reference"):
        return False
    roles = {facts.code_of(concept, AGREEMENT_ROLE_SYSTEM) for concept in task.get("performerType") or []}
    return agreement.ROLE_FOR_FUNDER.get(user.partner_class) in roles


def _ref_id(reference: str | None) -> str:
    return (reference or "").partition("/")[2] or "-"


async def _mine(record: Record, workspace: Workspace) -> set[str]:
    """References that mean "me or my organisation"."""
    user = workspace.user
    orgs = await record.search("Organization", [("identifier", f"{user.organisation_system}|{user.organisation}"),
                                                ("_count", "50")])
    return {user.practitioner, *(f"Organization/{o['id']}" for o in orgs.matches)}


@router.get("/app/worklist")
async def worklist(request: Request) -> Response:
    workspace = await signed_in(request)
    record = workspace.record
    mine = await _mine(record, workspace)
    tasks = await record.search("Task", [("status", OPEN), ("_count", "500"), ("_sort", "period")])
    today = date.today()
    owned = []
    for task in tasks.matches:
        if is_review(task):
            continue
        owners = {(task.get("owner") or {}).get("reference")} | {
            r.get("reference") for r in (task.get("restriction") or {}).get("recipient") or []}
        if not owners & mine and not signs_as(task, workspace):
            continue
        due = ((task.get("restriction") or {}).get("period") or {}).get("end") \
            or (task.get("executionPeriod") or {}).get("end")
        plan = (task.get("focus") or {}).get("reference", "") if is_sign_off(task) else ""
        owned.append({"task": task, "due": due, "overdue": facts.is_overdue(due, today),
                      "patient": _ref_id((task.get("for") or {}).get("reference")),
                      "plan": plan.removeprefix("CarePlan/") if plan.startswith("CarePlan/") else None})
    reviews = await review_queue(record) if workspace.user.role in ("operator", "coordinator") else []
    return render("worklist", **page_context(workspace, "worklist", "Your worklist", tasks=owned, reviews=reviews,
                                             done=request.query_params.get("done")))


@router.post("/app/reviews/{task_id}")
async def decide(task_id: str, request: Request) -> Response:
    workspace = await signed_in(request)
    fields = await posted(request, workspace)
    if workspace.user.role not in ("operator", "coordinator"):
        raise PageError(403, "Not available to your role", "Identity reviews are decided by operators and coordinators.")
    record = workspace.record
    task = await record.read("Task", task_id)
    if task is None or not is_review(task) or task.get("status") not in OPEN.split(","):
        raise PageError(404, "Review not found", "This review is not open, or you may not see it.")
    back = fields.get("back") if fields.get("back") in ("/app/worklist", "/app/operations") else "/app/worklist"
    decision = fields.get("decision")
    if decision not in ("merge", "keep-apart"):
        raise PageError(400, "Choose a decision", "Confirm the two records are one person, or keep them apart.")
    done = copy.deepcopy(task)
    done["status"] = "completed"
    done["businessStatus"] = {"text": "merged" if decision == "merge" else "kept apart"}
    done["owner"] = {"reference": workspace.user.practitioner, "display": workspace.user.display_name}
    entries: list[tuple[dict[str, Any], str]] = [(done, task["meta"]["versionId"])]
    if decision == "merge":
        retired = await record.read("Patient", _ref_id((task.get("for") or {}).get("reference")))
        other = next((i.get("valueReference", {}).get("reference") for i in task.get("input") or []), None)
        survivor = await record.read("Patient", _ref_id(other))
        if retired is None or survivor is None:
            raise PageError(403, "Cannot merge", "You may not see both records, so you cannot merge them.")
        kept, gone = merged(survivor, retired)
        entries += [(kept, survivor["meta"]["versionId"]), (gone, retired["meta"]["versionId"])]
    written = await record.transaction(entries)
    if written.status != "ok":
        raise PageError(409 if written.status == "conflict" else 422, "The decision was not saved",
                        f"{written.message}. Reload the page and decide again.")
    return RedirectResponse(f"{back}?done={task_id}", status_code=303)


def merged(survivor: dict[str, Any], retired: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two Patients after a confirmed merge: both histories kept, the retired one inactive
    and `replaced-by` the survivor, which `replaces` it and gains its identifiers."""
    kept, gone = copy.deepcopy(survivor), copy.deepcopy(retired)
    known = {(i.get("system"), i.get("value")) for i in kept.get("identifier") or []}
    kept["identifier"] = [*(kept.get("identifier") or []),
                          *(i for i in gone.get("identifier") or [] if (i.get("system"), i.get("value")) not in known)]
    kept["link"] = [*(kept.get("link") or []), {"other": {"reference": f"Patient/{gone['id']}"}, "type": "replaces"}]
    gone["active"] = False
    gone["link"] = [*(gone.get("link") or []), {"other": {"reference": f"Patient/{kept['id']}"}, "type": "replaced-by"}]
    return kept, gone
