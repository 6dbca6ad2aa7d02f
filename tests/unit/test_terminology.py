"""hub.fhir.terminology: code systems, value set expansion and the answers of $lookup,
$validate-code and $expand, over the R4 core and the IPC guide, as pure functions."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hub.fhir.errors import FhirError
from hub.fhir.terminology import NotExpandable, Terminology, core
from hub.fhir.terminology.operations import Inputs, expand, lookup, validate_code_in_code_system, \
    validate_code_in_value_set
from hub.fhir.validation import terminology
from hub.fhir.validation.core import check as core_check

GENDER_CS = "http://hl7.org/fhir/administrative-gender"
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
IPC = "https://ipc-hub.example.org/fhir"


def q(**params: str) -> Inputs:
    return Inputs.from_query(params.items())


def parameters(answer: dict) -> dict:
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in answer["parameter"]
            if "part" not in p}


def valid(resource: dict) -> None:
    """The answer is itself valid FHIR."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert [i.diagnostics for i in core_check(resource)] == []


def test_lookup_a_core_code():
    answer = lookup(terminology(), q(system=GENDER_CS, code="female"))
    valid(answer)
    assert parameters(answer) == {"name": "AdministrativeGender", "version": "4.0.1", "display": "Female"}
    definition = [p for p in answer["parameter"] if p["name"] == "property"][0]["part"]
    assert definition[0] == {"name": "code", "valueCode": "definition"}


def test_lookup_gives_the_hierarchy_and_only_the_properties_asked_for():
    answer = lookup(terminology(), q(system="http://terminology.hl7.org/CodeSystem/v3-ActCode", code="AMB"))
    valid(answer)
    assert parameters(answer)["display"] == "ambulatory"
    parents = [p["part"][1]["valueCode"] for p in answer["parameter"]
               if p["name"] == "property" and p["part"][0]["valueCode"] == "parent"]
    assert parents == ["_ActEncounterCode"]
    only = lookup(terminology(), Inputs({"system": ["http://terminology.hl7.org/CodeSystem/v3-ActCode"],
                                         "code": ["AMB"], "property": ["parent"]}))
    assert {p["part"][0]["valueCode"] for p in only["parameter"] if p["name"] == "property"} == {"parent"}


def test_lookup_an_ipc_code_by_coding():
    answer = lookup(terminology(), Inputs({"coding": [{"system": f"{IPC}/CodeSystem/ipc-stage", "code": "preparation"}]}))
    assert parameters(answer)["display"]


@pytest.mark.parametrize("params, status", [
    ({"system": "http://example.org/unknown", "code": "x"}, 404),
    ({"system": GENDER_CS, "code": "banana"}, 404),
    ({"code": "female"}, 400),
    ({"system": GENDER_CS, "code": "female", "version": "3.0.2"}, 404),
])
def test_lookup_refusals(params, status):
    with pytest.raises(FhirError) as caught:
        lookup(terminology(), q(**params))
    assert caught.value.status == status


def test_validate_code_in_a_value_set():
    yes = validate_code_in_value_set(terminology(), q(url=GENDER_VS, system=GENDER_CS, code="male"))
    valid(yes)
    assert parameters(yes) == {"result": True, "display": "Male"}
    no = parameters(validate_code_in_value_set(terminology(), q(url=GENDER_VS, system=GENDER_CS, code="banana")))
    assert no["result"] is False and "'banana' is not a code of" in no["message"]
    wrong_display = parameters(validate_code_in_value_set(
        terminology(), q(url=GENDER_VS, system=GENDER_CS, code="male", display="Man")))
    assert wrong_display["result"] is False and "Male" in wrong_display["message"]
    concept = {"coding": [{"system": "http://example.org", "code": "x"}, {"system": GENDER_CS, "code": "other"}]}
    assert parameters(validate_code_in_value_set(terminology(), Inputs(
        {"url": [GENDER_VS], "codeableConcept": [concept]})))["result"] is True


def test_validate_code_in_an_ipc_value_set_and_a_supplied_one():
    url = f"{IPC}/ValueSet/ipc-stage"
    assert parameters(validate_code_in_value_set(terminology(), q(
        url=url, system=f"{IPC}/CodeSystem/ipc-stage", code="preparation")))["result"] is True
    supplied = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [
        {"system": GENDER_CS, "concept": [{"code": "female"}]}]}}
    assert parameters(validate_code_in_value_set(terminology(), Inputs(
        {"valueSet": [supplied], "code": ["male"], "system": [GENDER_CS]})))["result"] is False


