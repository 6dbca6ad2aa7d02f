"""The base R4 specification's rules (hub.fhir.validation.core and narrative), one by one, through
the entry point every write uses (hub.fhir.resources.check_structure) and the one $validate uses
(examine): the status, the issue code, the FHIRPath location and what the message names."""
from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.jsontext import FhirDecimal
from hub.fhir.resources import check_structure, examine
from hub.fhir.validation.core import MAX_DEPTH, Checker
from hub.fhir.validation.core_rules import Binding, rules
from hub.fhir.xml import xml_to_json

PATIENT = {"resourceType": "Patient", "name": [{"family": "Okafor", "given": ["Dee"]}], "gender": "female"}
XHTML = "http://www.w3.org/1999/xhtml"


def refused(resource: dict[str, Any]) -> FhirError:
    with pytest.raises(FhirError) as caught:
        check_structure(resource)
    return caught.value


def patient(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PATIENT), **changes}


def test_a_valid_resource_passes_both_entry_points():
    assert check_structure(patient()) == patient()
    issues, status = examine(patient(), warnings=True)
    assert status is None and [i.severity for i in issues] == ["warning"]      # dom-6: no narrative


# --- required bindings --------------------------------------------------------------------------

@pytest.mark.parametrize("resource, location, value, value_set", [
    (patient(gender="banana"), "Patient.gender", "banana", "http://hl7.org/fhir/ValueSet/administrative-gender"),
    ({"resourceType": "CarePlan", "status": "bogus", "intent": "plan", "subject": {"reference": "Patient/1"}},
     "CarePlan.status", "bogus", "http://hl7.org/fhir/ValueSet/request-status"),
    ({"resourceType": "Goal", "lifecycleStatus": "not-a-status", "description": {"text": "walk"},
      "subject": {"reference": "Patient/1"}}, "Goal.lifecycleStatus", "not-a-status",
     "http://hl7.org/fhir/ValueSet/goal-status"),
    (patient(telecom=[{"system": "fax-machine", "value": "0115 000 0000"}]), "Patient.telecom[0].system",
     "fax-machine", "http://hl7.org/fhir/ValueSet/contact-point-system"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
      "valueQuantity": {"value": 70, "comparator": "~~"}}, "Observation.valueQuantity.comparator", "~~",
     "http://hl7.org/fhir/ValueSet/quantity-comparator"),
    ({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
      "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                     "code": "cured"}]}},
     "Condition.clinicalStatus", "http://terminology.hl7.org/CodeSystem/condition-clinical|cured",
     "http://hl7.org/fhir/ValueSet/condition-clinical"),
    ({"resourceType": "Condition", "subject": {"reference": "Patient/1"}, "clinicalStatus": {"text": "better"}},
     "Condition.clinicalStatus", "no code (text only)", "http://hl7.org/fhir/ValueSet/condition-clinical"),
])
def test_a_required_binding_is_enforced(resource, location, value, value_set):
    error = refused(resource)
    assert error.status == 422
    [issue] = [i for i in error.issues if i.expression == location]
    assert issue.code == "code-invalid" and value in issue.diagnostics and value_set in issue.diagnostics


def test_codes_from_a_standard_the_hub_does_not_list_are_checked_for_their_form():
    attachment = {"resourceType": "DocumentReference", "status": "current",
                  "content": [{"attachment": {"contentType": "not a mime type", "data": "aGk="}}]}
    assert refused(attachment).issues[0].expression == "DocumentReference.content[0].attachment.contentType"
    attachment["content"][0]["attachment"]["contentType"] = "application/pdf"
    check_structure(attachment)
    money = {"resourceType": "Invoice", "status": "draft", "totalNet": {"value": 1, "currency": "pounds"}}
    assert "ISO 4217" in refused(money).issues[0].diagnostics


