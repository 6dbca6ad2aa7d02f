"""A synthetic cohort for costing, written straight into the store with the recorder's batch
writer (hundreds of thousands of resources in minutes, not hours): per person a Patient, an A&E
attendance before their budget, a month of direct payment spend after it, and for every tenth a
council account with no lines (costed from its allocation). Shared by the cohort test and
`make bench` (section `money`)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection

from hub.store import batch as store_batch

B = "https://ipc-hub.example.org/fhir"
SD, CS = f"{B}/StructureDefinition", f"{B}/CodeSystem"
ATTENDANCE_DAY, SPEND_DAY = "2025-06-10", "2026-05-15"
SPEND = Decimal("400.00")
COUNCIL_ALLOCATION = Decimal("3650.00")  # a year from 2026-04-01: £10 a day


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": f"{CS}/{system}", "code": code}]}


def person(n: int) -> list[dict[str, Any]]:
    pid = f"cohort-{n}"
    subject = {"reference": f"Patient/{pid}"}
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": pid, "name": [{"family": f"Cohort{n}"}]},
        {"resourceType": "Encounter", "id": f"{pid}-ae", "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
         "subject": subject, "period": {"start": ATTENDANCE_DAY}},
        {"resourceType": "ChargeItem", "id": f"{pid}-pa", "status": "billed",
         "extension": [{"url": f"{SD}/spend-kind", "valueCodeableConcept": _coded("ipc-spend-kind", "spend")},
                       {"url": f"{SD}/funding-source", "valueCodeableConcept": _coded("ipc-funding-source", "nhs")},
                       {"url": f"{SD}/management-option",
                        "valueCodeableConcept": _coded("ipc-management-option", "direct-payment")}],
         "code": _coded("ipc-spend-category", "personal-assistant"), "subject": subject,
         "occurrenceDateTime": SPEND_DAY, "priceOverride": {"value": SPEND, "currency": "GBP"}},
    ]
    if n % 10 == 0:
        out.append({"resourceType": "Account", "id": f"{pid}-council", "status": "active",
                    "extension": [{"url": f"{SD}/funding-source",
                                   "valueCodeableConcept": _coded("ipc-funding-source", "local-authority")},
                                  {"url": f"{SD}/allocated-amount",
                                   "valueMoney": {"value": COUNCIL_ALLOCATION, "currency": "GBP"}}],
                    "type": _coded("ipc-management-option", "notional"), "subject": [subject],
                    "servicePeriod": {"start": "2026-04-01", "end": "2027-03-31"}})
    return out


async def write_cohort(conn: AsyncConnection, count: int, chunk: int = 2000) -> list[str]:
    """Write `count` people (ids `cohort-0` …) and return their Patient ids."""
    for start in range(0, count, chunk):
        staged = [s for n in range(start, min(count, start + chunk)) for r in person(n)
                  if (s := store_batch.stage(r["resourceType"], r["id"], r, None)) is not None]
        async with conn.transaction():
            await store_batch.write_staged(conn, staged, set())
    return [f"cohort-{n}" for n in range(count)]
