"""A budget statement's figures as the hub keeps them: the agreed amount is the sum of the
allocations, the budget type follows from the funding mix, and each allocation (a funder's money
under one management option) has its own account. Pure functions over FHIR JSON."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hub.fhir import jsontext
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.ids import source_id
from hub.fhir.validation.invariants import budget_types_for, funders_of

SD = f"{CANONICAL_BASE}/StructureDefinition"
CS = f"{CANONICAL_BASE}/CodeSystem"
ALLOCATION = f"{SD}/budget-allocation"
AGREED_AMOUNT = f"{SD}/agreed-amount"
INDICATIVE_AMOUNT = f"{SD}/indicative-amount"
BUDGET_TYPE = f"{SD}/budget-type"
FUNDING_SOURCE = f"{CS}/ipc-funding-source"
MANAGEMENT_OPTION = f"{CS}/ipc-management-option"
ACCOUNT_PROFILE = f"{SD}/ipc-budget-account"
# The hub keeps the accounts: their ids are derived from the statement and the allocation's key.
HUB_SOURCE = "ipc-hub"
_TYPE_NAMES = {"personal-budget": "Personal budget", "personal-health-budget": "Personal health budget",
               "integrated-personal-budget": "Integrated personal budget",
               "carer-personal-health-budget": "Carer's personal health budget"}
_FUNDER_NAMES = {"nhs": "NHS", "local-authority": "Local authority social care", "education": "Education",
                 "other": "Other"}
_OPTION_NAMES = {"direct-payment": "Direct payment", "notional": "Notional budget", "third-party": "Third party budget"}


@dataclass(frozen=True, slots=True)
class Allocation:
    funder: str
    option: str
    amount: Decimal
    contingency: Decimal
    contribution: Decimal
    purpose: str

    @property
    def key(self) -> tuple[str, str]:
        return self.funder, self.option


def is_statement(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "CarePlan" and any(
        c.get("system") == f"{CS}/ipc-plan-category" and c.get("code") == "budget-statement"
        for concept in resource.get("category") or [] for c in concept.get("coding") or [])


def _sub(extension: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in extension.get("extension") or [] if e.get("url") == url), None)


def _code(extension: dict[str, Any] | None, system: str) -> str | None:
    concept = (extension or {}).get("valueCodeableConcept") or {}
    return next((c.get("code") for c in concept.get("coding") or [] if c.get("system") == system), None)


def money_value(money: dict[str, Any] | None) -> Decimal:
    value = (money or {}).get("value")
    return Decimal(str(value)) if value is not None else Decimal(0)


def allocations(statement: dict[str, Any]) -> list[Allocation]:
    found = []
    for extension in statement.get("extension") or []:
        if extension.get("url") != ALLOCATION:
            continue
        funder = _code(_sub(extension, "fundingSource"), FUNDING_SOURCE) or "other"
        option = _code(_sub(extension, "managementOption"), MANAGEMENT_OPTION) or "notional"
        found.append(Allocation(
            funder, option, money_value((_sub(extension, "amount") or {}).get("valueMoney")),
            money_value((_sub(extension, "contingency") or {}).get("valueMoney")),
            money_value((_sub(extension, "personalContribution") or {}).get("valueMoney")),
            (_sub(extension, "purpose") or {}).get("valueString", "")))
    return found


def settled(statement: dict[str, Any]) -> dict[str, Any]:
    """The statement with its agreed amount restated as the sum of its allocations (ipc-bud-1)
    and its budget type as its funding mix makes it (ipc-bud-3): when the recorder joins funders'
    shares, neither is whoever wrote first's. The indicative amount, an estimate made before
    planning, is left as it is. A carer's personal health budget stays one while only the NHS funds it."""
    amounts = [sub["valueMoney"] for e in statement.get("extension") or [] if e.get("url") == ALLOCATION
               for sub in e.get("extension") or [] if sub.get("url") == "amount" and sub.get("valueMoney")]
    if not amounts:
        return statement
    total = sum((money_value(m) for m in amounts), Decimal(0))
    currency = next((m.get("currency") for m in amounts if m.get("currency")), "GBP")
    agreed = {"url": AGREED_AMOUNT, "valueMoney": {"value": jsontext.FhirDecimal(f"{total:.2f}"), "currency": currency}}
    allowed = budget_types_for(funders_of(statement))
    out = []
    for extension in statement.get("extension") or []:
        url = extension.get("url")
        if url == AGREED_AMOUNT:
            continue
        if url == BUDGET_TYPE and _code(extension, f"{CS}/ipc-budget-type") not in allowed:
            extension = {"url": BUDGET_TYPE, "valueCodeableConcept": {"coding": [
                {"system": f"{CS}/ipc-budget-type", "code": allowed[0], "display": _TYPE_NAMES[allowed[0]]}]}}
        out.append(extension)
    # Always right after the last allocation, so restating an unchanged statement changes nothing.
    last = max(i for i, e in enumerate(out) if e.get("url") == ALLOCATION)
    out.insert(last + 1, agreed)
    return {**statement, "extension": out}


