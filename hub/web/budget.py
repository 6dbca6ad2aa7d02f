"""The budget statement (`/app/budgets/{id}`): the indicative and agreed amounts, each funder's
allocation and how it is managed, what it is for, and spend so far and the balance as the hub
computes them from the spend lines (`$budget-position`; a statement never holds spend), with a
bar chart (SVG drawn on the server, with the same figures in a table for screen readers and
without images). A funder whose commissioner has not agreed the plan the statement is part of (a
funder added after the plan was agreed, or one that withdrew) is marked: its allocation is not in
effect until it agrees (hub.plans.agreement.awaiting): it is left out of the allocated total,
as the hub's accounts leave it out of the budget position and the cost of care
(hub.money.accounts.awaiting_agreement)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.plans import agreement
from hub.plans.model import parent_plans
from hub.web import facts
from hub.web.access import signed_in
from hub.web.context import page_context
from hub.web.errors import PageError
from hub.web.pages import render
from hub.web.record import Record

router = APIRouter(include_in_schema=False)


@router.get("/app/budgets/{budget_id}")
async def budget(budget_id: str, request: Request) -> Response:
    workspace = await signed_in(request)
    record = workspace.record
    statement = await record.read("CarePlan", budget_id)
    if statement is None or not facts.has_category(statement, "budget-statement"):
        raise PageError(404, "Budget statement not found", "There is no such budget statement, or it is not "
                        "shared with your organisation.")
    patient_ref = (statement.get("subject") or {}).get("reference", "")
    patient = await record.read("Patient", patient_ref.split("/", 1)[1]) if patient_ref.startswith("Patient/") else None
    rows = facts.allocations(statement, await record.budget_position(budget_id))
    awaiting = await _awaiting(record, statement, {r["source_code"] for r in rows})
    for r in rows:
        r["awaiting"] = awaiting.get(r["source_code"])
    indicative = (facts.ext_value(statement, "indicative-amount") or {}).get("value")
    agreed = (facts.ext_value(statement, "agreed-amount") or {}).get("value")
    agreed = float(agreed) if agreed is not None else None
    # What is allocated is what is in effect: an allocation awaiting its funder's agreement is
    # shown, marked, but counts in no total until that funder agrees (as the accounts say).
    total = sum(r["amount"] for r in rows if not r["awaiting"])
    awaiting_total = sum(r["amount"] for r in rows if r["awaiting"])
    shared = all(r["spent"] is not None for r in rows)
    spent = sum(r["spent"] for r in rows) if shared else None
    return render("budget", **page_context(
        workspace, "caseload", statement.get("title") or "Budget statement", statement=statement, patient=patient,
        rows=rows, indicative=indicative, agreed=agreed, total=total, awaiting_total=awaiting_total, spent=spent,
        shared=shared,
        chart=facts.chart(rows, indicative), budget_type=facts.ext_value(statement, "budget-type")))


async def _awaiting(record: Record, statement: dict, sources: set[str]) -> dict[str, str]:
    """Funding source → who has still to agree, for the funders of an agreed plan whose
    commissioner has not agreed it (nothing while the plan is a draft: nothing is in effect)."""
    out: dict[str, str] = {}
    for plan_id in parent_plans(statement):
        plan = await record.read("CarePlan", plan_id)
        if plan is not None:
            out.update(agreement.awaiting_by_source(plan, sources))
    return out
