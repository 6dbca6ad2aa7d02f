"""The IPC guide over the real API: examples stored and read back, the three cases as
transactions forming one record each, mutated examples refused (422) and reported by $validate,
and the guide served and listed in the CapabilityStatement."""
from __future__ import annotations

import pytest

from hub.fhir.jsontext import dumps

from tests.validation_cases import MUTATIONS, example, example_paths, expected, mutated

JSON = {"Content-Type": "application/fhir+json"}
SINGLE = [p.stem for p in example_paths() if not p.stem.startswith("Bundle-")]
CASES = [p.stem for p in example_paths() if p.stem.startswith("Bundle-")]


@pytest.mark.parametrize("name", SINGLE)
def test_example_is_stored_and_read_back(recorder, hold_referenced, name):
    fhir = recorder  # a coordinator: the examples include people's consents (hub/consent/authority.py)
    resource = example(name)
    hold_referenced([resource])  # the examples it refers to
    r = fhir.put(f"/{resource['resourceType']}/{resource['id']}", content=dumps(resource), headers=JSON)
    assert r.status_code in (200, 201), r.text
    got = fhir.get(f"/{resource['resourceType']}/{resource['id']}").json()
    # An example of an unprofiled definition (the resource allocation system's questionnaire and an
    # assessment answering it) claims no profile, and none is added.
    assert got["meta"].get("profile") == (resource.get("meta") or {}).get("profile")


@pytest.mark.parametrize("name", CASES)
def test_case_posts_as_one_record(clean_db, recorder, hold_referenced, name):
    fhir = recorder  # a coordinator: each case records the person's consent
    bundle = example(name)
    # A clean record: the single examples above hold the same people (one person, one record).
    hold_referenced([e["resource"] for e in bundle["entry"]])  # what the case refers to outside itself
    r = fhir.post("", content=dumps(bundle), headers=JSON)
    assert r.status_code == 200, r.text
    locations = [e["response"]["location"] for e in r.json()["entry"]]
    assert len(locations) == len(bundle["entry"])
    patient_id = locations[0].split("/")[1]
    record = fhir.get(f"/Patient/{patient_id}/$everything", params={"_count": 100}).json()
    kinds = {e["resource"]["resourceType"] for e in record["entry"]}
    assert {"Patient", "CarePlan", "Goal", "CareTeam", "Consent", "Flag"} <= kinds
    plans = [e["resource"] for e in record["entry"] if e["resource"]["resourceType"] == "CarePlan"]
    budget = next(p for p in plans if p["category"][0]["coding"][0]["code"] == "budget-statement")
    assert budget["partOf"][0]["reference"].startswith("CarePlan/")


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_example_is_refused_and_reported(fhir, name):
    rule, location = expected(name)
    resource = mutated(name)
    r = fhir.post(f"/{resource['resourceType']}", content=dumps(resource), headers=JSON)
    assert r.status_code == 422, r.text
    assert any(rule in i["diagnostics"] and location in i.get("expression", []) for i in r.json()["issue"])
    v = fhir.post(f"/{resource['resourceType']}/$validate", content=dumps(resource), headers=JSON)
    assert v.status_code == 200
    errors = [i for i in v.json()["issue"] if i["severity"] == "error"]
    assert any(rule in i["diagnostics"] and location in i.get("expression", []) for i in errors)


def test_validate_with_profile_parameter_and_instance(fhir, hold_referenced):
    plan = example("CarePlan-adult-plan")
    hold_referenced([plan])
    assert fhir.put(f"/CarePlan/{plan['id']}", content=dumps(plan), headers=JSON).status_code in (200, 201)
    ok = fhir.get(f"/CarePlan/{plan['id']}/$validate").json()
    # Valid: no error, and the one warning is the specification's best practice (dom-6: the
    # example carries no narrative), as a write would accept it.
    assert [(i["severity"], i["diagnostics"].split(": ", 1)[-1][:11]) for i in ok["issue"]] == [
        ("warning", "rule dom-6 "), ("information", "CarePlan is")]
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": plan},
        {"name": "profile", "valueUri": "https://ipc-hub.example.org/fhir/StructureDefinition/ipc-budget-statement"}]}
    against_budget = fhir.post("/CarePlan/$validate", content=dumps(params), headers=JSON).json()
    assert any(i["severity"] == "error" and "ipc-budget-statement" in i["diagnostics"] for i in against_budget["issue"])


def test_guide_is_served_and_listed(fhir, guide_served):
    found = fhir.get("/StructureDefinition", params={"url": "https://ipc-hub.example.org/fhir/StructureDefinition/ipc-care-plan"}).json()
    assert found["total"] == 1
    assert fhir.get("/CodeSystem/ipc-life-area").json()["concept"][0]["code"] == "accommodation"
    assert fhir.get("/ValueSet/ipc-stage").status_code == 200
    statement = fhir.get("/metadata").json()
    care_plan = next(r for r in statement["rest"][0]["resource"] if r["type"] == "CarePlan")
    assert "https://ipc-hub.example.org/fhir/StructureDefinition/ipc-budget-statement" in care_plan["supportedProfile"]
    assert any(o["name"] == "validate" for o in care_plan["operation"])
    assert statement["implementationGuide"] == ["https://ipc-hub.example.org/fhir/ImplementationGuide/ipc-hub"]
    assert fhir.get("/ImplementationGuide/ipc-hub").json()["url"] == statement["implementationGuide"][0]
