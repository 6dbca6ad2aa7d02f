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
READS = ["system/Group.rs", "system/Patient.rs", "system/CarePlan.rs", "system/Goal.rs", "system/Task.rs",
         "system/Encounter.rs", "system/Observation.rs", "system/ChargeItem.rs"]
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
    # Without Observation (outcomes) or Encounter (review meetings) the dataset would be narrower
    # than it says: refused, never passed off as whole.
    for missing in ("system/Observation.rs", "system/Encounter.rs"):
        short = fhir_as(partner_class="nhs", scopes=[s for s in READS if s != missing], purpose_of_use="HOPERAT")
        assert _ask(short, cohort_id).status_code == 403
    # Without ChargeItem the spend column is empty (unknown), not nil.
    no_spend = fhir_as(partner_class="nhs", scopes=[s for s in READS if s != "system/ChargeItem.rs"],
                       purpose_of_use="HOPERAT")
    _, rows = _rows(_parts(_ask(no_spend, cohort_id)))
    assert [r["budget_gbp"] for r in rows if r["budget_gbp"]] == ["52000"] and not any(r["spent_gbp"] for r in rows)
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


def _review_task(subject: str, plan: str, due: str, status: str, meeting: str | None = None, *, owner: str) -> dict:
    task = json.loads((EXAMPLES / "Task-veteran-review.json").read_text())
    task.pop("id")
    task.update({"status": status, "basedOn": [{"reference": plan}], "focus": {"reference": plan},
                 "for": {"reference": subject}, "restriction": {"period": {"end": due}}})
    task["owner"] = {"reference": owner}
    if meeting:
        task["output"] = [{"type": {"text": "Review meeting"}, "valueReference": {"reference": meeting}}]
    return task


def _meeting(subject: str, plan: str, day: str) -> dict:
    meeting = json.loads((EXAMPLES / "Encounter-veteran-review.json").read_text())
    meeting.pop("id")
    meeting["extension"] = [{"url": IPC + "StructureDefinition/care-plan", "valueReference": {"reference": plan}}]
    meeting.pop("participant")
    meeting.update({"subject": {"reference": subject}, "period": {"start": f"{day}T10:00:00+01:00",
                                                                 "end": f"{day}T11:30:00+01:00"}})
    return meeting


def _score(subject: str, code: str, value: int, when: str, source: str, goal: str | None = None) -> dict:
    score = json.loads((EXAMPLES / "Observation-veteran-gas.json").read_text())
    for key in ("id", "basedOn", "performer", "focus"):
        score.pop(key, None)
    score.update({"subject": {"reference": subject}, "effectiveDateTime": when, "derivedFrom": [{"reference": source}],
                  "valueQuantity": {**score["valueQuantity"], "value": value}})
    score["code"]["coding"][0].update(code=code, display=code)
    if goal:
        score["focus"] = [{"reference": goal}]
    return score


@pytest.fixture()
def reviewed(cohort, fhir):
    """The cohort, with its twelve plans' reviews and outcome measures: person 0 had a review on
    time and a late one, person 2 has one due and not held; each of the twelve answered ONS4 twice
    (5 then 7, person 0 8 then 6), and person 0 scored a goal -1 then +1."""
    cohort_id, people = cohort
    entries = []
    for n, person in enumerate(people[::2]):
        subject = f"Patient/{person['id']}"
        found = fhir.get("/CarePlan", params={"subject": subject, "category": f"{IPC}CodeSystem/ipc-plan-category|care-support-plan"}
                         ).json()["entry"][0]["resource"]
        plan = f"CarePlan/{found['id']}"
        owner = next(e["valueReference"]["reference"] for e in found["extension"] if e["url"].endswith("care-coordinator"))
        source = f"urn:uuid:{uuid.uuid4()}"
        response = json.loads((EXAMPLES / "QuestionnaireResponse-veteran-ons4.json").read_text())
        for key in ("id", "extension", "author", "source"):
            response.pop(key, None)
        response.update(subject={"reference": subject}, basedOn=[{"reference": plan}])
        entries.append({"fullUrl": source, "resource": response, "request": {"method": "POST", "url": "QuestionnaireResponse"}})
        first, last = (8, 6) if n == 0 else (5, 7)
        for value, when in ((first, "2026-03-20T10:00:00Z"), (last, "2026-10-20T10:00:00Z")):
            entries.append({"resource": _score(subject, "ons4-life-satisfaction", value, when, source),
                            "request": {"method": "POST", "url": "Observation"}})
        if n == 0:
            on_time, late, goal = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
            entries += [
                {"fullUrl": on_time, "resource": _meeting(subject, plan, "2026-05-20"), "request": {"method": "POST", "url": "Encounter"}},
                {"fullUrl": late, "resource": _meeting(subject, plan, "2026-07-10"), "request": {"method": "POST", "url": "Encounter"}},
                {"resource": _review_task(subject, plan, "2026-05-26", "completed", on_time, owner=owner), "request": {"method": "POST", "url": "Task"}},
                {"resource": _review_task(subject, plan, "2026-06-30", "completed", late, owner=owner), "request": {"method": "POST", "url": "Task"}},
                {"fullUrl": goal, "resource": {"resourceType": "Goal", "lifecycleStatus": "active",
                                               "description": {"text": "Walk to the shops"}, "subject": {"reference": subject}},
                 "request": {"method": "POST", "url": "Goal"}}]
            entries += [{"resource": _score(subject, "gas-attainment", value, when, source, goal),
                         "request": {"method": "POST", "url": "Observation"}}
                        for value, when in ((-1, "2026-03-20T10:00:00Z"), (1, "2026-10-20T10:00:00Z"))]
        if n == 1:
            entries.append({"resource": _review_task(subject, plan, "2026-09-01", "requested", owner=owner),
                            "request": {"method": "POST", "url": "Task"}})
    reply = fhir.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=JSON)
    assert reply.status_code == 200, reply.text[:600]
    return cohort_id, people


