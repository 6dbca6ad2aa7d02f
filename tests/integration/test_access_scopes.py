"""SMART v2 scopes on every FHIR interaction: each needs its letter (403 OperationOutcome
`forbidden` otherwise), transactions are refused whole and batch entries one by one, and the
guide's conformance resources are readable with any valid token."""
from __future__ import annotations

import uuid

import pytest

from hub.fhir.jsontext import dumps
from hub.search.access import CONFORMANCE_TYPES
from tests.integration.access_cases import JSON, ids_in, make_person


def forbidden(response) -> bool:
    return response.status_code == 403 and response.json()["issue"][0]["code"] == "forbidden"


@pytest.fixture()
def person(fhir):
    return make_person(fhir)


def nhs(fhir_as, *scopes):
    return fhir_as(partner_class="nhs", organisation="RX1", scopes=list(scopes))


def test_each_interaction_needs_its_letter(fhir_as, person):
    goal_id = person.ids["goal"].split("/")[1]
    body = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "x"},
            "subject": {"reference": f"Patient/{person.patient}"}}
    read_only = nhs(fhir_as, "system/Goal.r")
    assert read_only.get(f"/{person.ids['goal']}").status_code == 200
    assert read_only.get(f"/{person.ids['goal']}/_history/1").status_code == 200
    assert read_only.get(f"/{person.ids['goal']}/_history").status_code == 200
    assert forbidden(read_only.get("/Goal", params={"patient": person.patient}))
    assert forbidden(read_only.get("/Goal/_history"))
    assert forbidden(read_only.post("/Goal", content=dumps(body), headers=JSON))
    assert forbidden(read_only.put(f"/{person.ids['goal']}", content=dumps({**body, "id": goal_id}), headers=JSON))
    assert forbidden(read_only.delete(f"/{person.ids['goal']}"))
    assert forbidden(read_only.get(f"/{person.ids['condition']}"))  # another type

    search_only = nhs(fhir_as, "system/Goal.s")
    assert forbidden(search_only.get(f"/{person.ids['goal']}"))
    assert search_only.get("/Goal", params={"patient": person.patient}).json()["total"] == 1
    assert search_only.post("/Goal/_search", data={"patient": person.patient}).status_code == 200

    writer = nhs(fhir_as, "system/Goal.cu")
    assert writer.post("/Goal", content=dumps(body), headers=JSON).status_code == 201
    assert writer.put(f"/{person.ids['goal']}", content=dumps({**body, "id": goal_id}), headers=JSON).status_code == 200
    # Conditional create and update are searches too.
    cond = {"If-None-Exist": f"patient={person.patient}", **JSON}
    assert forbidden(writer.post("/Goal", content=dumps(body), headers=cond))
    assert forbidden(writer.put("/Goal", params={"patient": person.patient}, content=dumps(body), headers=JSON))
    assert forbidden(writer.delete(f"/{person.ids['goal']}"))
    assert nhs(fhir_as, "system/Goal.d").delete(f"/{person.ids['goal']}").status_code == 204


def test_update_as_create_needs_create_too(fhir, fhir_as, person):
    new_id = f"uac-{uuid.uuid4().hex[:8]}"
    body = {"resourceType": "Goal", "id": new_id, "lifecycleStatus": "active", "description": {"text": "x"},
            "subject": {"reference": f"Patient/{person.patient}"}}
    assert forbidden(nhs(fhir_as, "system/Goal.u").put(f"/Goal/{new_id}", content=dumps(body), headers=JSON))
    assert fhir.get(f"/Goal/{new_id}").status_code == 404  # nothing kept
    assert nhs(fhir_as, "system/Goal.cu").put(f"/Goal/{new_id}", content=dumps(body), headers=JSON).status_code == 201


