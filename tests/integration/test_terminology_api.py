"""The terminology operations over real HTTP: CodeSystem/$lookup, CodeSystem/$validate-code,
ValueSet/$validate-code and ValueSet/$expand on the R4 core, the IPC guide and a client's own
stored ValueSet; by GET and POST, in JSON and XML; listed in the CapabilityStatement."""
from __future__ import annotations

import httpx

from hub.fhir.jsontext import dumps
from hub.fhir.xml import xml_to_json

JSON = {"Content-Type": "application/fhir+json"}
GENDER_CS = "http://hl7.org/fhir/administrative-gender"
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
IPC = "https://ipc-hub.example.org/fhir"


def _values(parameters: dict) -> dict:
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in parameters["parameter"] if "part" not in p}


def test_lookup_by_get_and_by_post(fhir):
    r = fhir.get("/CodeSystem/$lookup", params={"system": GENDER_CS, "code": "other"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/fhir+json")
    assert _values(r.json())["display"] == "Other"
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": f"{IPC}/CodeSystem/ipc-life-area", "code": "accommodation"}}]}
    r = fhir.post("/CodeSystem/$lookup", content=dumps(body), headers=JSON)
    assert r.status_code == 200 and _values(r.json())["display"]


def test_expand_with_filter_paging_and_xml(fhir):
    url = "http://hl7.org/fhir/ValueSet/resource-types"
    first = fhir.get("/ValueSet/$expand", params={"url": url, "count": "10"}).json()["expansion"]
    second = fhir.get("/ValueSet/$expand", params={"url": url, "count": "10", "offset": "10"}).json()["expansion"]
    assert first["total"] == second["total"] >= 140
    assert len(first["contains"]) == len(second["contains"]) == 10
    assert not {c["code"] for c in first["contains"]} & {c["code"] for c in second["contains"]}
    filtered = fhir.get("/ValueSet/$expand", params={"url": url, "filter": "care"}).json()["expansion"]
    assert {"CarePlan", "CareTeam"} <= {c["code"] for c in filtered["contains"]} and filtered["total"] < 20
    as_xml = fhir.get("/ValueSet/$expand", params={"url": GENDER_VS, "_format": "xml"})
    assert as_xml.headers["Content-Type"].startswith("application/fhir+xml")
    assert {c["code"] for c in xml_to_json(as_xml.content)["expansion"]["contains"]} == \
        {"male", "female", "other", "unknown"}


def test_the_guides_value_sets_and_code_systems_by_instance(fhir, guide_served):
    stages = fhir.get("/ValueSet/ipc-stage/$expand").json()
    assert stages["url"] == f"{IPC}/ValueSet/ipc-stage" and stages["expansion"]["total"] == 6
    r = fhir.get("/ValueSet/ipc-stage/$validate-code", params={"system": f"{IPC}/CodeSystem/ipc-stage",
                                                                "code": "review"})
    assert _values(r.json())["result"] is True
    r = fhir.get("/CodeSystem/ipc-life-area/$validate-code", params={"code": "housing"})
    assert _values(r.json())["result"] is False
    assert fhir.get("/ValueSet/no-such-value-set/$expand").status_code == 404


def test_a_clients_own_value_set_is_expanded_and_checked(fhir):
    value_set = {"resourceType": "ValueSet", "url": "https://example.org/fhir/ValueSet/genders-we-ask",
                 "status": "active", "compose": {"include": [
                     {"system": GENDER_CS, "concept": [{"code": "female"}, {"code": "male"}]}]}}
    created = fhir.post("/ValueSet", content=dumps(value_set), headers=JSON).json()
    expansion = fhir.get(f"/ValueSet/{created['id']}/$expand").json()["expansion"]
    assert [c["code"] for c in expansion["contains"]] == ["female", "male"]
    assert expansion["contains"][0]["display"] == "Female"            # from the core code system
    r = fhir.post(f"/ValueSet/{created['id']}/$validate-code", headers=JSON, content=dumps({
        "resourceType": "Parameters", "parameter": [
            {"name": "coding", "valueCoding": {"system": GENDER_CS, "code": "other"}}]}))
    answer = _values(r.json())
    assert answer["result"] is False and "is not in" in answer["message"]


def test_validate_code_against_core_value_sets_and_code_systems(fhir):
    yes = fhir.get("/ValueSet/$validate-code", params={"url": GENDER_VS, "system": GENDER_CS, "code": "male"})
    assert _values(yes.json()) == {"result": True, "display": "Male"}
    no = fhir.get("/CodeSystem/$validate-code", params={"url": GENDER_CS, "code": "banana"})
    assert _values(no.json())["result"] is False


def test_refusals_are_outcomes(fhir, hub_url):
    r = fhir.get("/ValueSet/$expand", params={"url": "http://example.org/none"})
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    r = fhir.get("/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/mimetypes"})
    assert r.status_code == 422 and "cannot list" in r.json()["issue"][0]["diagnostics"]
    r = fhir.get("/CodeSystem/$lookup", params={"system": GENDER_CS})
    assert r.status_code == 400
    assert httpx.get(f"{hub_url}/fhir/ValueSet/$expand", params={"url": GENDER_VS}).status_code == 401


def test_any_valid_token_may_ask(fhir_as):
    charity = fhir_as(partner_class="charity", scopes=["system/Goal.rs"])
    assert charity.get("/ValueSet/$expand", params={"url": GENDER_VS}).status_code == 200
    assert charity.get("/CodeSystem/$lookup", params={"system": GENDER_CS, "code": "male"}).status_code == 200


def test_the_capability_statement_lists_them_and_each_answers(fhir):
    statement = fhir.get("/metadata").json()
    listed = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in statement["rest"][0]["resource"]}
    assert {"lookup", "validate-code"} <= listed["CodeSystem"]
    assert {"expand", "validate-code"} <= listed["ValueSet"]
    calls = {("CodeSystem", "lookup"): {"system": GENDER_CS, "code": "male"},
             ("CodeSystem", "validate-code"): {"url": GENDER_CS, "code": "male"},
             ("ValueSet", "expand"): {"url": GENDER_VS},
             ("ValueSet", "validate-code"): {"url": GENDER_VS, "system": GENDER_CS, "code": "male"}}
    for (res_type, name), params in calls.items():
        r = fhir.get(f"/{res_type}/${name}", params=params)
        assert r.status_code == 200, (res_type, name, r.text)
