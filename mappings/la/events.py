"""A person's events from a council's extract → their part of the shared record.

- Services → activities of the person's care and support plan (activity ids `la-event-<ref>`,
  so the recorder's merge keeps each service once), and the council's allocation of the
  budget statement: the yearly cost of the services, managed as their delivery mechanism says
  (the mechanism carrying most of the money when services differ; each is named in `purpose`).
- Requests → a ServiceRequest (a request for support, with its outcome).
- Assessments and reviews → a Procedure each (when, by whom, the outcome); an open review gives
  the plan its next review date.
The plan and budget statement are contributions under the council's own ids: the recorder
merges them into the person's one open plan and statement."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from hub.fhir.builders import coding, concept, transaction
from hub.fhir.builders import put_entry as entry
from hub.fhir.councils import council, patient_id
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.ids import source_id
from hub.fhir.jsontext import FhirDecimal
from hub.fhir.rows import read_rows
from mappings.la import codes
from mappings.la.costs import ServiceCost, service_cost, statement_year
from mappings.la.people import PLAN_PROFILE
from mappings.la.rows import EVENT_COLUMNS

BUDGET_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/ipc-budget-statement"
SD = f"{CANONICAL_BASE}/StructureDefinition"
MECHANISM_WORDS = {"Direct Payment": "direct payment",
                   "CASSR Managed Personal Budget": "council-managed personal budget",
                   "CASSR Commissioned Support only": "council-commissioned support"}
_PROCEDURE_NAMES = {("Assessment", "Service User"): "Assessment of care and support needs",
                    ("Assessment", "Carer"): "Carer's assessment",
                    ("Review", "Service User"): "Review of care and support",
                    ("Review", "Carer"): "Review of a carer's support"}


def map_events(payload: bytes, source: str) -> dict[str, Any]:
    """`la-cld-events`: every event of one person in one extract file → one Bundle."""
    # A reference sent twice in one file is one event corrected: the later row wins.
    rows = list({r["Event_Reference"]: r for r in read_rows(payload, EVENT_COLUMNS)}.values())
    person = {(r["LA_Code"], r["LA_Person_Unique_Identifier"]) for r in rows}
    if len(person) != 1:
        raise FhirError("structure", "LA extract: an events payload holds the events of one person")
    la_code, la_person = person.pop()
    subject = {"reference": f"Patient/{patient_id(source, la_person)}"}
    services = [r for r in rows if r["Event_Type"] == "Service"]
    others = [r for r in rows if r["Event_Type"] != "Service"]
    records = [_record(source, r, subject) for r in others]
    plan = _plan(source, la_code, la_person, subject, rows, services, records)
    entries = [entry(plan)]
    if services:
        entries.append(entry(_budget(source, la_code, la_person, subject, plan, services)))
    entries += [entry(r) for r in records]
    return transaction(entries)


def _day(value: str) -> date:
    return date.fromisoformat(value)


def _period(row: dict[str, str]) -> dict[str, str]:
    period = {"start": row["Event_Start_Date"]}
    if row["Event_End_Date"]:
        period["end"] = row["Event_End_Date"]
    return period


def _event_identifier(row: dict[str, str]) -> list[dict[str, Any]]:
    return [{"system": codes.EVENT_REFERENCE, "value": row["Event_Reference"], "assigner": council(row["LA_Code"])}]


def _outcome(row: dict[str, str]) -> dict[str, Any] | None:
    if not row["Event_Outcome"]:
        return None
    return {"coding": [coding(codes.EVENT_OUTCOME, row["Event_Outcome"], row["Event_Outcome"])],
            "text": row["Event_Outcome"]}


def _record(source: str, row: dict[str, str], subject: dict[str, str]) -> dict[str, Any]:
    """A request, assessment or review as the resource a mature record keeps for it."""
    ref, kind = row["Event_Reference"], row["Event_Type"]
    code = {"coding": [coding(codes.EVENT_TYPE, kind, kind)],
            "text": _PROCEDURE_NAMES.get((kind, row["Client_Type"]), "Request for adult social care support")}
    outcome = _outcome(row)
    if kind == "Request":
        request: dict[str, Any] = {
            "resourceType": "ServiceRequest", "id": source_id(source, "ServiceRequest", ref),
            "identifier": _event_identifier(row),
            "status": "completed" if row["Event_End_Date"] else "active", "intent": "proposal",
            "category": [{"text": "Adult social care"}], "code": code, "subject": subject,
            "occurrencePeriod": _period(row), "authoredOn": row["Event_Start_Date"],
            "performer": [council(row["LA_Code"])],
        }
        if outcome:
            request["note"] = [{"text": f"Outcome: {row['Event_Outcome']}"}]
        return request
    procedure: dict[str, Any] = {
        "resourceType": "Procedure", "id": source_id(source, "Procedure", ref),
        "identifier": _event_identifier(row),
        "status": "completed" if row["Event_End_Date"] else "in-progress",
        "category": {"text": "Adult social care"}, "code": code, "subject": subject,
        "performedPeriod": _period(row), "performer": [{"actor": council(row["LA_Code"])}],
    }
    if outcome:
        procedure["outcome"] = outcome
    return procedure


def _plan(source: str, la_code: str, la_person: str, subject: dict[str, str], rows: list[dict[str, str]],
          services: list[dict[str, str]], records: list[dict[str, Any]]) -> dict[str, Any]:
    open_services = [s for s in services if not s["Event_End_Date"]]
    open_reviews = sorted(r["Event_Start_Date"] for r in rows if r["Event_Type"] == "Review" and not r["Event_End_Date"])
    stage = _stage(rows, open_services, open_reviews)
    extensions: list[dict[str, Any]] = [{"url": f"{SD}/ipc-stage", "valueCodeableConcept": concept(codes.STAGE, *stage)}]
    if open_services:
        # Support being delivered means the council agreed it, when the first open service
        # began. The plan stays a draft: making it active needs a named coordinator, which
        # CLD does not carry (the coordinator or another source activates it).
        extensions.append({"url": f"{SD}/plan-agreement", "extension": [
            {"url": "agreedBy", "valueReference": council(la_code)},
            {"url": "role", "valueCodeableConcept": concept(
                codes.AGREEMENT_ROLE, "local-authority-commissioner", "Local authority commissioner")},
            {"url": "date", "valueDateTime": min(s["Event_Start_Date"] for s in open_services)},
        ]})
    if open_reviews:
        extensions.append({"url": f"{SD}/next-review-date", "valueDate": open_reviews[0]})
    plan: dict[str, Any] = {
        "resourceType": "CarePlan", "id": source_id(source, "CarePlan", f"plan:{la_person}"),
        "meta": {"profile": [PLAN_PROFILE]}, "extension": extensions,
        "status": "draft", "intent": "plan",
        "category": [concept(codes.PLAN_CATEGORY, "care-support-plan", "Personalised care and support plan")],
        "title": "Personalised care and support plan",
        "description": f"Adult social care from local authority {la_code}: the requests, assessments, "
                       "reviews and services in its client level data.",
        "subject": subject,
        "period": {"start": min(r["Event_Start_Date"] for r in rows)},
        "author": council(la_code),
    }
    if records:
        plan["supportingInfo"] = [{"reference": f"{r['resourceType']}/{r['id']}"} for r in records]
    if services:
        plan["activity"] = [_activity(s) for s in services]
    return plan


def _stage(rows: list[dict[str, str]], open_services: list, open_reviews: list) -> tuple[str, str]:
    kinds = {r["Event_Type"] for r in rows}
    if open_reviews:
        return "review", "Review"
    if open_services or "Service" in kinds:
        return "make-it-happen", "Make it happen"
    if "Assessment" in kinds:
        return "conversation", "Conversation"
    return "preparation", "Preparation"


def _activity(row: dict[str, str]) -> dict[str, Any]:
    component, service_type = row["Service_Component"], row["Service_Type"]
    life_area = codes.translate("cld-service-component-to-life-area", codes.SERVICE_COMPONENT, component,
                                "Service_Component")
    mechanism = row["Delivery_Mechanism"]
    codes.translate("cld-delivery-mechanism-to-management-option", codes.DELIVERY_MECHANISM, mechanism,
                    "Delivery_Mechanism")  # refuses an unknown mechanism here too
    weekly = _weekly(row)
    cost = (f"£{row['Unit_Cost']} {row['Cost_Frequency_Unit_Type'].lower()}, "
            f"{row['Planned_units_per_week']} planned units a week"
            + (f" (£{weekly} a week)" if weekly else ""))
    detail: dict[str, Any] = {
        "kind": "ServiceRequest",
        "code": {"coding": [coding(codes.SERVICE_COMPONENT, component, component),
                            coding(codes.SERVICE_TYPE, service_type, service_type), life_area],
                 "text": component},
        "status": "completed" if row["Event_End_Date"] else "in-progress",
        "scheduledPeriod": _period(row),
        "performer": [council(row["LA_Code"])],
        "description": f"{component} ({service_type}), delivered as {mechanism}: {cost}",
    }
    activity: dict[str, Any] = {"id": f"la-event-{row['Event_Reference']}", "detail": detail}
    if outcome := _outcome(row):
        activity["outcomeCodeableConcept"] = [outcome]
    return activity


def _weekly(row: dict[str, str]) -> Decimal:
    start = _day(row["Event_Start_Date"])
    return _cost(row, statement_year(start)).weekly


def _cost(row: dict[str, str], year: tuple[date, date]) -> ServiceCost:
    end = _day(row["Event_End_Date"]) if row["Event_End_Date"] else None
    return service_cost(row["Unit_Cost"], row["Cost_Frequency_Unit_Type"], row["Planned_units_per_week"],
                        _day(row["Event_Start_Date"]), end, year)


def _money(value: Decimal) -> dict[str, Any]:
    """Pence kept as written (225.00, not 225.0): FHIR decimals carry their precision."""
    return {"value": FhirDecimal(f"{value:.2f}"), "currency": "GBP"}


def _budget(source: str, la_code: str, la_person: str, subject: dict[str, str], plan: dict[str, Any],
            services: list[dict[str, str]]) -> dict[str, Any]:
    """The council's allocations of the person's budget statement: what their services cost in
    the statement year, one allocation per management option their delivery mechanisms make
    (part direct payment, part commissioned: both kept, each its own account), and the agreed
    amount their sum. A council extract carries no indicative amount (that comes from the
    resource allocation system, `$indicative-budget`)."""
    year = statement_year(min(_day(s["Event_Start_Date"]) for s in services))
    by_mechanism: dict[str, Decimal] = {}
    for service in services:
        amount = _cost(service, year).in_year
        by_mechanism[service["Delivery_Mechanism"]] = by_mechanism.get(service["Delivery_Mechanism"], Decimal(0)) + amount
    by_option: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for mechanism in sorted(by_mechanism, key=lambda m: -by_mechanism[m]):
        option = codes.translate("cld-delivery-mechanism-to-management-option", codes.DELIVERY_MECHANISM, mechanism,
                                 "Delivery_Mechanism")
        by_option.setdefault(option["code"], (option, []))[1].append(mechanism)
    allocations = []
    for option, mechanisms in by_option.values():
        amount = sum((by_mechanism[m] for m in mechanisms), Decimal(0))
        allocations.append({"url": f"{SD}/budget-allocation", "extension": [
            {"url": "fundingSource", "valueCodeableConcept": concept(
                codes.FUNDING_SOURCE, "local-authority", "Local authority social care")},
            {"url": "managementOption", "valueCodeableConcept": {"coding": [option]}},
            {"url": "amount", "valueMoney": _money(amount)},
            {"url": "purpose", "valueString": "Adult social care services: " + "; ".join(
                f"{MECHANISM_WORDS[m]} £{by_mechanism[m]:.2f}" for m in mechanisms)},
        ]})
    total = sum(by_mechanism.values(), Decimal("0.00"))
    return {
        "resourceType": "CarePlan", "id": source_id(source, "CarePlan", f"budget:{la_person}"),
        "meta": {"profile": [BUDGET_PROFILE]},
        "extension": [
            {"url": f"{SD}/budget-type", "valueCodeableConcept": concept(codes.BUDGET_TYPE, "personal-budget", "Personal budget")},
            *allocations,
            {"url": f"{SD}/agreed-amount", "valueMoney": _money(total)},
        ],
        "status": "active" if any(not s["Event_End_Date"] for s in services) else "completed",
        "intent": "plan",
        "category": [concept(codes.PLAN_CATEGORY, "budget-statement", "Budget statement")],
        "title": "Budget statement",
        "subject": subject,
        "partOf": [{"reference": f"CarePlan/{plan['id']}"}],
        "period": {"start": year[0].isoformat(), "end": year[1].isoformat()},
        "author": council(la_code),
    }
