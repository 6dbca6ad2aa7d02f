"""The caseload (`/app`): the people whose plan names me as coordinator (the guide's CarePlan
`coordinator` search parameter), each with their stage, next review date and what is overdue,
searchable by name, NHS number, service number or council id; and "find a person" across the
record (as far as consent lets this person see)."""
from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.fhir.identifiers import NHS_NUMBER
from hub.web import facts
from hub.web.access import signed_in
from hub.web.context import page_context
from hub.web.pages import render

router = APIRouter(include_in_schema=False)

_HANDOVER = f"{facts.TRANSITION}|gp-registration-handover"


@router.get("/app")
async def caseload(request: Request) -> Response:
    workspace = await signed_in(request)
    record = workspace.record
    query = (request.query_params.get("q") or "").strip()[:100]
    plans = await record.search("CarePlan", [
        ("coordinator", workspace.user.practitioner), ("category", f"{facts.PLAN_CATEGORY}|care-support-plan"),
        ("_include", "CarePlan:subject"), ("_count", "200")])
    today = date.today().isoformat()
    overdue = await record.search("Task", [("code", _HANDOVER), ("status", "requested,received,accepted,in-progress"),
                                           ("period", f"lt{today}"), ("_count", "500")])
    late_people = {(t.get("for") or {}).get("reference") for t in overdue.matches}
    people = []
    for plan in plans.matches:
        subject = (plan.get("subject") or {}).get("reference", "")
        patient = plans.included.get(subject)
        if patient is None or not facts.matches(patient, query):
            continue
        review = facts.next_review(plan)
        people.append({"patient": patient, "plan": plan, "stage": facts.stage(plan)[1], "review": review,
                       "review_overdue": facts.is_overdue(review), "handover_overdue": subject in late_people,
                       "identifiers": facts.identifiers(patient)})
    people.sort(key=lambda p: (not (p["review_overdue"] or p["handover_overdue"]), p["review"] or "9999"))
    found = await _find(record, request.query_params.get("find") or "")
    return render("caseload", **page_context(workspace, "caseload", "Your caseload", people=people, q=query,
                                             find=request.query_params.get("find") or "", found=found))


async def _find(record, text: str) -> list[dict] | None:
    """People in the record matching a name or an identifier value (None: nothing asked)."""
    text = text.strip()[:100]
    if not text:
        return None
    digits = text.replace(" ", "")
    if digits.isdigit() and len(digits) == 10:
        result = await record.search("Patient", [("identifier", f"{NHS_NUMBER}|{digits}"), ("_count", "20")])
    elif any(ch.isdigit() for ch in text):
        result = await record.search("Patient", [("identifier", digits), ("_count", "20")])
    else:
        result = await record.search("Patient", [("name", text), ("_count", "20")])
    return [{"patient": p, "identifiers": facts.identifiers(p)} for p in result.matches]
