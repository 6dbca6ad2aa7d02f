"""Builders for realistic test resources. NHS numbers come only from the test range
999 000 0000 – 999 999 9999 and pass the Modulus 11 check."""
from __future__ import annotations

import itertools
import secrets
import uuid
from typing import Any

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
# Started at a random place well above the low serials tests write by hand (999 000 001 8 and
# the like), so a made-up number never collides with one of those, nor with another process's.
_serial = itertools.count(200_000 + secrets.randbelow(700_000))


def nhs_check_digit(first_nine: str) -> int | None:
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def test_nhs_number() -> str:
    """A fresh, valid NHS number in the test range."""
    while True:
        n = next(_serial)
        first_nine = f"999{n % 1_000_000:06d}"
        check = nhs_check_digit(first_nine)
        if check is not None:
            return f"{first_nine}{check}"


test_nhs_number.__test__ = False  # a factory, not a pytest test


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


_births = itertools.count(1)


def _birth_date() -> str:
    """A different birth date per person made: people alike in every detail are probable
    duplicates, and the hub raises a review Task for each pair it is given (hub.identity)."""
    n = next(_births)
    return f"19{40 + n % 60:02d}-{1 + n // 60 % 12:02d}-{1 + n // 720 % 28:02d}"


def patient(family: str = "Smith", given: str = "Alex", **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Patient",
        "identifier": [{"system": NHS_SYSTEM, "value": test_nhs_number()}],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": "male",
        "birthDate": _birth_date(),
        "address": [{"line": ["1 Station Road"], "city": "Nottingham", "postalCode": "NG1 1AA"}],
    }
    resource.update(extra)
    return resource


def care_plan(patient_ref: str, status: str = "active", **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "CarePlan",
        "status": status,
        "intent": "plan",
        "title": "Personalised care and support plan",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000",
                                  "display": "Care plan"}]}],
        "subject": {"reference": patient_ref},
        "period": {"start": "2026-01-01", "end": "2026-12-31"},
        "description": "What matters to me: getting back to work and living independently.",
    }
    resource.update(extra)
    return resource


def goal(patient_ref: str, text: str = "Return to part-time work", **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": text},
        "subject": {"reference": patient_ref},
    }
    resource.update(extra)
    return resource


def carer(patient_ref: str, **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "RelatedPerson",
        "patient": {"reference": patient_ref},
        "relationship": [{"coding": [{
            "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-AdditionalPersonRelationshipRole",
            "code": "Carer", "display": "Carer"}]}],
        "name": [{"family": "Smith", "given": ["Jo"]}],
    }
    resource.update(extra)
    return resource


# --- care and support plans (issue 13) -----------------------------------------------------------

_IPC = "https://ipc-hub.example.org/fhir/"


def plan_agreement(role: str, who: str, when: str, *, withdrawn: str | None = None,
                   method: str = "written") -> dict[str, Any]:
    """One plan-agreement extension: `who` agreed as `role` on `when` (withdrawn on `withdrawn`)."""
    parts: list[dict[str, Any]] = [
        {"url": "agreedBy", "valueReference": {"reference": who}},
        {"url": "role", "valueCodeableConcept": {"coding": [{"system": _IPC + "CodeSystem/ipc-agreement-role",
                                                             "code": role}]}},
        {"url": "date", "valueDateTime": when},
        {"url": "method", "valueCodeableConcept": {"coding": [{"system": _IPC + "CodeSystem/ipc-agreement-method",
                                                               "code": method}]}}]
    if withdrawn:
        parts += [{"url": "withdrawn", "valueDateTime": withdrawn},
                  {"url": "withdrawalReason", "valueString": "Wants to talk it over with his family first"}]
    return {"url": _IPC + "StructureDefinition/plan-agreement", "extension": parts}


def ipc_plan(person: str, *, stage: str = "record-and-agree", status: str = "draft",
             agreements: tuple[dict[str, Any], ...] = (), start: str = "2026-02-05",
             next_review: str | None = None, **extra: Any) -> dict[str, Any]:
    """The guide's veteran plan made `person`'s: an IPC for Veterans plan with a coordinator and
    three goals, at `stage`, with only `agreements` and no review date unless given."""
    import copy
    import json
    from pathlib import Path

    plan = json.loads((Path(__file__).resolve().parents[1] / "profiles/examples/CarePlan-veteran-plan.json").read_text())
    plan = copy.deepcopy(plan)
    plan.pop("id")
    plan["subject"] = {"reference": person}
    plan["status"] = status
    plan["period"] = {"start": start}
    kept = [e for e in plan["extension"] if e["url"].rsplit("/", 1)[-1] not in (
        "plan-agreement", "next-review-date", "review-interval", "ipc-stage")]
    plan["extension"] = [{"url": _IPC + "StructureDefinition/ipc-stage", "valueCodeableConcept": {
        "coding": [{"system": _IPC + "CodeSystem/ipc-stage", "code": stage}]}}, *kept, *agreements]
    if next_review:
        plan["extension"].append({"url": _IPC + "StructureDefinition/next-review-date", "valueDate": next_review})
    plan.update(extra)
    return plan


def budget_statement(person: str, plan_id: str, shares: dict[str, str]) -> dict[str, Any]:
    """A budget statement for `plan_id` with one allocation per funding source: amount as text."""
    from decimal import Decimal

    from hub.fhir.jsontext import FhirDecimal

    allocations = [{"url": _IPC + "StructureDefinition/budget-allocation", "extension": [
        {"url": "fundingSource", "valueCodeableConcept": {"coding": [{"system": _IPC + "CodeSystem/ipc-funding-source",
                                                                      "code": source}]}},
        {"url": "managementOption", "valueCodeableConcept": {"coding": [{"system": _IPC + "CodeSystem/ipc-management-option",
                                                                         "code": "notional"}]}},
        {"url": "amount", "valueMoney": {"value": FhirDecimal(amount), "currency": "GBP"}}]}
        for source, amount in shares.items()]
    total = sum((Decimal(a) for a in shares.values()), Decimal(0))
    # The budget type follows from the funding mix (the guide's ipc-bud-3), the agreed amount
    # from the allocations (ipc-bud-1).
    statutory = set(shares) & {"nhs", "local-authority", "education"}
    kind = ("integrated-personal-budget" if len(statutory) > 1
            else "personal-health-budget" if set(shares) == {"nhs"} else "personal-budget")
    return {"resourceType": "CarePlan", "meta": {"profile": [_IPC + "StructureDefinition/ipc-budget-statement"]},
            "extension": [
                {"url": _IPC + "StructureDefinition/budget-type", "valueCodeableConcept": {"coding": [
                    {"system": _IPC + "CodeSystem/ipc-budget-type", "code": kind}]}},
                {"url": _IPC + "StructureDefinition/indicative-amount",
                 "valueMoney": {"value": FhirDecimal(f"{total:.2f}"), "currency": "GBP"}},
                {"url": _IPC + "StructureDefinition/agreed-amount",
                 "valueMoney": {"value": FhirDecimal(f"{total:.2f}"), "currency": "GBP"}},
                *allocations],
            "status": "active", "intent": "plan",
            "category": [{"coding": [{"system": _IPC + "CodeSystem/ipc-plan-category", "code": "budget-statement"}]}],
            "title": "Budget statement", "subject": {"reference": person},
            "partOf": [{"reference": f"CarePlan/{plan_id}"}], "period": {"start": "2026-02-05"}}
