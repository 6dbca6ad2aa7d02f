"""FHIR XML <-> JSON conversion (hub.fhir.xml): every UK Core example round-trips and
validates, and the rules of https://hl7.org/fhir/R4/xml.html hold case by case."""
from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree
from pydantic import ValidationError

from hub.fhir.errors import FhirError
from hub.fhir.jsontext import FhirDecimal, json_default
from hub.fhir.xml import json_to_xml, xml_to_json
from tests.shared_data import UKCORE_EXAMPLES

FHIR = "http://hl7.org/fhir"
XHTML = "http://www.w3.org/1999/xhtml"
EXPECTED_EXAMPLE_COUNT = 215

# Examples that are invalid FHIR in R4 as much as in R4B: R4B is right to reject them.
# (No example was found where R4B rejects content that R4 allows.)
INVALID_EXAMPLES = {
    "Extension-UKCore-ConditionEpisode-Example.xml": (
        "its extension holds both valueCode and valueCodeableConcept; value[x] allows one"
    ),
}
# Examples whose source XML lists elements out of FHIR order (status before text, text before
# meta, an item's linkId before its extension): FHIR XML's order is fixed (xml.html), so they are
# refused, naming the first element out of place.
OUT_OF_ORDER_EXAMPLES = {
    "Extension-UKCore-CodingSCT-IllicitDrugs-Example.xml": "Observation.text",
    "UKCore-Observation-Lab-Albumin-Example.xml": "Observation.meta",
    "UKCore-Questionnaire-EOLPlan-Example.xml": "Questionnaire.item[0].item[0].item[0].extension",
}


EXAMPLES = sorted(UKCORE_EXAMPLES.glob("*.xml"))


def exact_json(resource: dict[str, Any]) -> bytes:
    """Serialised JSON, so comparisons see decimal digits (1.50 vs 1.5), not just values."""
    return orjson.dumps(resource, default=json_default)


def wrap(body: str, root: str = "Patient") -> str:
    return f'<{root} xmlns="{FHIR}">{body}</{root}>'


def child_names(element: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in element if isinstance(child.tag, str)]


