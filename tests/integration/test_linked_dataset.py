"""Group/[id]/$linked-dataset: the commissioners' de-identified, linked extract of a cohort, read
through the real API from a cohort the hub found itself ($evaluate-cohort)."""
from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.conftest import bearer
from tests.pipeline.cohort_cases import LONG_TERM, condition, multiple_conditions
from tests.factories import patient

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/fhir+json"}
READS = ["system/Group.rs", "system/Patient.rs", "system/CarePlan.rs", "system/Goal.rs", "system/Task.rs"]
IPC = "https://ipc-hub.example.org/fhir/"


EXAMPLES = Path(__file__).resolve().parents[2] / "profiles" / "examples"


def _plan(subject: str, coordinator: str) -> dict:
    """The adult example plan (profile ipc-care-plan), made this person's."""
    plan = json.loads((EXAMPLES / "CarePlan-adult-plan.json").read_text())
    for key in ("id", "careTeam", "goal", "activity"):
        plan.pop(key, None)
    keep = []
    for extension in plan["extension"]:
        if extension["url"].endswith("care-coordinator"):
            extension["valueReference"] = {"reference": coordinator}
        if extension["url"].endswith("plan-agreement"):
            if "Organization/" in json.dumps(extension):
                continue
            extension["extension"][0]["valueReference"] = {"reference": subject}
        keep.append(extension)
    plan["extension"] = keep
    plan["subject"] = {"reference": subject}
    plan["period"] = {"start": "2026-03-14", "end": "2027-03-13"}
    return plan


def _budget(subject: str, plan: str) -> dict:
    """The adult example budget statement (a personal health budget of £52,000), made this person's."""
    budget = json.loads((EXAMPLES / "CarePlan-adult-budget.json").read_text())
    for key in ("id", "goal"):
        budget.pop(key, None)
    for extension in budget["extension"]:
        if extension["url"].endswith("budget-allocation"):
            extension["extension"] = [e for e in extension["extension"] if e["url"] != "goal"]
    budget["subject"] = {"reference": subject}
    budget["partOf"] = [{"reference": plan}]
    return budget


def _spend_line(subject: str, kind: str, amount: str, day: str) -> dict:
    """The example spend line, made this person's, of this kind, amount and day."""
    line = json.loads((EXAMPLES / "ChargeItem-veteran-pa-wages.json").read_text())
    for key in ("id", "account", "supportingInformation"):
        line.pop(key, None)
    line["identifier"][0]["value"] = f"LINKED-{uuid.uuid4().hex[:12]}"
    for extension in line["extension"]:
        if extension["url"].endswith("spend-kind"):
            extension["valueCodeableConcept"]["coding"][0].update(code=kind, display=kind.title())
    line["subject"] = {"reference": subject}
    line["occurrenceDateTime"] = day
    line["priceOverride"] = {"value": float(amount), "currency": "GBP"}
    return line


