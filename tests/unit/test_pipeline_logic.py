"""Pure parts of the pipeline: envelopes, ConceptMap translation, NHS numbers, demographic
scores, the FHIR-Bundle mapping, the dead-letter limit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.bus.envelope import Envelope, EnvelopeError, from_record
from hub.bus.kafka import BusSettings
from hub.bus.worker import (
    DlqLimitExceeded,
    Message,
    Outcome,
    Rejected,
    Worker,
    dead_letter,
)
from hub.fhir.conceptmap import ConceptMap
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import is_valid_nhs_number as valid_nhs_number
from hub.identity.matching import demographic_score
from hub.pipeline.registry import Registry
from mappings.fhir_bundle import map_bundle, map_merge

CONCEPTMAP = Path(__file__).parents[2] / "mappings/fhir_bundle/conceptmaps/partner-local-to-snomed.json"
LOCAL = "https://ipc-hub.example.org/fhir/CodeSystem/partner-local-codes"


def test_envelope_round_trips_any_bytes_and_refuses_unknown_versions():
    payload = bytes(range(256))  # not UTF-8: carried untouched as the record value
    sent = Envelope(source="gp", kind="hl7v2-adt", payload=payload, person_key="k1", correlation_id="c9")
    got = from_record(sent.payload, sent.headers())
    assert got == sent
    headers = [(k, b"2" if k == "ipc-schema" else v) for k, v in sent.headers()]
    with pytest.raises(EnvelopeError, match="schema version"):
        from_record(payload, headers)
    with pytest.raises(EnvelopeError, match="lacks"):
        from_record(payload, [("ipc-schema", b"1")])


def test_conceptmap_adds_the_target_beside_the_source_code():
    cm = ConceptMap(json.loads(CONCEPTMAP.read_text()))
    assert [c.code for c in cm.translate(LOCAL, "BP")] == ["75367002"]
    assert cm.translate(LOCAL, "nope") == []
    concept = cm.translate_concept({"coding": [{"system": LOCAL, "code": "WT"}]})
    assert [c["code"] for c in concept["coding"]] == ["WT", "27113001"]


def test_nhs_number_modulus_11():
    assert valid_nhs_number("9990000018")
    assert not valid_nhs_number("9990000017")
    assert not valid_nhs_number("999000001")
    assert not valid_nhs_number("999000001X")


def test_demographic_score_weighs_names_birth_date_and_postcode():
    a = {"birthDate": "1980-01-01", "name": [{"family": "Jones", "given": ["Sam"]}], "gender": "female",
         "address": [{"postalCode": "NG1 1AA"}]}
    assert demographic_score(a, dict(a)) == 1.0
    assert demographic_score(a, {**a, "name": [{"family": "Smith", "given": ["Kim"]}]}) == 0.5
    assert demographic_score(a, {**a, "name": [{"family": "JONES", "given": ["Sám"]}]}) == 1.0


def test_fhir_bundle_mapping_rekeys_deterministically_and_follows_references():
    partner = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "local-7"}},
        {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                      "code": {"coding": [{"system": LOCAL, "code": "HR"}]},
                      "subject": {"reference": "urn:uuid:1"}}}]}
    first = map_bundle(json.dumps(partner).encode(), "gp-x")
    again = map_bundle(json.dumps(partner).encode(), "gp-x")
    other = map_bundle(json.dumps(partner).encode(), "charity-y")
    assert first == again
    patient_id = first["entry"][0]["resource"]["id"]
    assert patient_id != other["entry"][0]["resource"]["id"]
    observation = first["entry"][1]["resource"]
    assert observation["subject"]["reference"] == f"Patient/{patient_id}"
    assert {"system": "http://snomed.info/sct", "code": "364075005", "display": "Heart rate"} in observation["code"]["coding"]
    assert first["entry"][1]["request"] == {"method": "PUT", "url": f"Observation/{observation['id']}"}


def test_fhir_bundle_mapping_refuses_what_it_cannot_map():
    with pytest.raises(FhirError) as caught:
        map_bundle(b"not json", "gp")
    assert caught.value.code == "structure"
    untyped = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"id": "o"}}]}
    with pytest.raises(FhirError):
        map_bundle(json.dumps(untyped).encode(), "gp")
    # A resource FHIR forbids is the recorder's to refuse (tests/pipeline/test_validation_recorder.py).
    bogus = {"resourceType": "Bundle", "type": "collection",
             "entry": [{"resource": {"resourceType": "Observation", "id": "o", "status": "bogus"}}]}
    assert map_bundle(json.dumps(bogus).encode(), "gp")["entry"][0]["resource"]["status"] == "bogus"
    with pytest.raises(FhirError):
        map_merge(b"{}", "gp")


def test_registry_finds_mappings_by_name_and_source_override():
    registry = Registry(["mappings.fhir_bundle"])
    assert registry.find("any", "fhir-bundle") is map_bundle
    assert registry.find("any", "unknown") is None


def _message(offset: int) -> Message:
    return Message("t.inbound", 0, offset, b"k", b"v", [("ipc-id", b"x")], 0)


def test_dead_letter_carries_reason_step_and_original_coordinates():
    letter = dead_letter(Rejected(_message(7), "not-supported", "no mapping", "find-mapping"), "mapper", "t.dlq")
    headers = dict(letter.headers)
    assert letter.value == b"v" and letter.key == b"k" and letter.topic == "t.dlq"
    assert headers["dlq-reason"] == b"not-supported" and headers["dlq-step"] == b"find-mapping"
    assert (headers["dlq-topic"], headers["dlq-partition"], headers["dlq-offset"]) == (b"t.inbound", b"0", b"7")
    assert headers["ipc-id"] == b"x"


def test_a_run_of_rejections_trips_the_dead_letter_limit():
    async def handler(batch):
        return Outcome()

    worker = Worker("mapper", BusSettings("unused:9092", dlq_max_consecutive=3), "in", "dlq", handler)
    batch = [_message(i) for i in range(3)]
    worker._check_dlq_limit(batch, Outcome(rejected=[Rejected(m, "x", "", "s") for m in batch]))
    worker._check_dlq_limit([_message(3)], Outcome())  # a success resets the run
    batch = [_message(i) for i in range(4, 8)]
    with pytest.raises(DlqLimitExceeded):
        worker._check_dlq_limit(batch, Outcome(rejected=[Rejected(m, "x", "", "s") for m in batch]))


def test_a_probable_match_always_shares_birth_date_and_family_name():
    """The review pass only looks at people sharing both (hub.store.people.candidates_for_review):
    that loses nothing as long as no other combination of fields reaches the threshold."""
    from itertools import product

    from hub.identity.matching import PROBABLE_MATCH

    base = {"birthDate": "1980-01-01", "gender": "female",
            "name": [{"family": "O'Brien", "given": ["Siobhan"]}],
            "address": [{"postalCode": "NG1 1AA"}]}
    for same_birth, same_family, same_given, same_post, same_gender in product([True, False], repeat=5):
        other = {"birthDate": "1980-01-01" if same_birth else "1990-02-02",
                 "gender": "female" if same_gender else "male",
                 "name": [{"family": "OBrien" if same_family else "Smith",
                           "given": ["Siobhan" if same_given else "Mary"]}],
                 "address": [{"postalCode": "NG1 1AA" if same_post else "LS1 1AA"}]}
        if demographic_score(base, other) >= PROBABLE_MATCH:
            assert same_birth and same_family