def element_outline(root: etree._Element) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every FHIR element in document order with its attributes (narrative XHTML left out)."""
    outline = []
    for element in root.iter(etree.Element):
        in_narrative = any(a.tag.startswith("{" + XHTML) for a in element.iterancestors())
        if not element.tag.startswith("{" + XHTML) and not in_narrative:
            outline.append((element.tag, tuple(sorted(element.attrib.items()))))
    return outline


# --------------------------------------------------------------------- UK Core examples


def test_all_uk_core_examples_are_found() -> None:
    assert len(EXAMPLES) == EXPECTED_EXAMPLE_COUNT, UKCORE_EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_uk_core_example_validates_and_round_trips(path: Path) -> None:
    data = path.read_bytes()
    if path.name in OUT_OF_ORDER_EXAMPLES:
        with pytest.raises(FhirError, match="is out of order") as caught:
            xml_to_json(data)
        assert caught.value.issues[0].expression == OUT_OF_ORDER_EXAMPLES[path.name]
        return
    resource = xml_to_json(data)

    model = get_fhir_model_class(resource["resourceType"])
    if path.name in INVALID_EXAMPLES:
        with pytest.raises(ValidationError, match="Any of one field value is expected"):
            model.model_validate(resource)
    else:
        model.model_validate(resource)

    xml = json_to_xml(resource)
    again = xml_to_json(xml)
    assert again == resource
    assert exact_json(again) == exact_json(resource)

    assert element_outline(etree.fromstring(xml)) == element_outline(etree.fromstring(data))


# --------------------------------------------------------------------- primitives


def test_primitive_extension_goes_to_underscore_property() -> None:
    xml = wrap(
        '<birthDate id="bd" value="1970-03-04">'
        '<extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">'
        '<valueDateTime value="1970-03-04T10:15:00Z"/></extension></birthDate>'
        '<deceasedBoolean><extension url="http://example.org/why">'
        '<valueString value="not recorded"/></extension></deceasedBoolean>'
    )
    resource = xml_to_json(xml)
    assert resource["birthDate"] == "1970-03-04"
    assert resource["_birthDate"] == {
        "id": "bd",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1970-03-04T10:15:00Z",
            }
        ],
    }
    assert "deceasedBoolean" not in resource  # extension only, no value
    assert resource["_deceasedBoolean"]["extension"][0]["valueString"] == "not recorded"
    get_fhir_model_class("Patient").model_validate(resource)
    assert xml_to_json(json_to_xml(resource)) == resource


def test_repeating_primitive_extensions_align_with_nulls() -> None:
    xml = wrap(
        "<name>"
        '<given value="Ann"/>'
        '<given><extension url="http://example.org/initial">'
        '<valueBoolean value="true"/></extension></given>'
        '<given value="Bo" id="g3"/>'
        "</name>"
    )
    name = xml_to_json(xml)["name"][0]
    assert name["given"] == ["Ann", None, "Bo"]
    assert name["_given"] == [
        None,
        {"extension": [{"url": "http://example.org/initial", "valueBoolean": True}]},
        {"id": "g3"},
    ]
    out = etree.fromstring(json_to_xml({"resourceType": "Patient", "name": [name]}))
    givens = out.findall(f"{{{FHIR}}}name/{{{FHIR}}}given")
    assert [g.get("value") for g in givens] == ["Ann", None, "Bo"]
    assert givens[2].get("id") == "g3"
    assert child_names(givens[1]) == ["extension"]


def test_repeating_primitive_without_extensions_has_no_underscore_array() -> None:
    resource = xml_to_json(wrap('<name><given value="A"/><given value="B"/></name>'))
    assert resource["name"] == [{"given": ["A", "B"]}]


def test_json_primitive_arrays_of_different_length_are_refused() -> None:
    resource = {"resourceType": "Patient", "name": [{"given": ["A"], "_given": [None, None]}]}
    with pytest.raises(FhirError, match="differ in length") as caught:
        json_to_xml(resource)
    assert caught.value.issues[0].expression == "Patient.name[0].given"


def test_booleans_and_integers_are_json_typed() -> None:
    resource = xml_to_json(
        wrap('<active value="false"/><multipleBirthInteger value="2"/>')
    )
    assert resource["active"] is False
    assert resource["multipleBirthInteger"] == 2
    assert type(resource["multipleBirthInteger"]) is int
    xml = json_to_xml(resource)
    assert b'<active value="false"/>' in xml
    assert b'<multipleBirthInteger value="2"/>' in xml


def test_positive_and_unsigned_ints_are_json_integers() -> None:
    dosage = xml_to_json(
        wrap(
            '<status value="active"/><intent value="order"/>'
            '<subject><reference value="Patient/1"/></subject>'
            '<dosageInstruction><timing><repeat><count value="3"/>'
            '<frequency value="1"/><offset value="0"/></repeat></timing></dosageInstruction>',
            root="MedicationRequest",
        )
    )
    repeat = dosage["dosageInstruction"][0]["timing"]["repeat"]
    assert repeat == {"count": 3, "frequency": 1, "offset": 0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<active value="yes"/>', "'yes' is not a boolean"),
        ('<multipleBirthInteger value="two"/>', "'two' is not a valid integer"),
        ('<multipleBirthInteger value="3000000000"/>', "is not a valid integer"),
        ('<multipleBirthInteger value="1_000"/>', "is not a valid integer"),
    ],
)
def test_bad_primitive_values_are_refused(body: str, message: str) -> None:
    with pytest.raises(FhirError, match=message) as caught:
        xml_to_json(wrap(body))
    assert caught.value.code == "value"


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        ({"resourceType": "Patient", "active": "true"}, "Patient.active"),
        ({"resourceType": "Patient", "multipleBirthInteger": 2.5}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "multipleBirthInteger": True}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "gender": 1}, "Patient.gender"),
        ({"resourceType": "Patient", "name": {"family": "X"}}, "Patient.name"),
        ({"resourceType": "Patient", "gender": ["male"]}, "Patient.gender"),
    ],
)
def test_json_values_of_the_wrong_type_are_refused(resource: dict, path: str) -> None:
    with pytest.raises(FhirError) as caught:
        json_to_xml(resource)
    assert caught.value.issues[0].expression == path


# --------------------------------------------------------------------- decimals


def observation_with_value(value: str) -> str:
    return wrap(
        '<status value="final"/><code><text value="x"/></code>'
        f'<valueQuantity><value value="{value}"/><unit value="mg"/></valueQuantity>',
        root="Observation",
    )


@pytest.mark.parametrize("text", ["1.50", "0.10", "100", "-0.0", "1e-7", "1.2E+3", "36.6"])
def test_decimals_keep_their_exact_digits(text: str) -> None:
    resource = xml_to_json(observation_with_value(text))
    value = resource["valueQuantity"]["value"]
    assert isinstance(value, FhirDecimal)
    assert str(value) == text
    assert value == Decimal(text)

    serialised = exact_json(resource)
    assert f'"value":{text},'.encode() in serialised
    reread = json.loads(serialised, parse_float=Decimal)["valueQuantity"]["value"]
    assert Decimal(reread).as_tuple() == Decimal(text).as_tuple()  # same digits, same scale

    assert f'<value value="{text}"/>'.encode() in json_to_xml(resource)
    get_fhir_model_class("Observation").model_validate(resource)


def test_stored_json_text_reads_back_with_exact_decimals() -> None:
    resource = xml_to_json(observation_with_value("1.50"))
    reread = json.loads(exact_json(resource), parse_float=FhirDecimal)
    assert reread == resource
    assert exact_json(reread) == exact_json(resource)
    assert b'<value value="1.50"/>' in json_to_xml(reread)


def test_decimal_needs_the_json_default_hook() -> None:
    resource = xml_to_json(observation_with_value("1.50"))
    with pytest.raises(TypeError):
        orjson.dumps(resource)  # fails loudly rather than rounding 1.50 to 1.5


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("1.50"), "1.50"), (36.6, "36.6"), (7, "7"), (FhirDecimal("0.10"), "0.10")],
)
def test_json_decimals_of_any_python_number_type_become_xml(value: Any, text: str) -> None:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": value},
    }
    assert f'<value value="{text}"/>'.encode() in json_to_xml(resource)


@pytest.mark.parametrize("text", ["1.5.0", ".5", "1.", "+1", "NaN", " 1"])
def test_invalid_decimal_text_is_refused(text: str) -> None:
    with pytest.raises(FhirError, match="is not a valid decimal") as caught:
        xml_to_json(observation_with_value(text))
    assert caught.value.issues[0].expression == "Observation.valueQuantity.value"


# --------------------------------------------------------------------- resources in resources


def test_contained_resources_are_wrapped() -> None:
    xml = wrap(
        '<id value="p1"/>'
        '<contained><Organization><id value="org"/><name value="Surgery"/></Organization>'
        "</contained>"
        '<contained><Practitioner><id value="gp"/></Practitioner></contained>'
        '<generalPractitioner><reference value="#gp"/></generalPractitioner>'
        '<managingOrganization><reference value="#org"/></managingOrganization>'
    )
    resource = xml_to_json(xml)
    assert resource["contained"] == [
        {"resourceType": "Organization", "id": "org", "name": "Surgery"},
        {"resourceType": "Practitioner", "id": "gp"},
    ]
    get_fhir_model_class("Patient").model_validate(resource)
    out = etree.fromstring(json_to_xml(resource))
    contained = out.findall(f"{{{FHIR}}}contained")
    assert [child_names(c) for c in contained] == [["Organization"], ["Practitioner"]]
    assert xml_to_json(json_to_xml(resource)) == resource


def test_bundle_entry_resource_and_response_outcome() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {
                "fullUrl": "urn:uuid:0c8d8c60-3f0b-4b43-9b7f-4a8e39c1c2a1",
                "resource": {"resourceType": "Patient", "id": "a", "active": True},
                "response": {
                    "status": "201 Created",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "information", "code": "informational"}],
                    },
                },
            }
        ],
    }
    xml = json_to_xml(bundle)
    root = etree.fromstring(xml)
    entry = root.find(f"{{{FHIR}}}entry")
    assert child_names(entry) == ["fullUrl", "resource", "response"]
    assert child_names(entry.find(f"{{{FHIR}}}resource")) == ["Patient"]
    response = entry.find(f"{{{FHIR}}}response")
    assert child_names(response.find(f"{{{FHIR}}}outcome")) == ["OperationOutcome"]
    assert xml_to_json(xml) == bundle
    get_fhir_model_class("Bundle").model_validate(bundle)


def test_parameters_parameter_resource() -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "return", "resource": {"resourceType": "Patient", "id": "x"}},
            {"name": "count", "valueInteger": 3},
        ],
    }
    assert xml_to_json(json_to_xml(parameters)) == parameters


def test_wrapper_must_hold_exactly_one_resource() -> None:
    xml = wrap("<contained><Organization><id value='a'/></Organization><Practitioner/></contained>")
    with pytest.raises(FhirError, match="exactly one resource element, found 2") as caught:
        xml_to_json(xml)
    assert caught.value.issues[0].expression == "Patient.contained[0]"


# --------------------------------------------------------------------- narrative


def test_narrative_div_is_kept_as_xhtml_text() -> None:
    xml = (
        f'<Patient xmlns="{FHIR}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<text><status value="generated"/>'
        f'<div xmlns="{XHTML}"><p>Hello <b>world</b> &amp; &lt;friends&gt;</p></div>'
        "</text></Patient>"
    )
    div = xml_to_json(xml)["text"]["div"]
    assert div == (
        f'<div xmlns="{XHTML}"><p>Hello <b>world</b> &amp; &lt;friends&gt;</p></div>'
    )
    out = etree.fromstring(json_to_xml({"resourceType": "Patient", "text": {
        "status": "generated", "div": div}}))
    written = out.find(f"{{{FHIR}}}text/{{{XHTML}}}div")
    assert written is not None
    assert etree.tostring(written, encoding="unicode", with_tail=False) == div


@pytest.mark.parametrize(
    "div",
    [
        "<p>no div</p>",
        "<div>no namespace</div>",
        f'<div xmlns="{XHTML}">unclosed',
        "plain text",
    ],
)
def test_json_narrative_that_is_not_an_xhtml_div_is_refused(div: str) -> None:
    resource = {"resourceType": "Patient", "text": {"status": "generated", "div": div}}
    with pytest.raises(FhirError) as caught:
        json_to_xml(resource)
    assert caught.value.code == "structure"


def test_xml_narrative_div_outside_xhtml_namespace_is_refused() -> None:
    xml = wrap('<text><status value="generated"/><div>hi</div></text>')
    with pytest.raises(FhirError, match="must be an XHTML div") as caught:
        xml_to_json(xml)
    assert caught.value.issues[0].expression == "Patient.text.div"


# --------------------------------------------------------------------- element order


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON with every object's keys in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


PATIENT = {
    "resourceType": "Patient",
    "id": "p",
    "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"},
    "text": {"status": "generated", "div": f'<div xmlns="{XHTML}">Jo</div>'},
    "extension": [{"url": "http://example.org/e", "valueCode": "x", "id": "e1"}],
    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009"}],
    "active": True,
    "name": [{"use": "official", "family": "Bloggs", "given": ["Jo"], "prefix": ["Ms"]}],
    "gender": "female",
    "birthDate": "1980-01-01",
    "_birthDate": {"extension": [{"url": "http://example.org/t", "valueTime": "10:00:00"}]},
    "address": [{"line": ["1 High St"], "city": "Leeds", "postalCode": "LS1 1AA"}],
    "generalPractitioner": [{"reference": "Organization/gp"}],
}


def test_xml_children_follow_fhir_order_whatever_the_json_key_order() -> None:
    expected = json_to_xml(PATIENT)
    root = etree.fromstring(expected)
    assert child_names(root) == [
        "id", "meta", "text", "extension", "identifier", "active", "name", "gender",
        "birthDate", "address", "generalPractitioner",
    ]
    assert child_names(root.find(f"{{{FHIR}}}name")) == ["use", "family", "given", "prefix"]
    rng = random.Random(20240101)
    for _ in range(20):
        assert json_to_xml(shuffled(PATIENT, rng)) == expected


def test_output_is_utf8_with_declaration_and_fhir_namespace() -> None:
    xml = json_to_xml({"resourceType": "Patient", "name": [{"family": "Ødegård"}]})
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert "Ødegård".encode() in xml
    assert etree.fromstring(xml).tag == f"{{{FHIR}}}Patient"


def test_fhir_comments_are_dropped() -> None:
    resource = {"resourceType": "Patient", "fhir_comments": ["hi"], "active": True}
    assert xml_to_json(json_to_xml(resource)) == {"resourceType": "Patient", "active": True}


def test_xml_comments_are_accepted_and_elements_out_of_order_refused() -> None:
    resource = xml_to_json(wrap('<!-- note --><id value="x"/><!-- and --><gender value="male"/>'))
    assert list(resource) == ["resourceType", "id", "gender"]
    with pytest.raises(FhirError, match="Patient.id is out of order") as caught:
        xml_to_json(wrap('<gender value="male"/><id value="x"/>'))
    assert caught.value.status == 400 and caught.value.issues[0].expression == "Patient.id"
    with pytest.raises(FhirError, match="out of order"):   # a repeating element split by another
        xml_to_json(wrap('<name><given value="a"/><family value="b"/><given value="c"/></name>'))


def test_text_input_with_an_encoding_declaration() -> None:
    text = "<?xml version='1.0' encoding='UTF-8'?>" + wrap('<gender value="female"/>')
    assert xml_to_json(text) == {"resourceType": "Patient", "gender": "female"}


# --------------------------------------------------------------------- errors


def assert_structure_error(data: str | bytes, message: str, expression: str | None) -> None:
    with pytest.raises(FhirError, match=message) as caught:
        xml_to_json(data)
    assert caught.value.code == "structure"
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == expression


def test_malformed_xml() -> None:
    assert_structure_error(wrap('<gender value="male">'), "Malformed XML", None)
    assert_structure_error(b"", "Malformed XML", None)


def test_wrong_namespace() -> None:
    assert_structure_error(
        '<Patient><gender value="male"/></Patient>',
        "must be in the FHIR namespace http://hl7.org/fhir \\(found no namespace\\)",
        "Patient",
    )
    assert_structure_error(
        '<Patient xmlns="http://hl7.org/fhir/R5"/>',
        "found namespace 'http://hl7.org/fhir/R5'",
        "Patient",
    )
    assert_structure_error(
        wrap('<x:gender xmlns:x="urn:other" value="male"/>'),
        "Element Patient.gender must be in the FHIR namespace",
        "Patient.gender",
    )


def test_unknown_element_names_its_path() -> None:
    assert_structure_error(
        wrap('<nmae><family value="X"/></nmae>'), "Unknown element 'nmae'", "Patient.nmae"
    )
    assert_structure_error(
        wrap('<name><family value="X"/></name><name><fmaily value="Y"/></name>'),
        "Unknown element 'fmaily' at Patient.name\\[1\\].fmaily",
        "Patient.name[1].fmaily",
    )


def test_attribute_elements_must_be_attributes() -> None:
    assert_structure_error(
        wrap('<extension><url value="http://x"/><valueString value="y"/></extension>'),
        "must be an XML attribute",
        "Patient.extension[0].url",
    )
    assert_structure_error(wrap('<gender value="male" colour="red"/>'),
                           "Unexpected attribute 'colour'", "Patient.gender")


def test_unknown_resource_type() -> None:
    assert_structure_error(wrap("", root="Patinet"), "Unknown resource type 'Patinet'", "Patinet")
    assert_structure_error(
        wrap("", root="HumanName"), "Unknown resource type 'HumanName'", "HumanName"
    )
    assert_structure_error(
        wrap("", root="DomainResource"), "Unknown resource type", "DomainResource"
    )
    assert_structure_error(
        wrap("<contained><Foo/></contained>"), "Unknown resource type 'Foo'", "Patient.contained[0]"
    )


def test_structure_rules() -> None:
    assert_structure_error(wrap("<gender>male</gender>"), "must not contain text", "Patient.gender")
    assert_structure_error(
        wrap('<gender value="male"/><gender value="female"/>'),
        "occurs more than once but does not repeat",
        "Patient.gender",
    )
    assert_structure_error(wrap("<gender/>"), "neither a value attribute nor extensions",
                           "Patient.gender")
    assert_structure_error(wrap("<maritalStatus/>"), "is empty", "Patient.maritalStatus")


@pytest.mark.parametrize(
    "document",
    [
        # Billion laughs: nested internal entities.
        '<!DOCTYPE Patient [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        f'<Patient xmlns="{FHIR}"><gender value="&b;"/></Patient>',
        # XXE: an external entity reading a local file.
        '<!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        f'<Patient xmlns="{FHIR}"><gender value="&x;"/></Patient>',
        # A bare DOCTYPE, even harmless, has no place in FHIR XML.
        f'<!DOCTYPE Patient><Patient xmlns="{FHIR}"><gender value="male"/></Patient>',
    ],
)
def test_dtds_and_entities_are_refused(document: str) -> None:
    with pytest.raises(FhirError) as caught:
        xml_to_json(document)
    assert caught.value.code == "structure"
    assert "root:" not in str(caught.value)


def test_json_errors_name_the_element() -> None:
    with pytest.raises(FhirError, match="Unknown element 'nmae'") as caught:
        json_to_xml({"resourceType": "Patient", "nmae": [{"family": "X"}]})
    assert caught.value.issues[0].expression == "Patient.nmae"

    with pytest.raises(FhirError, match="Unknown element '_name'"):
        json_to_xml({"resourceType": "Patient", "_name": [{"id": "x"}]})

    with pytest.raises(FhirError, match="Unknown resource type 'Patinet'"):
        json_to_xml({"resourceType": "Patinet"})

    with pytest.raises(FhirError, match="has no resourceType"):
        json_to_xml({"id": "x"})

    with pytest.raises(FhirError, match="Unknown resource type 'Foo'") as caught:
        json_to_xml({"resourceType": "Patient", "contained": [{"resourceType": "Foo"}]})
    assert caught.value.issues[0].expression == "Patient.contained[0]"

    with pytest.raises(FhirError, match="characters XML cannot represent"):
        json_to_xml({"resourceType": "Patient", "gender": "ma\x00le"})