@pytest.fixture()
def cohort(clean_db, fhir):
    """24 people who meet the definition (23 women, one man), 12 with a plan, one with a
    personal health budget; the cohort found by the hub. Returns (definition id, their Patients)."""
    tag = uuid.uuid4().hex[:8]
    people = [patient(family=f"Linked{tag}{n}", given="Test", gender="male" if n == 0 else "female",
                      birthDate=f"19{50 + n}-0{1 + n % 9}-1{n % 10}") for n in range(24)]
    coordinator = f"urn:uuid:{uuid.uuid4()}"
    entries = [{"fullUrl": coordinator, "resource": {"resourceType": "Practitioner", "name": [{"family": "Coordinator"}]},
                "request": {"method": "POST", "url": "Practitioner"}}]
    for n, person in enumerate(people):
        url = f"urn:uuid:{uuid.uuid4()}"
        entries.append({"fullUrl": url, "resource": person, "request": {"method": "POST", "url": "Patient"}})
        for code in LONG_TERM[:2]:
            entries.append({"resource": condition(url, code, "active"), "request": {"method": "POST", "url": "Condition"}})
        if n % 2 == 0:
            plan_url = f"urn:uuid:{uuid.uuid4()}"
            entries.append({"fullUrl": plan_url, "resource": _plan(url, coordinator),
                            "request": {"method": "POST", "url": "CarePlan"}})
            if n == 2:
                entries.append({"resource": _budget(url, plan_url), "request": {"method": "POST", "url": "CarePlan"}})
                # Spend comes from spend lines, never from the statement: 8,740.50 paid, 100 back.
                entries += [{"resource": _spend_line(url, kind, amount, day), "request": {"method": "POST", "url": "ChargeItem"}}
                            for kind, amount, day in (("spend", "8740.50", "2026-04-02"), ("refund", "100.00", "2026-04-09"))]
    reply = fhir.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=JSON)
    assert reply.status_code == 200, reply.text[:400]
    ids = [e["response"]["location"].split("/")[1] for e in reply.json()["entry"]
           if e["response"]["location"].startswith("Patient/")]
    for person, pid in zip(people, ids, strict=True):
        person["id"] = pid
    gid = f"def-linked-{tag}"
    assert fhir.put(f"/Group/{gid}", json=multiple_conditions(gid), headers=JSON).status_code == 201
    found = fhir.post(f"/Group/{gid}/$evaluate-cohort", json={"resourceType": "Parameters"}, headers=JSON)
    assert found.status_code == 200, found.text
    return f"cohort-{gid}", people


def _ask(client: httpx.Client, cohort_id: str, purpose: str = "Planning IPC capacity for 2027") -> httpx.Response:
    return client.post(f"/Group/{cohort_id}/$linked-dataset", params={"purpose": purpose},
                       json={"resourceType": "Parameters"}, headers=JSON)


def _parts(reply: httpx.Response) -> dict:
    assert reply.status_code == 200, reply.text[:400]
    return {p["name"]: p for p in reply.json()["parameter"]}


def _rows(parts: dict) -> tuple[str, list[dict[str, str]]]:
    text = base64.b64decode(parts["dataset"]["valueAttachment"]["data"]).decode()
    return text, list(csv.DictReader(io.StringIO(text)))


def test_the_dataset_is_de_identified_and_pseudonyms_differ_per_recipient(cohort, fhir_as):
    cohort_id, people = cohort
    first = fhir_as(partner_class="nhs", scopes=READS, purpose_of_use="HOPERAT", client_id=f"icb-a-{uuid.uuid4().hex[:6]}")
    second = fhir_as(partner_class="nhs", scopes=READS, purpose_of_use="HOPERAT", client_id=f"icb-b-{uuid.uuid4().hex[:6]}")
    text, rows = _rows(_parts(_ask(first, cohort_id)))
    assert len(rows) == len(people)
    # Nothing that identifies: no NHS number, name, address, exact date of birth, nor any exact date.
    for person in people:
        assert person["identifier"][0]["value"] not in text
        assert person["name"][0]["family"] not in text
        assert person["birthDate"] not in text
        assert person["id"] not in text
    assert "NG1 1AA" not in text and "Station Road" not in text
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text)
    assert all(re.fullmatch(r"\d{4}-\d{2}", r["entered_month"]) for r in rows)
    assert {r["plan_start_month"] for r in rows if r["has_plan"] == "yes"} == {"2026-03"}
    assert sum(1 for r in rows if r["has_plan"] == "yes") == 12
    assert all(r["offer_status"] == "requested" for r in rows)
    # Small numbers: the one man and the one budget type are suppressed; the common values stay.
    assert {r["sex"] for r in rows} == {"female", "*"} and sum(1 for r in rows if r["sex"] == "*") == 1
    assert [r["budget_type"] for r in rows if r["budget_type"]] == ["*"]
    assert [r["budget_gbp"] for r in rows if r["budget_gbp"]] == ["52000"]
    assert [r["spent_gbp"] for r in rows if r["spent_gbp"]] == ["8600"]  # 8,640.50 to the nearest £100
    # The same recipient again: the same pseudonyms (it can follow people); another: none shared.
    _, again = _rows(_parts(_ask(first, cohort_id)))
    _, other = _rows(_parts(_ask(second, cohort_id)))
    mine = {r["pseudonym"] for r in rows}
    assert mine == {r["pseudonym"] for r in again} and len(mine) == len(people)
    assert not mine & {r["pseudonym"] for r in other}


