"""The pure parts of the interaction core and its write rules: which interaction a path is and the
scope it needs, where literal references sit, which NHS numbers identify someone, and how
`_summary`/`_elements` cut a resource."""
from __future__ import annotations

import pytest

from connectors.la.format import PEOPLE
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import NHS_NUMBER, UNVERIFIED_NHS_NUMBER, is_issuable_nhs_number
from hub.fhir.references import literal_references
from hub.fhir.subsetting import subset
from hub.identity.duplicates import identifying, refuse_placeholder_criteria
from hub.interactions.context import FhirRequest
from hub.interactions.router import letters, route
from tests.unit.test_la_format import PERSON
from tests.unit.test_la_mapping import mapped


@pytest.mark.parametrize(("method", "path", "interaction", "needs"), [
    ("GET", "Patient/1", "read", "r"),
    ("GET", "Patient/1/_history/2", "vread", "r"),
    ("GET", "Patient/1/_history", "history-instance", "r"),
    ("GET", "Patient/_history", "history-type", "s"),
    ("GET", "_history", "history-system", ""),
    ("GET", "Patient", "search-type", "s"),
    ("POST", "Patient/_search", "search-type", "s"),
    ("POST", "Patient", "create", "c"),
    ("PUT", "Patient/1", "update", "u"),
    ("PUT", "Patient", "update-conditional", "us"),
    ("DELETE", "Patient/1", "delete", "d"),
    ("POST", "", "batch", ""),
    ("GET", "Patient/1/$everything", "operation", ""),
    ("POST", "Patient/1/$everything", "operation", ""),
    ("POST", "Goal/$validate", "operation", ""),
])
def test_route_and_scope_letters(method, path, interaction, needs):
    found = route(method, path)
    assert found.interaction == interaction
    assert letters(found, FhirRequest(method, path)) == needs


def test_criteria_on_a_post_url_make_a_conditional_create_that_also_searches():
    found = route("POST", "Patient")
    assert letters(found, FhirRequest("POST", "Patient", [("identifier", "x|1")])) == "cs"
    assert letters(found, FhirRequest("POST", "Patient", [("_format", "json")])) == "c"
    assert letters(found, FhirRequest("POST", "Patient", headers={"if-none-exist": "identifier=x|1"})) == "cs"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "Patient/1", 405), ("DELETE", "Patient", 405), ("GET", "Nope/1", 404),
    ("GET", "Patient/1/_history/x", 404), ("GET", "$everything", 404), ("GET", "Goal/1/$everything", 404),
    ("GET", "Patient/1/$unknown", 404), ("GET", "Patient/1/x/y/z", 404), ("GET", "Patient/bad$id", 404),
])
def test_paths_no_interaction_has(method, path, status):
    with pytest.raises(FhirError) as caught:
        route(method, path)
    assert caught.value.status == status


def test_literal_references_with_where_they_sit():
    goal = {"resourceType": "Goal", "subject": {"reference": "Patient/1"},
            "addresses": [{"reference": "#c"}, {"reference": "Condition/2/_history/3"},
                          {"reference": "https://x.org/fhir/Condition/9"}, {"identifier": {"value": "7"}},
                          {"reference": "urn:uuid:abc"}, {"reference": "Condition?code=1"}],
            "contained": [{"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/4"}}]}
    found = [(r.element, r.res_type, r.res_id, r.version) for r in literal_references(goal)]
    assert found == [("Goal.subject", "Patient", "1", None), ("Goal.addresses[1]", "Condition", "2", "3"),
                     ("Goal.contained[0].subject", "Patient", "4", None)]
    assert literal_references({"resourceType": "Bundle", "entry": [{"resource": goal}]}) == []


@pytest.mark.parametrize(("number", "issuable"), [
    ("9990000018", True), ("4010232137", True), ("6000000006", True),
    ("0000000000", False), ("1111111111", False), ("2222222222", False),  # placeholders passing Modulus 11
    ("9434765919", False), ("9000000009", False),  # valid check digit, outside the issued ranges
    ("9990000017", False), ("999000001", False), ("99900000x8", False),  # not NHS numbers at all
])
def test_which_nhs_numbers_can_belong_to_one_person(number, issuable):
    assert is_issuable_nhs_number(number) is issuable


def test_placeholder_numbers_identify_no_one_and_cannot_select_a_person():
    person = {"identifier": [{"system": NHS_NUMBER, "value": "1111111111"},
                             {"system": NHS_NUMBER, "value": "999 000 0018"}]}
    assert identifying(person) == [(NHS_NUMBER, "9990000018")]
    refuse_placeholder_criteria("Patient", [("identifier", f"{NHS_NUMBER}|9990000018")])
    refuse_placeholder_criteria("Goal", [("identifier", f"{NHS_NUMBER}|0000000000")])
    with pytest.raises(FhirError) as caught:
        refuse_placeholder_criteria("Patient", [("identifier", f"x|1,{NHS_NUMBER}|0000000000")])
    assert caught.value.status == 422


def test_a_council_extract_keeps_a_placeholder_nhs_number_as_unverified():
    [patient] = mapped(PEOPLE, [{**PERSON, "NHS_Number": "0000000000"}])
    assert patient["identifier"][0]["system"] == UNVERIFIED_NHS_NUMBER
    assert patient["identifier"][0]["value"] == "0000000000"


def test_summary_and_elements_keep_mandatory_elements_and_tag_the_result():
    obs = {"resourceType": "Observation", "id": "o", "meta": {"tag": [{"code": "keep"}]}, "status": "final",
           "code": {"text": "Weight"}, "note": [{"text": "n"}], "valueQuantity": {"value": 70},
           "text": {"status": "generated", "div": "<div/>"}}
    elements = subset(obs, None, ["note"])
    assert set(elements) == {"resourceType", "id", "meta", "status", "code", "note"}
    assert [t["code"] for t in elements["meta"]["tag"]] == ["keep", "SUBSETTED"]
    summary = subset(obs, "true", None)
    assert "valueQuantity" in summary and "note" not in summary and "text" not in summary
    assert subset(obs, "false", None) is obs and subset(obs, None, None) is obs
    assert subset(obs, "true", None)["meta"]["tag"] == subset(summary, "true", None)["meta"]["tag"]