def test_validate_code_in_a_code_system():
    assert parameters(validate_code_in_code_system(terminology(), q(url=GENDER_CS, code="unknown")))["result"] is True
    answer = parameters(validate_code_in_code_system(terminology(), q(url=GENDER_CS, code="neither")))
    assert answer["result"] is False and "neither" in answer["message"]
    abstract = parameters(validate_code_in_code_system(
        terminology(), q(url="http://terminology.hl7.org/CodeSystem/v3-ActCode", code="_ActEncounterCode")))
    assert abstract["result"] is False and "abstract" in abstract["message"]


def test_expand_with_filter_and_paging():
    url = "http://hl7.org/fhir/ValueSet/resource-types"
    whole = expand(terminology(), q(url=url), now=datetime(2026, 1, 1, tzinfo=UTC))
    valid(whole)
    assert whole["expansion"]["total"] == len(whole["expansion"]["contains"]) >= 140
    assert whole["expansion"]["timestamp"] == "2026-01-01T00:00:00Z"
    page = expand(terminology(), q(url=url, offset="10", count="5"))["expansion"]
    assert [c["code"] for c in page["contains"]] == [c["code"] for c in whole["expansion"]["contains"][10:15]]
    assert page["offset"] == 10 and page["total"] == whole["expansion"]["total"]
    care = expand(terminology(), q(url=url, filter="care"))["expansion"]
    assert {c["code"] for c in care["contains"]} >= {"CarePlan", "CareTeam"}
    assert all("care" in (c["display"] + c["code"]).lower() for c in care["contains"])
    assert care["parameter"] == [{"name": "filter", "valueString": "care"}]
    beyond = expand(terminology(), q(url=url, offset="100000"))["expansion"]
    assert "contains" not in beyond and beyond["total"] == whole["expansion"]["total"]


def test_expand_hierarchies_and_the_guide():
    # is-a filter over a v3 hierarchy
    encounter = expand(terminology(), q(url="http://terminology.hl7.org/ValueSet/v3-ActEncounterCode"))
    assert "AMB" in {c["code"] for c in encounter["expansion"]["contains"]}
    stages = expand(terminology(), q(url=f"{IPC}/ValueSet/ipc-stage"))
    assert stages["url"] == f"{IPC}/ValueSet/ipc-stage"
    assert [c["code"] for c in stages["expansion"]["contains"]][:2] == ["context", "preparation"]


@pytest.mark.parametrize("params, status", [
    ({"url": "http://example.org/no-such-value-set"}, 404),
    ({"url": "http://hl7.org/fhir/ValueSet/mimetypes"}, 422),
    ({"url": "http://hl7.org/fhir/ValueSet/resource-types", "count": "many"}, 400),
    ({"url": "http://hl7.org/fhir/ValueSet/resource-types", "count": "100000"}, 422),
    ({}, 400),
])
def test_expand_refusals(params, status):
    with pytest.raises(FhirError) as caught:
        expand(terminology(), q(**params))
    assert caught.value.status == status


def test_inputs_from_a_parameters_body():
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": GENDER_VS}, {"name": "count", "valueInteger": 2},
        {"name": "coding", "valueCoding": {"system": GENDER_CS, "code": "male"}}]}
    inputs = Inputs.from_parameters(body)
    assert inputs.text("url") == GENDER_VS and inputs.integer("count") == 2
    with pytest.raises(FhirError):
        Inputs.from_parameters({"resourceType": "Patient"})
    with pytest.raises(FhirError):
        Inputs.from_parameters({"resourceType": "Parameters", "parameter": [{"name": "url"}]})


def test_expansion_of_compose_rules():
    cs = {"resourceType": "CodeSystem", "url": "http://example.org/cs", "content": "complete", "concept": [
        {"code": "a", "display": "A", "concept": [{"code": "a1", "display": "A one"}]},
        {"code": "b", "display": "B", "property": [{"code": "colour", "valueCode": "blue"}]}]}
    vs = {"resourceType": "ValueSet", "url": "http://example.org/vs", "compose": {
        "include": [{"system": "http://example.org/cs", "filter": [{"property": "concept", "op": "is-a", "value": "a"}]},
                    {"system": "http://example.org/cs", "filter": [{"property": "colour", "op": "=", "value": "blue"}]}],
        "exclude": [{"system": "http://example.org/cs", "concept": [{"code": "a"}]}]}}
    cycle = {"resourceType": "ValueSet", "url": "http://example.org/cycle", "compose": {
        "include": [{"valueSet": ["http://example.org/cycle"]}]}}
    local = Terminology([cs, vs, cycle])
    assert [m.code for m in local.expansion("http://example.org/vs").members] == ["a1", "b"]
    with pytest.raises(NotExpandable):
        local.expansion("http://example.org/cycle")
    assert core().code_system(GENDER_CS).find("male")["display"] == "Male"
