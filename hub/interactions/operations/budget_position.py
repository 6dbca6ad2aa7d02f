"""CarePlan/[id]/$budget-position: where a budget statement's money stands, computed from the
spend lines and never typed in (hub/money/ledger.py): per account (one per allocation and
management option) the allocation, contingency reserve, personal contribution, spend to date,
refunds, money returned and clawed back, balance, what is free to spend, what the plan expected
by now and whether spend runs ahead of it; and the statement's totals beside its indicative and
agreed amounts. An allocation awaiting its funder's agreement (an on-hold account, allocated
nothing) is in no total: `awaitingAgreement` says how much is waiting. Optional `date` (default
today). Needs read on CarePlan, Account and ChargeItem."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.jsontext import FhirDecimal
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, first, parameters
from hub.money import accounts as money_accounts
from hub.money.ledger import Position
from hub.money.statement import AGREED_AMOUNT, INDICATIVE_AMOUNT, allocations, is_statement, money_value
from hub.store import resources


def _money(value: Decimal) -> dict[str, Any]:
    return {"value": FhirDecimal(f"{value:.2f}"), "currency": "GBP"}


def account_part(account: dict[str, Any], place: Position) -> dict[str, Any]:
    return {"name": "account", "part": [
        {"name": "account", "valueReference": {"reference": f"Account/{account['id']}", "display": account.get("name", "")}},
        {"name": "fundingSource", "valueCode": place.funder}, {"name": "managementOption", "valueCode": place.option},
        {"name": "status", "valueCode": account.get("status", "")},
        *({"name": name, "valueMoney": _money(value)} for name, value in (
            ("allocated", place.allocated), ("contingency", place.contingency), ("personalContribution", place.contribution),
            ("spent", place.spent_net), ("refunded", place.refunded), ("returned", place.returned),
            ("clawedBack", place.clawed_back), ("balance", place.balance), ("available", place.available),
            ("expectedByNow", place.expected))),
        {"name": "lines", "valueInteger": len(place.lines)},
        {"name": "aheadOfPlan", "valueBoolean": place.ahead_of_plan}, {"name": "overspent", "valueBoolean": place.overspent}]}


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_id is not None
    for needed in ("CarePlan", "Account", "ChargeItem"):
        ctx.access.require(needed, "r")
    pairs, _ = parameters(request)
    try:
        today = date.fromisoformat(first(pairs, "date") or date.today().isoformat())
    except ValueError:
        raise FhirError("value", "`date` must be a date (YYYY-MM-DD)") from None
    async with ctx.reading() as conn:
        current = await resources.read(conn, "CarePlan", res_id, access=ctx.access)
        ctx.touched.append(current)
        statement = jsontext.loads(current.content)
        if not is_statement(statement):
            raise FhirError("business-rule", f"CarePlan/{res_id} is not a budget statement", status=422)
        patient = (statement.get("subject") or {}).get("reference", "").removeprefix("Patient/")
        found = await money_accounts.positions(conn, patient, today, access=ctx.access, statement_id=res_id)
    totals = {"allocated": Decimal(0), "spent": Decimal(0), "balance": Decimal(0), "available": Decimal(0)}
    for _, place in found:
        totals["allocated"] += place.allocated
        totals["spent"] += place.spent_net
        totals["balance"] += place.balance
        totals["available"] += place.available
    extension = {e.get("url"): e for e in statement.get("extension") or []}
    out: list[dict[str, Any]] = [{"name": "statement", "valueReference": {"reference": f"CarePlan/{res_id}"}},
                                 {"name": "date", "valueDate": today.isoformat()}]
    for name, url in (("indicative", INDICATIVE_AMOUNT), ("agreed", AGREED_AMOUNT)):
        if url in extension:
            out.append({"name": name, "valueMoney": _money(money_value(extension[url].get("valueMoney")))})
    out += [{"name": name, "valueMoney": _money(value)} for name, value in totals.items()]
    # A funder whose commissioner has not agreed the agreed plan: its account is on hold with
    # nothing allocated (hub.money.accounts.awaiting_agreement); what it was asked for, apart.
    held = {place.funder for account, place in found if account.get("status") == "on-hold"}
    if held:
        waiting = sum((a.amount for a in allocations(statement) if a.funder in held), Decimal(0))
        out.append({"name": "awaitingAgreement", "valueMoney": _money(waiting)})
    out += [account_part(account, place) for account, place in found]
    return Outcome(200, body={"resourceType": "Parameters", "parameter": out})


OPERATION = Operation(
    name="budget-position",
    definition="https://ipc-hub.example.org/fhir/OperationDefinition/CarePlan-budget-position",
    levels=frozenset({"instance"}),
    types=frozenset({"CarePlan"}),
    run=run,
    documentation="Where a budget statement's money stands, computed from its accounts' spend lines: per account the "
                  "allocation, contingency, contribution, spend to date, returns and claw-backs, balance, what the plan "
                  "expected by now and whether spend is ahead of it; optional `date`.",
)