def test_dictionary_and_summary_come_with_it(cohort, fhir_as):
    cohort_id, people = cohort
    client = fhir_as(partner_class="nhs", scopes=READS, purpose_of_use="POPHLTH")
    parts = _parts(_ask(client, cohort_id))
    _, rows = _rows(parts)
    dictionary = list(csv.DictReader(io.StringIO(base64.b64decode(parts["dictionary"]["valueAttachment"]["data"]).decode())))
    assert [d["column"] for d in dictionary] == list(rows[0].keys())
    assert all(d["meaning"] and d["derivation"] for d in dictionary)
    report = parts["summary"]["resource"]
    assert report["resourceType"] == "MeasureReport" and report["subject"]["reference"] == f"Group/{cohort_id}"
    counts = {g["code"]["coding"][0]["code"]: g["population"][0] for g in report["group"]}
    assert counts["identified"]["count"] == 24 and counts["offered"]["count"] == 24
    assert counts["with-plan"]["count"] == 12
    assert "count" not in counts["with-budget"] and "suppressed" in counts["with-budget"]["code"]["text"]
    assert counts["accepted"]["count"] == 0


def test_consent_and_purpose_govern_who_gets_what(cohort, fhir_as, fhir):
    cohort_id, people = cohort
    care = fhir_as(partner_class="nhs", scopes=READS)  # purposeOfUse TREAT: direct care
    assert _ask(care, cohort_id).status_code == 403
    commissioner = fhir_as(partner_class="nhs", scopes=READS, purpose_of_use="HOPERAT")
    assert _ask(commissioner, cohort_id, purpose=" ").status_code == 400
    narrow = fhir_as(partner_class="nhs", scopes=["system/Group.rs", "system/Patient.rs"], purpose_of_use="HOPERAT")
    assert _ask(narrow, cohort_id).status_code == 403
    # A council commissioner: the member Group is health data, which a council does not see.
    council = fhir_as(partner_class="local-authority", scopes=READS, purpose_of_use="HOPERAT")
    assert _ask(council, cohort_id).status_code == 404


def test_each_release_is_recorded_with_who_and_why(cohort, fhir_as, token_for, pg_url):
    cohort_id, people = cohort
    client_id = f"icb-audit-{uuid.uuid4().hex[:6]}"
    client = fhir_as(partner_class="nhs", scopes=READS, purpose_of_use="HOPERAT", client_id=client_id)
    parts = _parts(_ask(client, cohort_id, purpose="Evaluating the IPC pilot"))
    release = parts["release"]["valueIdentifier"]["value"]
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT recipient, purpose, purpose_of_use, cohort, people, suppressed FROM dataset_release "
                           "WHERE id = %s", (release,)).fetchone()
    assert row[:5] == (client_id, "Evaluating the IPC pilot", "HOPERAT", f"Group/{cohort_id}", 24) and row[5] >= 2
    auditor = httpx.Client(base_url=str(client.base_url), headers=bearer(token_for(scopes=["system/AuditEvent.rs"])))
    from tests.pipeline.conftest import wait_for

    def named(person: dict) -> bool:
        events = auditor.get("/AuditEvent", params={"patient": f"Patient/{person['id']}", "_count": 50}).json()
        return any("$linked-dataset" in str(e["resource"]) and client_id in str(e["resource"])
                   for e in events.get("entry", []))

    wait_for(lambda: named(people[0]) and named(people[-1]), 30, "the release's AuditEvent naming each person")
    auditor.close()
