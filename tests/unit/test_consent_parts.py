"""Record parts and compartments: every resource of a person's record lands in one part, the
most sensitive reading winning, decided from type, profile, category, codes and tags."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.consent.parts import PARTS, record_part
from hub.fhir.errors import FhirError

EXAMPLES = Path(__file__).resolve().parents[2] / "profiles" / "examples"
IPC = "https://ipc-hub.example.org/fhir/"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.mark.parametrize(("name", "part"), [
    ("Patient-adult-patient", "demographics"),
    ("CarePlan-adult-plan", "care-support-plan"),
    ("CarePlan-adult-budget", "budget"),
    ("CarePlan-veteran-budget", "budget"),
    ("Goal-adult-goal-football", "care-support-plan"),
    ("CareTeam-adult-team", "care-team"),
    ("RelatedPerson-adult-wife", "carers"),
    ("Consent-adult-consent", "consent"),
    ("Flag-veteran-flag", "armed-forces-service"),
    ("Condition-veteran-spinal-injury", "armed-forces-service"),
])
def test_guide_examples_fall_in_their_part(name, part):
    assert record_part(example(name)) == part


def test_the_part_codes_are_the_code_system():
    codes = [c["code"] for c in json.loads((EXAMPLES.parent / "CodeSystem" / "ipc-record-part.json").read_text())["concept"]]
    assert tuple(codes) == PARTS


def test_safeguarding_flag_wins_over_the_flag_default():
    flag = {"resourceType": "Flag", "status": "active", "subject": {"reference": "Patient/p"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                      "code": "safety"}]}],
            "code": {"text": "Visit in pairs"}}
    assert record_part(flag) == "safeguarding"
    flag["category"] = [{"text": "Adult safeguarding"}]
    assert record_part(flag) == "safeguarding"


def test_mental_health_and_social_care_from_codes():
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                 "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "x",
                                           "display": "Mental health problem"}]}]}
    assert record_part(condition) == "mental-health"
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/p"}, "category": [{"text": "Social care support plan"}]}
    assert record_part(plan) == "social-care"


def test_a_clinical_resource_is_health_and_a_treatment_consent_is_not_the_sharing_part():
    assert record_part({"resourceType": "Observation", "code": {"text": "Blood pressure"}}) == "health"
    assert record_part({"resourceType": "Consent", "status": "active",
                        "category": [{"text": "Treatment"}]}) == "health"


def test_a_tag_may_move_a_resource_only_to_a_more_protected_part():
    obs = {"resourceType": "Observation", "code": {"text": "PHQ-9"},
           "meta": {"tag": [{"system": IPC + "CodeSystem/ipc-record-part", "code": "mental-health"}]}}
    assert record_part(obs) == "mental-health"
    obs["meta"]["tag"][0]["code"] = "safeguarding"
    assert record_part(obs) == "safeguarding"
    obs["meta"]["tag"][0]["code"] = "health"  # where the hub places it anyway
    assert record_part(obs) == "health"
    obs["meta"]["tag"][0]["code"] = "not-a-part"
    assert record_part(obs) == "health"


@pytest.mark.parametrize(("resource", "tag"), [
    # The red team's case: a record-sharing Consent filed under `demographics`.
    ({"resourceType": "Consent", "status": "active", "meta": {"profile": [IPC + "StructureDefinition/ipc-consent"]},
      "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "record-sharing"}]}]},
     "demographics"),
    ({"resourceType": "Consent", "status": "active",
      "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "record-sharing"}]}]},
     "safeguarding"),
    ({"resourceType": "Condition", "code": {"text": "Asthma"}}, "care-support-plan"),
    ({"resourceType": "Flag", "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                                          "code": "safety"}]}]}, "mental-health"),
    ({"resourceType": "Observation", "category": [{"text": "Mental health assessment"}]}, "demographics"),
])
def test_a_tag_naming_a_less_protected_part_is_refused(resource, tag):
    tagged = {**resource, "meta": {**resource.get("meta", {}),
                                   "tag": [{"system": IPC + "CodeSystem/ipc-record-part", "code": tag}]}}
    with pytest.raises(FhirError) as refused:
        record_part(tagged)
    assert refused.value.status == 422 and refused.value.code == "business-rule"
    assert tag in refused.value.issues[0].diagnostics


def test_armed_forces_service_extension_places_a_condition():
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                 "extension": [{"url": IPC + "StructureDefinition/Extension-armed-forces-service",
                                "valueBoolean": True}]}
    assert record_part(condition) == "armed-forces-service"


def test_a_request_made_for_a_plan_is_part_of_the_plan_unless_it_is_sensitive():
    offer = {"resourceType": "ServiceRequest", "status": "active", "intent": "proposal",
             "subject": {"reference": "Patient/p"}, "basedOn": [{"reference": "CarePlan/plan-1"}],
             "code": {"text": "Weekly peer support group"}}
    assert record_part(offer) == "care-support-plan"
    assert record_part({**offer, "basedOn": [{"reference": "ServiceRequest/other"}]}) == "health"
    referral = {**offer, "code": {"text": "Referral to community mental health team"}}
    assert record_part(referral) == "mental-health"
