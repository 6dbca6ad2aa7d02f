"""The children's worklist (`/app/children`, coordinators and operators): every open Task about a
child or young person — the steps of an EHC needs assessment with their statutory due dates, EHC
plans' annual reviews, and the growing-up steps (preparing for adulthood, decisions passing, the
continuing care check, transfer at 18, a young carer's reassessment) — with the child's name and
age today, soonest due first, overdue ones marked, and those where the council's extract now says
otherwise marked "differs from the council" (hub.plans.council_owned). Filters: what kind of step,
overdue or due within four weeks, and the child's name.

Like every workspace page it reads through the hub's own API with the signed-in person's token
(hub.web.record): the consent filter decides which Tasks and children they see, and every read
is audited."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.fhir.ages import age_on, parse_birth_date
from hub.plans.council_owned import is_conflict_note
from hub.plans.ehc import CHILDREN_TASK_SYSTEM
from hub.web import facts
from hub.web.access import signed_in
from hub.web.context import page_context
from hub.web.errors import PageError
from hub.web.pages import render

router = APIRouter(include_in_schema=False)

OPEN = "requested,received,accepted,ready,in-progress,on-hold"
# The kinds of step a coordinator filters by, and the ipc-children-task codes of each.
KINDS = {
    "assessment": ("EHC needs assessment (20 weeks)", ("ehc-request", "ehc-decision", "ehc-advice", "ehc-draft",
                                                        "ehc-final")),
    "review": ("EHC plan annual review", ("ehc-annual-review",)),
    "transition": ("Growing up and transition", ("preparing-for-adulthood", "decisions-pass", "continuing-care-check",
                                                 "adult-transfer", "young-carer-reassessment")),
}
WHEN = {"all": "All open", "overdue": "Overdue", "soon": "Overdue or due within 4 weeks"}
SOON = timedelta(weeks=4)


def _kind_of(code: str | None) -> str | None:
    return next((kind for kind, (_, codes) in KINDS.items() if code in codes), None)


def _name(patient: dict[str, Any] | None) -> str:
    for name in (patient or {}).get("name") or ():
        words = [*(name.get("given") or []), name.get("family", "")]
        if any(words):
            return " ".join(w for w in words if w)
    return "Name not shared"


def rows(tasks: list[dict[str, Any]], children: dict[str, dict[str, Any] | None], today: date, *,
         kind: str, when: str, name: str) -> list[dict[str, Any]]:
    """The worklist's rows, filtered and soonest due first (pure: the page reads, this decides)."""
    wanted = name.strip().lower()
    out = []
    for task in tasks:
        code = facts.code_of(task.get("code"), CHILDREN_TASK_SYSTEM)
        step_kind = _kind_of(code)
        if step_kind is None or kind in KINDS and step_kind != kind:
            continue
        reference = (task.get("for") or {}).get("reference", "")
        patient = children.get(reference)
        child = _name(patient)
        if wanted and wanted not in child.lower():
            continue
        due = ((task.get("restriction") or {}).get("period") or {}).get("end")
        overdue = facts.is_overdue(due, today)
        if when == "overdue" and not overdue:
            continue
        if when == "soon" and not (due and date.fromisoformat(due[:10]) <= today + SOON):
            continue
        born = parse_birth_date((patient or {}).get("birthDate"))
        out.append({"task": task, "kind": KINDS[step_kind][0], "child": child, "patient": reference.partition("/")[2],
                    "age": age_on(born, today) if born else None, "due": due, "overdue": overdue,
                    "owner": (task.get("owner") or {}).get("display"),
                    "differs": [n["text"] for n in task.get("note") or () if is_conflict_note(n)]})
    out.sort(key=lambda r: (r["due"] or "9999", r["child"]))
    return out


@router.get("/app/children")
async def children_worklist(request: Request) -> Response:
    workspace = await signed_in(request)
    if workspace.user.role not in ("coordinator", "operator"):
        raise PageError(403, "Not available to your role", "The children's worklist is for care coordinators.")
    params = request.query_params
    kind = params.get("kind") if params.get("kind") in KINDS else "all"
    when = params.get("when") if params.get("when") in WHEN else "all"
    name = (params.get("name") or "").strip()[:100]
    record = workspace.record
    codes = ",".join(f"{CHILDREN_TASK_SYSTEM}|{code}" for _, step_codes in KINDS.values() for code in step_codes)
    found = await record.search("Task", [("code", codes), ("status", OPEN), ("_count", "500")])
    children: dict[str, dict[str, Any] | None] = {}
    for task in found.matches:
        reference = (task.get("for") or {}).get("reference", "")
        if reference.startswith("Patient/") and reference not in children:
            children[reference] = await record.read("Patient", reference.partition("/")[2])
    listed = rows(found.matches, children, date.today(), kind=kind, when=when, name=name)
    return render("children", **page_context(workspace, "children", "Children and young people", rows=listed,
                                             kinds={k: label for k, (label, _) in KINDS.items()}, kind=kind,
                                             whens=WHEN, when=when, child_name=name))