def test_validate_needs_create_or_update_and_everything_needs_patient_read(fhir_as, person):
    goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "x"},
            "subject": {"reference": f"Patient/{person.patient}"}}
    assert forbidden(nhs(fhir_as, "system/Goal.rs").post("/Goal/$validate", content=dumps(goal), headers=JSON))
    assert nhs(fhir_as, "system/Goal.u").post("/Goal/$validate", content=dumps(goal), headers=JSON).status_code == 200
    assert forbidden(nhs(fhir_as, "system/Goal.rs").get(f"/Patient/{person.patient}/$everything"))
    some = nhs(fhir_as, "system/Patient.r", "system/Goal.r")
    record = some.get(f"/Patient/{person.patient}/$everything", params={"_count": 100}).json()
    assert ids_in(record) == {person.ids["patient"], person.ids["goal"]}
    assert record["total"] == 2


def test_system_history_covers_only_searchable_types(fhir_as, person):
    goals = nhs(fhir_as, "system/Goal.s")
    history = goals.get("/_history", params={"_count": 200}).json()
    types = {e["fullUrl"].split("/fhir/")[1].split("/")[0] for e in history.get("entry", [])}
    assert "Goal" in types and types - CONFORMANCE_TYPES == {"Goal"}  # the guide: any valid token


def test_conformance_resources_need_only_a_valid_token(fhir_as, guide_served):
    anyone = fhir_as(partner_class="charity", scopes=["system/Goal.r"])
    assert anyone.get("/StructureDefinition/ipc-care-plan").status_code == 200
    assert anyone.get("/CodeSystem", params={"url": "https://ipc-hub.example.org/fhir/CodeSystem/ipc-record-part"}).json()["total"] == 1
    assert forbidden(anyone.get("/Organization"))


def _entry(method: str, url: str, resource: dict | None = None) -> dict:
    entry: dict = {"request": {"method": method, "url": url}}
    if resource is not None:
        entry["resource"] = resource
        entry["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
    return entry


def test_a_transaction_with_a_forbidden_entry_is_refused_whole(fhir, fhir_as, person):
    subject = {"reference": f"Patient/{person.patient}"}
    goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": f"tx-{person.patient}"},
            "subject": subject}
    condition = {"resourceType": "Condition", "subject": subject, "code": {"text": "tx"}}
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [_entry("POST", "Goal", goal), _entry("POST", "Condition", condition)]}
    client = nhs(fhir_as, "system/Goal.crus")
    r = client.post("", content=dumps(bundle), headers=JSON)
    assert forbidden(r) and "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    assert fhir.get("/Goal", params={"description": f"tx-{person.patient}"}).status_code in (200, 400)
    found = fhir.get("/Goal", params={"patient": person.patient}).json()
    assert all(e["resource"]["description"]["text"] != f"tx-{person.patient}" for e in found.get("entry", []))


def test_batch_entries_answer_403_one_by_one(fhir_as, person):
    subject = {"reference": f"Patient/{person.patient}"}
    goal = {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "b"}, "subject": subject}
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        _entry("POST", "Goal", goal),
        _entry("POST", "Condition", {"resourceType": "Condition", "subject": subject, "code": {"text": "b"}}),
        _entry("GET", person.ids["goal"]),
        _entry("GET", person.ids["condition"]),
        _entry("GET", f"Condition?patient={person.patient}"),
        _entry("DELETE", person.ids["goal"]),
    ]}
    r = nhs(fhir_as, "system/Goal.crs").post("", content=dumps(bundle), headers=JSON)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"].split()[0] for e in r.json()["entry"]]
    assert statuses == ["201", "403", "200", "403", "403", "403"]


def test_batch_reads_follow_consent(fhir_as, person):
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        _entry("GET", person.ids["goal"]), _entry("GET", f"Goal?patient={person.patient}")]}
    r = fhir_as(partner_class="charity", scopes=["system/*.rs"]).post("", content=dumps(bundle), headers=JSON)
    replies = r.json()["entry"]
    assert replies[0]["response"]["status"].startswith("404")
    assert replies[1]["resource"]["total"] == 0
