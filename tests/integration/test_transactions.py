"""Transaction Bundles are atomic and resolve urn:uuid references; batches report per entry."""
from __future__ import annotations

import uuid

from tests.factories import NHS_SYSTEM, care_plan, carer, goal, patient, unique

JSON = {"Content-Type": "application/fhir+json"}


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def test_transaction_creates_a_whole_record_with_internal_references(fhir):
    p_url, g_url, plan_url = urn(), urn(), urn()
    person = patient()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            # The plan comes first and references entries that follow: order must not matter.
            {"fullUrl": plan_url, "resource": care_plan(p_url, goal=[{"reference": g_url}]),
             "request": {"method": "POST", "url": "CarePlan"}},
            {"fullUrl": g_url, "resource": goal(p_url), "request": {"method": "POST", "url": "Goal"}},
            {"fullUrl": p_url, "resource": person, "request": {"method": "POST", "url": "Patient"}},
            {"resource": carer(p_url), "request": {"method": "POST", "url": "RelatedPerson"}},
        ],
    }
    r = fhir.post("", json=bundle, headers=JSON)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in reply["entry"]]
    assert statuses == ["201 Created"] * 4
    plan_loc, goal_loc, patient_loc, _ = [e["response"]["location"] for e in reply["entry"]]
    patient_ref = "/".join(patient_loc.split("/")[:2])
    plan = fhir.get("/" + "/".join(plan_loc.split("/")[:2])).json()
    assert plan["subject"]["reference"] == patient_ref
    assert plan["goal"][0]["reference"] == "/".join(goal_loc.split("/")[:2])
    everything = fhir.get(f"/{patient_ref}/$everything").json()
    types = sorted(e["resource"]["resourceType"] for e in everything["entry"])
    # The four resources, and the one Provenance attributing the transaction's creates to its client.
    assert types == ["CarePlan", "Goal", "Patient", "Provenance", "RelatedPerson"]


def test_failed_entry_rolls_back_the_whole_transaction(fhir):
    marker = unique("rollback-")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": urn(), "resource": patient(family=marker),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": goal("Patient/x", startDate="not a date"),
             "request": {"method": "POST", "url": "Goal"}},
        ],
    }
    r = fhir.post("", json=bundle, headers=JSON)
    assert r.status_code == 400
    assert r.json()["issue"][0]["diagnostics"].startswith("Bundle.entry[1]")
    assert fhir.get("/Patient", params={"family": marker}).json()["total"] == 0


def test_stale_if_match_in_transaction_rolls_back(fhir):
    existing = fhir.post("/Patient", json=patient(), headers=JSON).json()
    marker = unique("stale-")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(family=marker), "request": {"method": "POST", "url": "Patient"}},
            {"resource": dict(existing, gender="female"),
             "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"7"'}},
        ],
    }
    r = fhir.post("", json=bundle, headers=JSON)
    assert r.status_code == 412
    assert fhir.get("/Patient", params={"family": marker}).json()["total"] == 0
    assert fhir.get(f"/Patient/{existing['id']}").json()["gender"] == "male"


def test_two_writes_to_one_resource_in_a_transaction_conflict(fhir):
    pid = unique("dup-")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(id=pid), "request": {"method": "PUT", "url": f"Patient/{pid}"}},
            {"resource": patient(id=pid), "request": {"method": "PUT", "url": f"Patient/{pid}"}},
        ],
    }
    r = fhir.post("", json=bundle, headers=JSON)
    assert r.status_code == 409
    assert fhir.get(f"/Patient/{pid}").status_code == 404


def test_conditional_references_and_if_none_exist_make_replays_idempotent(fhir):
    person = patient()
    nhs = person["identifier"][0]["value"]
    condition = f"identifier={NHS_SYSTEM}|{nhs}"

    def bundle() -> dict:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": person, "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}},
            ],
        }

    first = fhir.post("", json=bundle(), headers=JSON).json()
    again = fhir.post("", json=bundle(), headers=JSON).json()
    assert first["entry"][0]["response"]["status"] == "201 Created"
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert again["entry"][0]["response"]["location"] == first["entry"][0]["response"]["location"]
    # A later bundle refers to the person by identifier, not by server id.
    later = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": goal(f"Patient?{condition}"), "request": {"method": "POST", "url": "Goal"}}],
    }
    r = fhir.post("", json=later, headers=JSON)
    assert r.status_code == 200, r.text
    goal_ref = "/".join(r.json()["entry"][0]["response"]["location"].split("/")[:2])
    patient_ref = "/".join(first["entry"][0]["response"]["location"].split("/")[:2])
    assert fhir.get(f"/{goal_ref}").json()["subject"]["reference"] == patient_ref


def test_batch_reports_each_entry_and_keeps_the_good_ones(fhir):
    marker = unique("batch-")
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient(family=marker), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/definitely-missing"}},
            {"resource": patient(family=marker, birthDate="bad"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": f"Patient?family={marker}"}},
        ],
    }
    r = fhir.post("", json=bundle, headers=JSON)
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "404"
    assert entries[1]["response"]["outcome"]["issue"][0]["code"] == "not-found"
    assert entries[2]["response"]["status"] == "400"
    assert entries[3]["resource"]["total"] == 1


def test_bundle_of_wrong_type_is_refused(fhir):
    r = fhir.post("", json={"resourceType": "Bundle", "type": "collection"}, headers=JSON)
    assert r.status_code == 400
    r = fhir.post("", json=patient(), headers=JSON)
    assert r.status_code == 400


def test_bundle_entries_run_through_the_same_interactions_as_rest(fhir):
    """A Bundle entry is an interaction like any other: it answers as REST would (304 for a
    matching If-None-Match, 405 for the audit trail, which only the hub writes, 404 for a path
    no interaction has), each in its own entry of a batch."""
    person = fhir.post("/Patient", json=patient(family=unique("Entry")), headers=JSON).json()
    audit = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
             "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}
    r = fhir.post("", headers=JSON, json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{person['id']}", "ifNoneMatch": '"1"'}},
        {"resource": audit, "request": {"method": "POST", "url": "AuditEvent"}},
        {"request": {"method": "GET", "url": "Patient/x/y/z"}},
        {"request": {"method": "GET", "url": f"Patient/{person['id']}/$everything"}}]})
    statuses = [e["response"]["status"][:3] for e in r.json()["entry"]]
    assert statuses == ["304", "405", "404", "200"]
    assert r.json()["entry"][3]["resource"]["type"] == "searchset"
