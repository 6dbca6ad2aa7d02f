"""Where data about a person is placed, whichever way it points at them (hub.consent.placement):
pure decisions from a resource's pointers and what the store found."""
from __future__ import annotations

from hub.consent.placement import NOWHERE, Place, decide, pointers
from hub.fhir.identifiers import NHS_NUMBER
from hub.search.extract import index_rows

NHS = (NHS_NUMBER, "9990000018")
WRITER = "https://ipc-hub.example.org/fhir/Id/charity-number|1234567"


def place(resource: dict, *, people=None, entries=None, owners=None) -> Place:
    found = pointers(resource["resourceType"], resource.get("id", "x"), resource, index_rows(resource))
    return decide(found, people=people or {}, entry_places=entries or {}, owners=owners or {}, writer=WRITER)


def test_a_logical_reference_by_nhs_number_lands_in_that_persons_record():
    doc = {"resourceType": "DocumentReference", "status": "current",
           "subject": {"identifier": {"system": NHS_NUMBER, "value": NHS[1]}}}
    assert place(doc, people={NHS: "p1"}) == Place("p1", "health")


def test_an_identifier_nobody_the_writer_may_see_holds_keeps_the_data_with_its_writer():
    doc = {"resourceType": "DocumentReference", "status": "current",
           "subject": {"identifier": {"system": NHS_NUMBER, "value": NHS[1]}}}
    assert place(doc, people={NHS: None}) == Place(None, "health", WRITER)


def test_a_contained_patient_without_a_matched_identifier_cannot_be_placed():
    condition = {"resourceType": "Condition", "subject": {"reference": "#p"}, "code": {"text": "PTSD"},
                 "contained": [{"resourceType": "Patient", "id": "p", "name": [{"family": "X"}]}]}
    assert place(condition).owner == WRITER and place(condition).patient_id is None


def test_a_bundle_takes_its_entries_people_and_most_protected_part():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Goal", "subject": {"reference": "Patient/p1"}, "description": {"text": "x"}}},
        {"resource": {"resourceType": "Flag", "status": "active", "subject": {"reference": "Patient/p1"},
                      "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                                "code": "safety"}]}], "code": {"text": "concern"}}}]}
    assert place(bundle) == Place("p1", "safeguarding")


def test_a_group_of_two_people_is_nobodys_record_and_stays_with_its_writer():
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p2"}}]}
    assert place(group).owner == WRITER
    one = {**group, "member": group["member"][:1]}
    assert place(one).patient_id == "p1" and place(one).owner is None


def test_a_provenance_sits_with_what_it_is_about_or_apart_when_that_spans_places():
    prov = {"resourceType": "Provenance", "target": [{"reference": "Goal/g"}, {"reference": "Procedure/s"}]}
    entries = {("Goal", "g"): Place("p1", "care-support-plan"), ("Procedure", "s"): Place("p1", "social-care")}
    # Two parts of equal standing cannot be ranked: kept with its writer, in nobody's record.
    spanning = place(prov, entries=entries)
    assert spanning.owner == WRITER and spanning.patient_id is None
    assert place({**prov, "target": prov["target"][:1]}, entries=entries) == Place("p1", "care-support-plan")


def test_an_organisation_is_in_nobodys_record():
    assert place({"resourceType": "Organization", "name": "GP"}) == NOWHERE