def test_an_extensible_binding_never_refuses_and_warns_in_validate():
    resource = patient(maritalStatus={"coding": [{"system": "https://example.org/marital", "code": "civil"}]})
    check_structure(resource)
    issues, status = examine(resource, warnings=True)
    assert status is None
    [warning] = [i for i in issues if i.expression == "Patient.maritalStatus"]
    assert warning.severity == "warning" and "extensible" in warning.diagnostics


def test_a_code_claimed_from_a_fhir_code_system_must_be_in_it():
    resource = patient(extension=[{"url": "https://example.org/x", "valueCoding": {
        "system": "http://hl7.org/fhir/administrative-gender", "code": "banana"}}])
    error = refused(resource)
    assert error.status == 422 and error.issues[0].expression == "Patient.extension[0].valueCoding.code"
    # Codes of HL7's terminology (terminology.hl7.org) change between releases: not refused.
    check_structure(patient(maritalStatus={"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "NEW-CODE"}]}))


def test_a_required_coding_binding_needs_the_pair():
    binding = Binding("required", "https://example.org/vs", {"https://example.org/cs": frozenset({"a"})},
                      frozenset({"a"}))
    checker = Checker(rules(), warnings=False)
    checker.binding(binding, "Coding", {"system": "https://example.org/cs", "code": "a"}, "X.coding")
    checker.binding(binding, "Coding", {"system": "https://example.org/other", "code": "a"}, "Y.coding")
    assert [i.expression for i in checker.issues] == ["Y.coding"]


# --- invariants -----------------------------------------------------------------------------------

@pytest.mark.parametrize("resource, rule, location", [
    (patient(contact=[{"period": {"start": "2020-01-02", "end": "2020-01-01"}, "name": {"family": "A"}}]),
     "per-1", "Patient.contact[0].period"),
    (patient(generalPractitioner=[{"reference": "#missing"}]), "ref-1", "Patient.generalPractitioner[0]"),
    (patient(contained=[{"resourceType": "Organization", "id": "o", "name": "x"}]), "dom-3", "Patient.contained[0]"),
    (patient(contained=[{"resourceType": "Organization", "id": "o", "name": "x", "meta": {"versionId": "1"}}],
             managingOrganization={"reference": "#o"}), "dom-4", "Patient"),
    (patient(contained=[{"resourceType": "Organization", "id": "o", "name": "x", "contained": [
        {"resourceType": "Organization", "id": "p", "name": "y"}]}], managingOrganization={"reference": "#o"}),
     "dom-2", "Patient"),
    (patient(extension=[{"url": "https://example.org/x", "valueString": "a",
                         "extension": [{"url": "y", "valueString": "b"}]}]), "ext-1", "Patient.extension[0]"),
    (patient(contact=[{"gender": "male"}]), "pat-1", "Patient.contact[0]"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "w"},
      "valueQuantity": {"value": 1, "code": "kg"}}, "qty-3", "Observation.valueQuantity"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "w"}, "valueString": "x",
      "dataAbsentReason": {"text": "no"}}, "obs-6", "Observation"),
    ({"resourceType": "CarePlan", "status": "draft", "intent": "plan", "subject": {"reference": "Patient/1"},
      "activity": [{"reference": {"reference": "ServiceRequest/1"}, "detail": {"status": "scheduled"}}]},
     "cpl-3", "CarePlan.activity[0]"),
    ({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/1"},
      "prediction": [{"probabilityDecimal": 101}]}, "ras-2", "RiskAssessment.prediction[0]"),
])
def test_an_invariant_is_enforced(resource, rule, location):
    error = refused(resource)
    assert error.status == 422
    assert any(i.code == "invariant" and f"rule {rule} failed" in i.diagnostics and i.expression == location
               for i in error.issues), [(i.diagnostics, i.expression) for i in error.issues]


def test_contained_resources_referred_to_are_accepted():
    check_structure(patient(contained=[{"resourceType": "Organization", "id": "o", "name": "x"}],
                            managingOrganization={"reference": "#o"}))