def account_id(statement_id: str, funder: str, option: str) -> str:
    return source_id(HUB_SOURCE, "Account", f"{statement_id}|{funder}|{option}")


def accounts_for(statement_id: str, statement: dict[str, Any],
                 awaiting: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One Account per allocation and management option of the statement (two allocations of
    one funder under one option are one account holding both). Its id comes from the statement
    and the allocation's key, so restating the statement restates the same accounts; an account
    whose allocation is gone is closed (`inactive`) by `closed_accounts`.

    `awaiting`: funding source → who has still to agree the (agreed) plan the statement is part
    of, for a funder added after the plan was agreed or one that withdrew (hub.plans.agreement.
    awaiting). Its allocation is not in effect until they agree: its account is `on-hold` with
    nothing allocated (so the budget position, the cost of care and every total built on the
    accounts leave it out), and says in its description what is waiting and for whom."""
    awaiting = awaiting or {}
    by_key: dict[tuple[str, str], list[Allocation]] = {}
    for allocation in allocations(statement):
        by_key.setdefault(allocation.key, []).append(allocation)
    subject = statement.get("subject") or {}
    period = statement.get("period") or {}
    open_statement = statement.get("status") in ("draft", "active", "on-hold")
    out = []
    for (funder, option), parts in by_key.items():
        amount = sum((a.amount for a in parts), Decimal(0))
        contingency = sum((a.contingency for a in parts), Decimal(0))
        contribution = sum((a.contribution for a in parts), Decimal(0))
        held_for = awaiting.get(funder)
        if held_for:
            amount = contingency = contribution = Decimal(0)
        extensions: list[dict[str, Any]] = [
            {"url": f"{SD}/funding-source", "valueCodeableConcept": {"coding": [
                {"system": FUNDING_SOURCE, "code": funder, "display": _FUNDER_NAMES.get(funder, funder)}]}},
            {"url": f"{SD}/budget-statement", "valueReference": {"reference": f"CarePlan/{statement_id}"}},
            {"url": f"{SD}/allocated-amount", "valueMoney": _money(amount)}]
        if contingency:
            extensions.append({"url": f"{SD}/contingency-reserve", "valueMoney": _money(contingency)})
        if contribution:
            extensions.append({"url": f"{SD}/personal-contribution", "valueMoney": _money(contribution)})
        account: dict[str, Any] = {
            "resourceType": "Account", "id": account_id(statement_id, funder, option),
            "meta": {"profile": [ACCOUNT_PROFILE]}, "extension": extensions,
            "status": ("on-hold" if held_for else "active") if open_statement else "inactive",
            "type": {"coding": [{"system": MANAGEMENT_OPTION, "code": option,
                                 "display": _OPTION_NAMES.get(option, option)}]},
            "name": f"{_FUNDER_NAMES.get(funder, funder)}: {_OPTION_NAMES.get(option, option).lower()}",
            "subject": [subject], "servicePeriod": period,
        }
        purposes = "; ".join(a.purpose for a in parts if a.purpose)
        if held_for:
            waiting = sum((a.amount for a in parts), Decimal(0))
            purposes = (f"Awaiting agreement: £{waiting:,.2f} not in effect until {held_for} agrees the plan"
                        + (f". {purposes}" if purposes else ""))
        if purposes:
            account["description"] = purposes
        out.append(account)
    return out


def closed_accounts(kept: list[dict[str, Any]], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accounts the hub holds for a statement whose allocation it no longer has: inactive with
    nothing allocated, never deleted (lines booked to them stay, and show as overspent)."""
    ids = {a["id"] for a in kept}
    out = []
    for account in stored:
        if account["id"] in ids or account.get("status") not in ("active", "on-hold"):
            continue
        extensions = [e for e in account.get("extension") or [] if e.get("url") != f"{SD}/allocated-amount"]
        extensions.append({"url": f"{SD}/allocated-amount", "valueMoney": _money(Decimal(0))})
        out.append({**{k: v for k, v in account.items() if k != "meta"}, "status": "inactive", "extension": extensions})
    return out


def _money(value: Decimal) -> dict[str, Any]:
    return {"value": jsontext.FhirDecimal(f"{value:.2f}"), "currency": "GBP"}
