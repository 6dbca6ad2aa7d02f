"""Each base-specification rule on each write path of the API, over real HTTP: create, update,
conditional update, a transaction entry and a batch entry are refused with the rule's status and
FHIRPath location, and nothing is stored; bodies nested without end are a 400, never a 500.
(The recorder's path is in tests/pipeline/test_validation_recorder.py.)"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from hub.fhir.jsontext import dumps

JSON = {"Content-Type": "application/fhir+json"}
TEST_SYSTEM = "urn:ietf:rfc:3986"
XHTML = "http://www.w3.org/1999/xhtml"


def _patient(marker: str, **changes: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": TEST_SYSTEM, "value": f"urn:uuid:{marker}"}],
            "name": [{"family": "Okafor", "given": ["Dee"]}], **changes}


def _nested(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "https://example.org/x", "valueString": "leaf"}
    for _ in range(levels):
        extension = {"url": "https://example.org/x", "extension": [extension]}
    return extension


# rule: (change to a valid Patient, status, issue code, FHIRPath location)
RULES: dict[str, tuple[Callable[[], dict[str, Any]], int, str, str]] = {
    "required-binding": (lambda: {"gender": "banana"}, 422, "code-invalid", "Patient.gender"),
    "invariant-ref-1": (lambda: {"generalPractitioner": [{"reference": "#nowhere"}]}, 422, "invariant",
                        "Patient.generalPractitioner[0]"),
    "invariant-per-1": (lambda: {"contact": [{"name": {"family": "A"},
                                              "period": {"start": "2024-02-01", "end": "2024-01-01"}}]},
                        422, "invariant", "Patient.contact[0].period"),
    "narrative-script": (lambda: {"text": {"status": "generated", "div":
                                           f'<div xmlns="{XHTML}"><script>steal()</script>Dee</div>'}},
                         422, "invariant", "Patient.text.div"),
    "nul-character": (lambda: {"name": [{"family": "Oka\u0000for"}]}, 400, "structure", "Patient.name[0].family"),
    "empty-array": (lambda: {"telecom": []}, 400, "structure", "Patient.telecom"),
    "nesting": (lambda: {"extension": [_nested(120)]}, 400, "structure", "Patient.extension[0]"),
}


def _stored(fhir, marker: str) -> int:
    return fhir.get("/Patient", params={"identifier": f"{TEST_SYSTEM}|urn:uuid:{marker}",
                                        "_summary": "count"}).json()["total"]


def _issue_at(issues: list[dict], code: str, location: str) -> bool:
    return any(i["code"] == code and any(e.startswith(location) for e in i.get("expression", []))
               for i in issues)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("path", ["create", "update", "conditional-update", "transaction", "batch"])
def test_a_rule_refuses_on_every_write_path_and_nothing_is_stored(fhir, rule, path):
    change, status, code, location = RULES[rule]
    marker = str(uuid.uuid4())
    resource = _patient(marker, **change())
    if path == "create":
        r = fhir.post("/Patient", content=dumps(resource), headers=JSON)
        got_status, issues = r.status_code, r.json()["issue"]
    elif path == "update":
        r = fhir.put(f"/Patient/{marker}", content=dumps({**resource, "id": marker}), headers=JSON)
        got_status, issues = r.status_code, r.json()["issue"]
    elif path == "conditional-update":
        r = fhir.put("/Patient", params={"identifier": f"{TEST_SYSTEM}|urn:uuid:{marker}"},
                     content=dumps(resource), headers=JSON)
        got_status, issues = r.status_code, r.json()["issue"]
    else:
        good = _patient(marker + "-good")
        bundle = {"resourceType": "Bundle", "type": path, "entry": [
            {"resource": good, "request": {"method": "POST", "url": "Patient"}},
            {"resource": resource, "request": {"method": "POST", "url": "Patient"}}]}
        r = fhir.post("", content=dumps(bundle), headers=JSON)
        if path == "transaction":
            got_status, issues = r.status_code, r.json()["issue"]
            assert "Bundle.entry[1]" in issues[0]["diagnostics"]
            assert _stored(fhir, marker + "-good") == 0          # all or nothing
            location = "Bundle.entry[1].resource" + location[len("Patient"):]   # placed in its entry
        else:
            assert r.status_code == 200
            first, second = (e["response"] for e in r.json()["entry"])
            assert first["status"].startswith("201") and _stored(fhir, marker + "-good") == 1
            got_status, issues = int(second["status"].split()[0]), second["outcome"]["issue"]
    assert got_status == status, issues
    assert _issue_at(issues, code, location), issues
    assert _stored(fhir, marker) == 0
    assert fhir.get(f"/Patient/{marker}").status_code == 404


def _deep_arrays(depth: int) -> bytes:
    return b'{"resourceType": "Patient", "extension": ' + b"[" * depth + b"]" * depth + b"}"


def _deep_extensions(depth: int) -> bytes:
    head = b'{"url": "https://example.org/x", "extension": ['
    return (b'{"resourceType": "Patient", "extension": [' + head * depth + b'{"url": "https://example.org/x", '
            b'"valueString": "leaf"}' + b"]}" * depth + b"]}")


@pytest.mark.parametrize("body", [_deep_arrays(100_000), _deep_extensions(5_000)], ids=["arrays", "extensions"])
@pytest.mark.parametrize("path", ["create", "update", "transaction", "validate"])
def test_endless_nesting_is_a_400_with_an_outcome(fhir, body, path):
    if path == "create":
        r = fhir.post("/Patient", content=body, headers=JSON)
    elif path == "update":
        r = fhir.put("/Patient/deep", content=body, headers=JSON)
    elif path == "validate":
        r = fhir.post("/Patient/$validate", content=body, headers=JSON)
    else:
        bundle = b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", ' \
                 b'"url": "Patient"}, "resource": ' + body + b"}]}"
        r = fhir.post("", content=bundle, headers=JSON)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome" and "nested" in r.json()["issue"][0]["diagnostics"]


def test_a_nul_character_is_refused_in_xml_as_in_json(fhir):
    # XML 1.0 cannot carry U+0000 at all, not even as &#0;: the parser refuses it.
    xml = ('<Patient xmlns="http://hl7.org/fhir"><name><family value="Oka&#0;for"/></name></Patient>').encode()
    r = fhir.post("/Patient", content=xml, headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "structure"


def test_duplicate_json_properties_and_other_encodings_are_refused(fhir):
    r = fhir.post("/Patient", content=b'{"resourceType": "Patient", "gender": "male", "gender": "female"}',
                  headers=JSON)
    assert r.status_code == 400 and "appears more than once" in r.json()["issue"][0]["diagnostics"]
    r = fhir.post("/Patient", content='{"resourceType": "Patient"}'.encode("utf-16"), headers=JSON)
    assert r.status_code == 400 and "UTF-8" in r.json()["issue"][0]["diagnostics"]


def test_validate_answers_as_the_write_does_with_warnings(fhir):
    marker = str(uuid.uuid4())
    bad = _patient(marker, gender="banana")
    written = fhir.post("/Patient", content=dumps(bad), headers=JSON)
    checked = fhir.post("/Patient/$validate", content=dumps(bad), headers=JSON)
    assert written.status_code == 422 and checked.status_code == 200
    errors = [i for i in checked.json()["issue"] if i["severity"] == "error"]
    assert [(i["code"], i["expression"]) for i in errors] == \
        [(i["code"], i["expression"]) for i in written.json()["issue"]]
    extensible = _patient(marker, maritalStatus={"coding": [{"system": "https://example.org/m", "code": "x"}]})
    issues = fhir.post("/Patient/$validate", content=dumps(extensible), headers=JSON).json()["issue"]
    assert [i["severity"] for i in issues if i.get("expression") == ["Patient.maritalStatus"]] == ["warning"]
    assert fhir.post("/Patient", content=dumps(extensible), headers=JSON).status_code == 201