@pytest.mark.parametrize("element, location", [
    ({"name": [{}]}, "Patient.name[0]"),
    ({"name": [{"id": "n1"}]}, "Patient.name[0]"),
    ({"_birthDate": {"id": "b"}}, "Patient._birthDate"),
])
def test_ele_1_every_element_has_a_value_or_children(element, location):
    error = refused(patient(**element))
    assert error.status == 400 and error.issues[0].expression == location and "ele-1" in error.issues[0].diagnostics


# --- JSON as FHIR defines it, and what PostgreSQL cannot store ------------------------------------

@pytest.mark.parametrize("changes, location, reason", [
    ({"name": []}, "Patient.name", "array SHALL NOT be empty"),
    ({"active": None}, "Patient.active", "null"),
    ({"name": [{"given": ["a", None]}]}, "Patient.name[0].given[1]", "null is only allowed"),
    ({"fhir_comments": ["hello"]}, "Patient.fhir_comments", "fhir_comments"),
    ({"birthDate": ""}, "Patient.birthDate", "SHALL NOT be empty"),
    ({"name": [{"family": "O\u0000kafor"}]}, "Patient.name[0].family", "NUL"),
    ({"extension": [{"url": "https://example.org/x", "valueString": "a\u0000"}]},
     "Patient.extension[0].valueString", "NUL"),
    ({"unknownElement": {"deep": ["x\u0000"]}}, "Patient.unknownElement.deep[0]", "NUL"),
    ({"name": [{"family": "x" * (1024 * 1024 + 1)}]}, "Patient.name[0].family", "longer than"),
])
def test_json_rules(changes, location, reason):
    error = refused(patient(**changes))
    assert error.status == 400
    assert error.issues[0].expression == location and reason in error.issues[0].diagnostics


def test_attachment_data_may_be_longer_than_a_string():
    """The 1 MB limit is the `string` type's (R4 datatypes); base64Binary has none, so an 800 KB
    PDF in a handover (about 1.1 million characters of base64) is stored, not refused."""
    data = base64.b64encode(b"%PDF-1.4\n" + bytes(800 * 1024)).decode()
    assert len(data) > 1024 * 1024
    check_structure({"resourceType": "DocumentReference", "status": "current",
                     "content": [{"attachment": {"contentType": "application/pdf", "data": data}}]})


def test_a_null_lined_up_with_extensions_is_allowed():
    check_structure(patient(name=[{"given": ["a", None], "_given": [None, {"extension": [
        {"url": "https://example.org/x", "valueString": "y"}]}]}]))


def test_a_number_postgresql_cannot_hold_is_refused():
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
                "valueQuantity": {"value": FhirDecimal("1e200000")}}
    assert refused(resource).issues[0].expression == "Observation.valueQuantity.value"


def test_nesting_deeper_than_the_limit_is_refused_not_a_crash():
    extension: dict[str, Any] = {"url": "https://example.org/x", "valueString": "leaf"}
    for _ in range(5000):
        extension = {"url": "https://example.org/x", "extension": [extension]}
    error = refused(patient(extension=[extension]))
    assert error.status == 400 and f"nested more than {MAX_DEPTH}" in error.issues[0].diagnostics


@pytest.mark.parametrize("body, reason", [
    (b'{"resourceType": "Patient", "active": true, "active": false}', "appears more than once"),
    ('{"resourceType": "Patient"}'.encode("utf-16"), "not UTF-8"),
    (b'{"resourceType": "Patient", "name": [{"family": "\xff"}]}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"resourceType": "Patient",}', "Expecting property name"),
])
def test_json_text_that_is_not_fhir_json(body, reason):
    with pytest.raises(ValueError, match=reason):
        jsontext.parse(body)


def test_a_utf8_byte_order_mark_is_allowed():
    assert jsontext.parse(b'\xef\xbb\xbf{"resourceType": "Patient"}') == {"resourceType": "Patient"}


# --- XML -------------------------------------------------------------------------------------------

