"""The published handover schema and its checks, as pure functions: the samples in
connectors/mod/samples are valid, each bad sample is refused with its specific problem at its
JSON pointer, check digits are verified, and the schema's enumerations are the IPC codes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.mod import document
from hub.fhir.errors import FhirError

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "mod" / "samples"
PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def refusal(body: bytes) -> FhirError:
    with pytest.raises(FhirError) as caught:
        document.check(body)
    return caught.value


def test_schema_is_draft_2020_12_with_a_versioned_id():
    schema = document.schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == document.SCHEMA_ID
    assert schema["$id"].startswith("https://ipc-hub.example.org/fhir/schema/") and schema["$id"].endswith("/1.0")


@pytest.mark.parametrize("name", ["handover-full", "handover-minimal"])
def test_good_samples_are_valid(name):
    assert document.check((SAMPLES / f"{name}.json").read_bytes()) == sample(name)


def _leaves(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}/{key}")
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value, f"{path}/*")
    else:
        yield path


def _schema_fields(schema, node=None, path=""):
    node = schema if node is None else node
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if node.get("type") == "object":
        for key, child in node["properties"].items():
            yield from _schema_fields(schema, child, f"{path}/{key}")
    elif node.get("type") == "array" and isinstance(node.get("items"), dict):
        yield from _schema_fields(schema, node["items"], f"{path}/*")
    else:
        yield path


def test_full_sample_covers_every_field_the_schema_defines():
    defined = set(_schema_fields(document.schema()))
    used = set(_leaves(sample("handover-full")))
    # data and url are alternatives: the sample's two documents use one each.
    assert defined - used == set(), defined - used


@pytest.mark.parametrize(("name", "code", "pointers"), [
    ("nhs-number-mod11", "value", ["/person/nhsNumber"]),
    ("snomed-check-digit", "code-invalid", ["/conditions/1/snomedCode"]),
    ("unknown-life-area", "code-invalid", ["/documents/0/goals/0/lifeArea"]),
    ("schema-violations", None, ["/extra", "/person/serviceNumber", "/service/branch"]),
])
def test_each_bad_sample_gets_its_specific_error(name, code, pointers):
    error = refusal((SAMPLES / "bad" / f"{name}.json").read_bytes())
    assert error.status == 422
    assert [i.expression for i in error.issues] == pointers
    if code:
        assert error.issues[0].code == code
    else:
        assert [i.code for i in error.issues] == ["structure", "required", "code-invalid"]
    assert all(i.diagnostics.startswith(i.expression) for i in error.issues)


def test_wrong_encoding_and_truncation_are_400():
    latin = refusal((SAMPLES / "bad" / "latin1.json").read_bytes())
    assert latin.status == 400 and latin.code == "structure" and "not UTF-8" in latin.issues[0].diagnostics
    cut = refusal((SAMPLES / "bad" / "truncated.json").read_bytes())
    assert cut.status == 400 and "not JSON" in cut.issues[0].diagnostics
    assert refusal(b"[1, 2]").issues[0].expression == "/"


def test_every_problem_is_listed_not_just_the_first():
    doc = sample("handover-full")
    doc["person"]["nhsNumber"] = "9994500008"
    doc["conditions"][0]["snomedCode"] = "90584005"
    doc["destination"]["address"]["postcode"] = "not a postcode"
    del doc["welfareManager"]["name"]
    error = refusal(json.dumps(doc).encode())
    assert [i.expression for i in error.issues] == [
        "/conditions/0/snomedCode", "/destination/address/postcode", "/person/nhsNumber", "/welfareManager/name"]


@pytest.mark.parametrize(("code", "valid"), [
    ("47505003", True), ("90584004", True), ("125605004", True), ("22298006", True),
    ("47505004", False), ("47550003", False),  # a digit mistyped, two digits swapped
    ("47505023", False),  # partition 02 is a relationship id, not a concept
])
def test_snomed_concept_ids_are_verhoeff_checked(code, valid):
    assert document.is_snomed_concept_id(code) is valid


def test_envelope_is_keyed_by_nhs_number_else_service_number():
    full = document.envelope_meta(sample("handover-full"), "mod-handover")
    assert full == {"source": "mod-handover", "kind": "mod-handover", "person_key": "nhs:9994500007",
                    "content_type": "application/json", "correlation_id": "HO-2026-000417"}
    assert document.envelope_meta(sample("handover-minimal"), "mod-handover")["person_key"] == "mod:RN4471X"


def _codes(system: str) -> set[str]:
    def walk(concepts):
        for c in concepts:
            yield c["code"]
            yield from walk(c.get("concept", []))
    return set(walk(json.loads((PROFILES / "CodeSystem" / f"{system}.json").read_text())["concept"]))


def test_enumerations_are_the_ipc_codes():
    schema = document.schema()
    props = schema["properties"]
    assert set(props["service"]["properties"]["branch"]["enum"]) == _codes("ipc-service-branch")
    assert set(props["service"]["properties"]["recoveryPathwayStatus"]["enum"]) == _codes("ipc-recovery-pathway-status")
    assert set(schema["$defs"]["lifeArea"]["enum"]) == _codes("ipc-life-area")
    share = props["consentToShare"]["properties"]["share"]["items"]["properties"]
    assert set(share["partner"]["enum"]) == _codes("ipc-consent-partner")
    assert set(share["parts"]["items"]["enum"]) == _codes("ipc-record-part")
    formal = set(props["documents"]["items"]["properties"]["kind"]["enum"]) - {"assessment"}
    assert formal == _codes("ipc-formal-plan-type")


def test_text_the_record_cannot_hold_is_refused_before_acceptance() -> None:
    """A NUL in a name was answered 202 and then stopped the recorder (issue 19): it is a 422
    naming where it is, at the connector."""
    import json as _json
    from pathlib import Path as _Path

    import connectors.mod as _mod
    from connectors.mod import document as _document
    from hub.fhir.errors import FhirError as _FhirError

    sample = _json.loads((_Path(_mod.__file__).parent / "samples" / "handover-minimal.json").read_text())
    sample["person"]["name"]["family"] = "Smi\u0000th"
    try:
        _document.check(_json.dumps(sample).encode())
    except _FhirError as error:
        assert error.status == 422
        assert any(i.expression == "/person/name/family" and "control characters" in i.diagnostics
                   for i in error.issues)
    else:
        raise AssertionError("a NUL in a name was accepted")
