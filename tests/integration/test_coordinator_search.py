"""The guide's CarePlan `coordinator` search parameter: served, listed in the
CapabilityStatement, and a coordinator's caseload found by it."""
from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration

COORDINATOR = "https://ipc-hub.example.org/fhir/StructureDefinition/care-coordinator"
DEFINITION = "https://ipc-hub.example.org/fhir/SearchParameter/ipc-care-plan-coordinator"


def test_coordinator_finds_the_plans_naming_a_practitioner(fhir, guide_served):
    mine, other = f"vwm-{uuid.uuid4().hex[:8]}", f"vwm-{uuid.uuid4().hex[:8]}"
    ids = []
    for who in (mine, other):
        assert fhir.put(f"/Practitioner/{who}", json={"resourceType": "Practitioner", "id": who,
                                                     "name": [{"family": "Welfare"}]}).status_code == 201
        patient = fhir.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Caseload"}]}).json()["id"]
        plan = fhir.post("/CarePlan", json={
            "resourceType": "CarePlan", "status": "active", "intent": "plan",
            "extension": [{"url": COORDINATOR, "valueReference": {"reference": f"Practitioner/{who}"}}],
            "subject": {"reference": f"Patient/{patient}"}})
        assert plan.status_code == 201, plan.text
        ids.append(plan.json()["id"])
    found = fhir.get("/CarePlan", params={"coordinator": f"Practitioner/{mine}"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [ids[0]]
    assert fhir.get("/SearchParameter/ipc-care-plan-coordinator").json()["code"] == "coordinator"
    statement = fhir.get("/metadata").json()
    care_plan = next(r for r in statement["rest"][0]["resource"] if r["type"] == "CarePlan")
    assert {"name": "coordinator", "definition": DEFINITION, "type": "reference"} in [
        {k: p.get(k) for k in ("name", "definition", "type")} for p in care_plan["searchParam"]]