def _xml(inner: str) -> str:
    return f'<Patient xmlns="http://hl7.org/fhir">{inner}</Patient>'


@pytest.mark.parametrize("data, reason", [
    (_xml('<gender value="male"/><active value="true"/>'), "out of order"),
    (_xml('<gender value="male"/>').encode("utf-16"), "UTF-8"),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?>' + _xml('<gender value="male"/>').encode(), "UTF-8"),
    (_xml('<!DOCTYPE x><gender value="male"/>'), "Malformed|DOCTYPE"),
])
def test_xml_that_is_not_fhir_xml(data, reason):
    with pytest.raises(FhirError, match=reason) as caught:
        xml_to_json(data)
    assert caught.value.status == 400


def test_an_empty_xml_value_is_refused():
    resource = xml_to_json(_xml('<extension url=""><valueString value="a"/></extension>'))
    assert refused(resource).issues[0].expression == "Patient.extension[0].url"


# --- narrative -------------------------------------------------------------------------------------

def narrative(div: str) -> dict[str, Any]:
    return patient(text={"status": "generated", "div": div})


@pytest.mark.parametrize("div, reason", [
    (f'<div xmlns="{XHTML}"><script>alert(1)</script>text</div>', "<script>"),
    (f'<div xmlns="{XHTML}"><p onclick="steal()">text</p></div>', "event attribute onclick"),
    (f'<div xmlns="{XHTML}"><form action="x"><p>text</p></form></div>', "<form>"),
    (f'<div xmlns="{XHTML}"><object data="x">text</object></div>', "<object>"),
    (f'<div xmlns="{XHTML}"><iframe src="x">text</iframe></div>', "<iframe>"),
    (f'<div xmlns="{XHTML}"><a href="javascript:steal()">text</a></div>', "script URL"),
    (f'<div xmlns="{XHTML}"><a href=" JavaScript:steal()">text</a></div>', "script URL"),
    (f'<div xmlns="{XHTML}"><p style="width: expression(steal())">text</p></div>', "script"),
    (f'<div xmlns="{XHTML}"><p xmlns="http://example.org">text</p></div>', "not in the XHTML namespace"),
    ('<div><p>text</p></div>', "XHTML namespace"),
    (f'<p xmlns="{XHTML}">text</p>', "one <div>"),
    (f'<div xmlns="{XHTML}"><?php echo 1 ?>text</div>', "processing instructions"),
    (f'<div xmlns="{XHTML}">   <p> </p></div>', "txt-2"),
])
def test_narrative_rules(div, reason):
    error = refused(narrative(div))
    assert error.status == 422 and error.issues[0].expression == "Patient.text.div"
    assert reason in error.issues[0].diagnostics, error.issues[0].diagnostics


@pytest.mark.parametrize("div", [
    f'<!DOCTYPE div [<!ENTITY x SYSTEM "file:///etc/passwd">]><div xmlns="{XHTML}">&x;</div>',
    f'<div xmlns="{XHTML}">&reg; is not XML</div>',
    f'<div xmlns="{XHTML}"><p>unclosed</div>',
])
def test_narrative_that_is_not_well_formed_or_declares_entities(div):
    error = refused(narrative(div))
    assert error.issues[0].expression == "Patient.text.div"
    assert error.status in (400, 422)


def test_narrative_the_specification_allows():
    check_structure(narrative(
        f'<div xmlns="{XHTML}"><h1 class="x" style="color: red">Dee</h1><table border="1"><tr><td colspan="2">a'
        f'</td></tr></table><a href="https://example.org">link</a><img src="#pic" alt="pic"/>&amp;&#174;</div>'))


def test_the_same_narrative_rules_apply_to_xml():
    xml = _xml(f'<text><status value="generated"/><div xmlns="{XHTML}"><p onclick="x()">a</p></div></text>')
    error = refused(xml_to_json(xml))
    assert error.issues[0].expression == "Patient.text.div" and "onclick" in error.issues[0].diagnostics
