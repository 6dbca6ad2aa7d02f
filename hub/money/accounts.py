"""The money rules that read and write the record: the accounts a budget statement's allocations
make, the position of each account from its spend lines, and a Task for the coordinator when
spend runs ahead of plan. Called inside the writer's transaction: by the API after a budget
statement or spend line is written (hub.interactions.write) and by the recorder after a batch
(hub.pipeline.recorder), so partners and feeds meet the same rules."""
from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection

from hub.audit.provenance import agent, build
from hub.consent.parts import BUDGET, PART_SYSTEM
from hub.fhir import jsontext
from hub.fhir.ids import source_id
from hub.fhir.references import parse_reference
from hub.money import ledger
from hub.money.allocation import pounds
from hub.money.statement import CS, HUB_SOURCE, SD, accounts_for, closed_accounts, is_statement
from hub.plans import agreement
from hub.plans.model import PLAN, funders, parent_plans, plan_kind
from hub.search.access import Access
from hub.store import money as money_store
from hub.store import plans as plan_store
from hub.store import resources
from hub.store.resources import UNCHANGED, Version

TASK_SYSTEM = f"{CS}/ipc-budget-task"
AHEAD = "spend-ahead-of-plan"
OPEN_TASK = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
_NAMES = {"nhs": "NHS", "local-authority": "council", "education": "education", "other": "other funder"}
_OPTIONS = {"direct-payment": "direct payment", "notional": "notional budget", "third-party": "third party budget"}


def _patient_of(resource: dict[str, Any]) -> str | None:
    subject = resource.get("subject")
    if isinstance(subject, list):
        subject = subject[0] if subject else None
    parsed = parse_reference((subject or {}).get("reference") or "")
    return parsed[1] if parsed and parsed[0] == "Patient" else None


async def accounts_to_keep(conn: AsyncConnection, statement_id: str,
                           statement: dict[str, Any]) -> list[dict[str, Any]]:
    """The Accounts the statement's allocations make (one per allocation and management option),
    and those it no longer makes, closed. Resources to write; unchanged ones write nothing."""
    if not is_statement(statement):
        return []
    patient = _patient_of(statement)
    kept = accounts_for(statement_id, statement, await awaiting_agreement(conn, statement))
    if patient is None:
        return kept
    stored = [a for a in await money_store.of_people(conn, "Account", [patient], access=Access.system())
              if _statement_of(a) == statement_id]
    return kept + closed_accounts(kept, stored)


async def awaiting_agreement(conn: AsyncConnection, statement: dict[str, Any]) -> dict[str, str]:
    """Funding source → who has still to agree, for each funder of the statement whose
    commissioner has not agreed the agreed plan it is part of (added after the agreement, or
    withdrawn): its allocation is not in effect until they do (issue 13). Nothing while the
    plan is a draft: the person's budget is not in effect until the plan is agreed at all."""
    out: dict[str, str] = {}
    sources = funders(statement)
    for plan_id in parent_plans(statement):
        stored = await resources.current_version(conn, "CarePlan", plan_id, access=Access.system())
        if stored is None or stored.deleted or stored.content is None:
            continue
        out.update(agreement.awaiting_by_source(jsontext.loads(stored.content), sources))
    return out


def _statement_of(account: dict[str, Any]) -> str | None:
    for extension in account.get("extension") or []:
        if extension.get("url") == f"{SD}/budget-statement":
            return (extension.get("valueReference") or {}).get("reference", "").removeprefix("CarePlan/")
    return None


async def positions(conn: AsyncConnection, patient_id: str, today: date, *, access: Access,
                    statement_id: str | None = None) -> list[tuple[dict[str, Any], ledger.Position]]:
    """Each of the person's accounts (of one statement, if given) with its position today."""
    accounts = await money_store.of_people(conn, "Account", [patient_id], access=access)
    if statement_id is not None:
        accounts = [a for a in accounts if _statement_of(a) == statement_id]
    if not accounts:
        return []
    lines = [line for charge in await money_store.of_people(conn, "ChargeItem", [patient_id], access=access)
             if (line := ledger.line_of(charge)) is not None]
    return [(account, ledger.position(account, lines, today)) for account in accounts]


async def pace_tasks(conn: AsyncConnection, patient_ids: set[str], today: date) -> list[dict[str, Any]]:
    """A Task for each account whose spend runs ahead of plan (raised once: an open one is kept
    up to date with the figures; once the coordinator closes it, the next is raised the next
    month the spend is still ahead). Resources to write."""
    out = []
    system = Access.system()
    for patient_id in sorted(patient_ids):
        found = await positions(conn, patient_id, today, access=system)
        if not found:
            continue
        tasks = [t for t in await money_store.of_people(conn, "Task", [patient_id], access=system)
                 if any(c.get("system") == TASK_SYSTEM for c in (t.get("code") or {}).get("coding") or [])]
        for account, place in found:
            if not place.ahead_of_plan or account.get("status") != "active":
                continue
            focus = f"Account/{account['id']}"
            open_ones = [t for t in tasks if (t.get("focus") or {}).get("reference") == focus
                         and t.get("status") in OPEN_TASK]
            task_id = open_ones[0]["id"] if open_ones else source_id(
                HUB_SOURCE, "Task", f"{AHEAD}|{account['id']}|{today:%Y-%m}")
            if not open_ones and any(t["id"] == task_id for t in tasks):
                continue  # this month's was closed by the coordinator
            owner = await _coordinator(conn, account)
            out.append(ahead_task(task_id, patient_id, account, place, today, owner,
                                  open_ones[0] if open_ones else None))
    return out