def test_reviews_on_time_and_outcome_measures_are_in_the_rows_and_the_summary(reviewed, fhir_as):
    cohort_id, people = reviewed
    client = fhir_as(partner_class="nhs", scopes=READS, purpose_of_use="HOPERAT")
    parts = _parts(_ask(client, cohort_id))
    _, rows = _rows(parts)
    planned = [r for r in rows if r["has_plan"] == "yes"]
    assert sorted((r["reviews_due"], r["reviews_on_time"]) for r in planned) == [("0", "0")] * 10 + [("1", "0"), ("2", "1")]
    # The example plan's next review (26 May 2026) has passed for each of them: overdue.
    assert {(r["next_review_month"], r["review_overdue"]) for r in planned} == {("2026-05", "yes")}
    assert sorted((r["wellbeing_first"], r["wellbeing_latest"], r["wellbeing_change"]) for r in planned) == \
        [("5", "7", "2")] * 11 + [("8", "6", "-2")]
    assert sorted(r["goal_attainment"] for r in planned) == [""] * 11 + ["1.0"]
    assert sorted(r["outcome_measures"] for r in planned) == ["2"] * 11 + ["4"]
    assert all(not r["wellbeing_first"] and r["reviews_due"] == "0" for r in rows if r["has_plan"] == "no")
    groups = {g["code"]["coding"][0]["code"]: g for g in parts["summary"]["resource"]["group"]}
    assert groups["review-overdue"]["population"][0]["count"] == 12
    assert groups["review-in-date"]["population"][0]["count"] == 0
    assert groups["reviews-on-time"]["measureScore"]["value"] == round(100 / 3, 1)   # 1 of 3 reviews due
    assert groups["wellbeing-measured"]["population"][0]["count"] == 12
    assert groups["wellbeing-improved"]["population"][0]["count"] == 11
    assert groups["wellbeing-change"]["measureScore"]["value"] == round((22 - 2) / 12, 1)
    assert "measureScore" not in groups["goal-attainment"]   # one person: withheld
    assert "suppressed" in groups["goal-attainment"]["population"][0]["code"]["text"]


def test_the_cohort_report_is_the_summary_alone_under_the_readers_access(reviewed, fhir_as, pg_url):
    cohort_id, people = reviewed
    with psycopg.connect(pg_url) as conn:
        releases = conn.execute("SELECT count(*) FROM dataset_release").fetchone()[0]
    # A direct-care token may read the figures (no row leaves); GET and POST alike.
    care = fhir_as(partner_class="nhs", scopes=READS)
    report = care.get(f"/Group/{cohort_id}/$cohort-report")
    assert report.status_code == 200, report.text[:400]
    assert care.post(f"/Group/{cohort_id}/$cohort-report", json={"resourceType": "Parameters"},
                     headers=JSON).json()["group"] == report.json()["group"]
    body = report.json()
    assert body["resourceType"] == "MeasureReport" and body["type"] == "summary"
    groups = {g["code"]["coding"][0]["code"]: g["population"][0].get("count") for g in body["group"]}
    assert (groups["identified"], groups["offered"], groups["with-plan"], groups["with-budget"]) == (24, 24, 12, None)
    # Nothing about any one person: no patient id, no name.
    text = report.text
    assert not any(p["id"] in text or p["name"][0]["family"] in text for p in people)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM dataset_release").fetchone()[0] == releases  # no release
    # The same figures as the linked dataset's summary for the same reader's access.
    commissioner = fhir_as(partner_class="nhs", scopes=READS, purpose_of_use="HOPERAT")
    assert _parts(_ask(commissioner, cohort_id))["summary"]["resource"]["group"] == body["group"]
    # A council may not see the cohort (health data): 404; too few scopes: 403.
    council = fhir_as(partner_class="local-authority", scopes=READS)
    assert council.get(f"/Group/{cohort_id}/$cohort-report").status_code == 404
    narrow = fhir_as(partner_class="nhs", scopes=["system/Group.rs", "system/Patient.rs"])
    assert narrow.get(f"/Group/{cohort_id}/$cohort-report").status_code == 403
