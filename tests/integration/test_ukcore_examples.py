"""Every UK Core example (XML) is accepted by the API, reads back in JSON and in XML, and
equals what was sent apart from meta."""
from __future__ import annotations

from decimal import Decimal

import pytest
from lxml import etree

from hub.fhir import jsontext
from hub.fhir.resources import is_supported
from hub.fhir.xml import xml_to_json
from tests.shared_data import UKCORE_EXAMPLES

XML = "application/fhir+xml"
EXAMPLES = sorted(UKCORE_EXAMPLES.glob("*.xml"))


def _type_of(path) -> str:
    return etree.QName(etree.parse(str(path)).getroot()).localname


def _without_meta(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "meta"}


def _exact(node):
    """Numbers compared by their digits (1.50 is not 1.5 in FHIR; JSON cannot tell the decimal 5
    from the integer 5), everything else by value."""
    if isinstance(node, dict):
        return {k: _exact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_exact(v) for v in node]
    if isinstance(node, (int, Decimal)) and not isinstance(node, bool):
        return ("number", str(node))
    return node


# Examples that are not valid R4, refused with the location of the fault.
INVALID = {
    # Extension.value[x] appears twice (valueCode and valueCodeableConcept).
    "Extension-UKCore-ConditionEpisode-Example": "Condition.extension[0]",
    # Elements out of FHIR's XML order (xml.html: the order is fixed): status before text, text
    # before meta, an item's linkId before its extension.
    "Extension-UKCore-CodingSCT-IllicitDrugs-Example": "Observation.text",
    "UKCore-Observation-Lab-Albumin-Example": "Observation.meta",
    "UKCore-Questionnaire-EOLPlan-Example": "Questionnaire.item[0].item[0].item[0].extension",
}
# Valid R4, but refused (422) by an IPC rule: a real finding in UK Core's example data.
REFUSED_BY_IPC = {
    # NHS number 9912003890 fails the Modulus 11 check (its check digit would be 6) although the
    # example marks it "Number present and verified"; every Patient with an NHS number is in the
    # IPC Patient profile's scope (rule ipc-nhs-1).
    "UKCore-Patient-BabyPatient-Example": ("ipc-nhs-1", "Patient.identifier[0].value"),
}
# Only the hub writes AuditEvents (hub.audit): the API refuses them with 405 (tests/integration/test_audit.py).
WRITTEN_BY_THE_HUB = {"AuditEvent"}
# A Subscription is read as one the hub must deliver (hub/subscriptions): the status is the hub's
# to set, and a criteria search must be one the hub can run. UK Core's example names the element
# `generalPractitioner` where the R4 search parameter is `general-practitioner`: refused, 422.
SUBSCRIPTION_EXAMPLE = "Extension-UKCore-SubscriptionParameters-Example"
STORABLE = [p for p in EXAMPLES
            if is_supported(_type_of(p)) and p.stem not in INVALID and p.stem not in REFUSED_BY_IPC
            and _type_of(p) not in WRITTEN_BY_THE_HUB and p.stem != SUBSCRIPTION_EXAMPLE]


def test_the_examples_are_there():
    assert len(EXAMPLES) >= 200
    unsupported = {_type_of(p) for p in EXAMPLES if not is_supported(_type_of(p))}
    assert unsupported == {"OperationOutcome"}  # an interaction's answer, not part of a record


def test_unsupported_type_example_is_refused(fhir):
    outcome = next(p for p in EXAMPLES if _type_of(p) == "OperationOutcome")
    r = fhir.post("/OperationOutcome", content=outcome.read_bytes(),
                  headers={"Content-Type": XML})
    assert r.status_code == 404


@pytest.mark.parametrize("stem", sorted(INVALID))
def test_invalid_example_is_refused_with_its_location(fhir, stem):
    path = UKCORE_EXAMPLES / f"{stem}.xml"
    r = fhir.post(f"/{_type_of(path)}", content=path.read_bytes(), headers={"Content-Type": XML})
    assert r.status_code == 400
    assert INVALID[stem] in r.json()["issue"][0]["expression"]
    assert fhir.get(f"/{_type_of(path)}", params={"_id": path.stem}).json()["total"] == 0  # nothing stored


@pytest.mark.parametrize("stem", sorted(REFUSED_BY_IPC))
def test_example_breaking_an_ipc_rule_is_refused(fhir, stem):
    rule, location = REFUSED_BY_IPC[stem]
    sent = (UKCORE_EXAMPLES / f"{stem}.xml").read_bytes()
    r = fhir.post(f"/{xml_to_json(sent)['resourceType']}", content=sent, headers={"Content-Type": XML})
    assert r.status_code == 422
    assert any(rule in i["diagnostics"] and location in i["expression"] for i in r.json()["issue"])


def test_the_subscription_example_is_checked_as_a_subscription_the_hub_must_deliver(fhir):
    sent = (UKCORE_EXAMPLES / f"{SUBSCRIPTION_EXAMPLE}.xml").read_bytes()
    r = fhir.post("/Subscription", content=sent, headers={"Content-Type": XML})
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Subscription.criteria"] and "generalPractitioner" in issue["diagnostics"]


@pytest.mark.parametrize("path", STORABLE, ids=lambda p: p.stem)
def test_example_round_trips_through_the_api(operator, hold_referenced, path):
    # An operator: an Organization example may replace a placeholder that has no identifiers yet,
    # and changing an Organization's identifiers is an operator's act (hub/consent/README.md).
    fhir = operator
    sent_xml = path.read_bytes()
    expected = xml_to_json(sent_xml)
    hold_referenced([expected])  # the resources it refers to (other examples, or none in the set)
    res_type = expected["resourceType"]
    headers = {"Content-Type": XML, "Accept": XML}
    if "id" in expected:
        r = fhir.put(f"/{res_type}/{expected['id']}", content=sent_xml, headers=headers)
        assert r.status_code in (200, 201), r.text
    else:
        r = fhir.post(f"/{res_type}", content=sent_xml, headers=headers)
        assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith(XML)
    stored_id = xml_to_json(r.content)["id"]

    as_json = fhir.get(f"/{res_type}/{stored_id}", headers={"Accept": "application/fhir+json"})
    assert as_json.status_code == 200
    got = jsontext.loads(as_json.content)
    assert got["meta"]["versionId"]
    expected_body = _exact(_without_meta(expected) | {"id": stored_id})
    assert _exact(_without_meta(got)) == expected_body

    as_xml = fhir.get(f"/{res_type}/{stored_id}", params={"_format": "xml"})
    assert as_xml.headers["Content-Type"].startswith(XML)
    assert _exact(_without_meta(xml_to_json(as_xml.content))) == expected_body
    # meta the example carried (profiles, tags) is kept beside the server's versionId.
    for key, value in (expected.get("meta") or {}).items():
        if key not in ("versionId", "lastUpdated"):
            assert got["meta"][key] == value