async def _coordinator(conn: AsyncConnection, account: dict[str, Any]) -> dict[str, Any] | None:
    """The person's named coordinator: the care-coordinator of the plan the statement is part of."""
    statement_id = _statement_of(account)
    if not statement_id:
        return None
    statement = await resources.current_version(conn, "CarePlan", statement_id, access=Access.system())
    if statement is None or statement.deleted:
        return None
    for part_of in jsontext.loads(statement.content).get("partOf") or []:
        parsed = parse_reference(part_of.get("reference") or "")
        if not parsed or parsed[0] != "CarePlan":
            continue
        plan = await resources.current_version(conn, "CarePlan", parsed[1], access=Access.system())
        if plan is None or plan.deleted:
            continue
        for extension in jsontext.loads(plan.content).get("extension") or []:
            if extension.get("url") == f"{SD}/care-coordinator" and extension.get("valueReference"):
                return extension["valueReference"]
    return None


def ahead_task(task_id: str, patient_id: str, account: dict[str, Any], place: ledger.Position, today: date,
               owner: dict[str, Any] | None, existing: dict[str, Any] | None) -> dict[str, Any]:
    name = f"{_NAMES.get(place.funder, place.funder)} {_OPTIONS.get(place.option, place.option)}"
    words = (f"Spend on the {name} is running ahead of plan: {pounds(place.spent_net)} spent by "
             f"{today.isoformat()}, where the plan expected about {pounds(place.expected)} "
             f"({pounds(place.allocated - place.contingency)} to spend over {place.start} to {place.end}); "
             f"balance {pounds(place.balance)}, contingency {pounds(place.contingency)}. Review with the person "
             "whether the plan or the budget needs to change.")
    task: dict[str, Any] = {
        "resourceType": "Task", "id": task_id,
        "meta": {"tag": [{"system": PART_SYSTEM, "code": BUDGET}]},
        "status": existing.get("status", "requested") if existing else "requested", "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_SYSTEM, "code": AHEAD, "display": "Spend running ahead of plan"}]},
        "description": words, "focus": {"reference": f"Account/{account['id']}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": existing.get("authoredOn", today.isoformat()) if existing else today.isoformat(),
        "requester": {"display": "IPC Hub"},
    }
    statement_id = _statement_of(account)
    if statement_id:
        task["basedOn"] = [{"reference": f"CarePlan/{statement_id}"}]
    if owner:
        task["owner"] = owner
    return task


def patients_of_lines(resources_written: list[dict[str, Any]]) -> set[str]:
    """The people whose spend lines these resources are (the ones whose pace may have changed)."""
    return {p for r in resources_written if r.get("resourceType") == "ChargeItem" and (p := _patient_of(r))}


async def apply(conn: AsyncConnection, written: list[Version], today: date | None = None) -> list[Version]:
    """After a write (the API's, or a recorder batch's), in its transaction: keep the accounts of
    every budget statement written, and raise or update spend-ahead-of-plan Tasks for the people
    whose accounts or lines changed. Written by the hub (system access) with one Provenance naming
    the versions that led to it. Returns what it wrote."""
    today = today or date.today()
    derived: list[dict[str, Any]] = []
    grounds: list[Version] = []
    people: set[str] = set()
    statements_done: set[str] = set()
    for version in written:
        if version.res_type == "CarePlan" and not version.deleted:
            statement = jsontext.loads(version.content)
            if is_statement(statement):
                derived += await accounts_to_keep(conn, version.res_id, statement)
                statements_done.add(version.res_id)
                grounds.append(version)
                people.add(version.patient_id or "")
            elif plan_kind(statement) == PLAN:
                # An agreement given or withdrawn puts a funder's allocation in or out of effect.
                budgets = {budget_id: budget for budget_id, budget in
                           (await plan_store.budgets_of(conn, version.res_id)).items()
                           if budget_id not in statements_done}
                for budget_id, budget in budgets.items():
                    derived += await accounts_to_keep(conn, budget_id, budget)
                    statements_done.add(budget_id)
                if budgets:
                    grounds.append(version)
                    people.add(version.patient_id or "")
        elif version.res_type == "ChargeItem":
            grounds.append(version)
            people.add(version.patient_id or "")
    if not grounds:
        return []
    out: list[Version] = []
    for resource in derived:
        out += await _write(conn, resource)
    for task in await pace_tasks(conn, {p for p in people if p}, today):
        out += await _write(conn, task)
    if out:
        targets = [f"{v.res_type}/{v.res_id}/_history/{v.version}" for v in out]
        proof = build(targets, "UPDATE", [agent("assembler", {"display": "IPC Hub budget rules"})])
        proof["entity"] = [{"role": "derivation", "what": {"reference": f"{v.res_type}/{v.res_id}/_history/{v.version}"}}
                           for v in grounds]
        await resources.update(conn, "Provenance", proof["id"], proof, skip_unchanged=True, access=Access.system())
    return out


async def _write(conn: AsyncConnection, resource: dict[str, Any]) -> list[Version]:
    version, _ = await resources.update(conn, resource["resourceType"], resource["id"], resource,
                                        skip_unchanged=True, access=Access.system())
    return [] if version.method == UNCHANGED else [version]
