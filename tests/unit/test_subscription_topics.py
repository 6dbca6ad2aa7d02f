"""The hub's SubscriptionTopics: which committed writes are events of which topic, and the
filters a subscriber may add. Pure (hub.subscriptions.topics)."""
from __future__ import annotations

import pytest

from hub.subscriptions.topics import BY_URL, TOPIC_BASE, Change, passes

IPC = "https://ipc-hub.example.org/fhir/"
HANDOVER = {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": IPC + "CodeSystem/ipc-transition", "code": "gp-registration-handover"}]},
            "for": {"reference": "Patient/p1"}, "owner": {"reference": "Organization/gp-1"},
            "restriction": {"recipient": [{"reference": "Organization/gp-1"}, {"reference": "Organization/icb-1"}]}}

AGREED = {"resourceType": "CarePlan", "status": "active", "extension": [
    {"url": IPC + "StructureDefinition/plan-agreement", "extension": [{"url": "date", "valueDateTime": "2026-02-02"}]}]}


def encounter(status: str, ward: str = "Ward 1") -> dict:
    return {"resourceType": "Encounter", "status": status, "subject": {"reference": "Patient/p1"},
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "location": [{"location": {"display": ward}}]}


def topics_of(res_type: str, method: str, part: str | None, resource: dict | None, previous: dict | None) -> set[str]:
    change = Change(res_type, "x1", method, part, resource, previous)
    return {url.removeprefix(TOPIC_BASE) for url, topic in BY_URL.items() if topic.matches(change)}


@pytest.mark.parametrize(("res_type", "method", "part", "resource", "previous", "expected"), [
    ("CarePlan", "POST", "care-support-plan", {"resourceType": "CarePlan"}, None, {"plan-changed"}),
    ("CarePlan", "PUT", "care-support-plan", {"resourceType": "CarePlan"}, {"resourceType": "CarePlan"},
     {"plan-changed"}),
    ("CarePlan", "PUT", "care-support-plan", AGREED, {"resourceType": "CarePlan", "status": "draft"},
     {"plan-changed", "plan-agreed"}),
    ("CarePlan", "PUT", "care-support-plan", AGREED, AGREED, {"plan-changed"}),              # agreed before
    ("CarePlan", "PUT", "budget", {"resourceType": "CarePlan"}, None, {"budget-statement-changed"}),
    ("CarePlan", "PUT", "health", {"resourceType": "CarePlan"}, None, set()),       # not an IPC plan
    ("CarePlan", "DELETE", "care-support-plan", None, None, set()),
    ("Encounter", "POST", "health", encounter("in-progress"), None, {"encounter-admission"}),      # A01
    ("Encounter", "PUT", "health", encounter("finished"), encounter("in-progress"), {"encounter-discharge"}),  # A03
    ("Encounter", "PUT", "health", encounter("in-progress", "Ward 2"), encounter("in-progress"),
     {"encounter-transfer"}),                                                                     # A02
    ("Encounter", "PUT", "health", encounter("in-progress"), encounter("in-progress"), set()),    # A08, no move
    ("Encounter", "PUT", "health", encounter("finished"), encounter("finished"), set()),         # repeated A03
    ("Task", "POST", "armed-forces-service", HANDOVER, None, {"mod-handover-received"}),
    ("Task", "PUT", "armed-forces-service", dict(HANDOVER, status="completed"), HANDOVER, set()),  # settled
    ("Patient", "PUT", "demographics", {"resourceType": "Patient", "link": [
        {"type": "replaced-by", "other": {"reference": "Patient/p2"}}]}, {"resourceType": "Patient"},
     {"patient-merged"}),                                                                          # A40
    ("Patient", "PUT", "demographics", {"resourceType": "Patient"}, None, set()),
])
def test_which_writes_are_events_of_which_topic(res_type, method, part, resource, previous, expected):
    assert topics_of(res_type, method, part, resource, previous) == expected


def test_filters_patient_owner_and_class():
    handover = BY_URL[TOPIC_BASE + "mod-handover-received"]
    assert passes(handover, [("owner", "Organization/gp-1")], HANDOVER, "t1")
    assert passes(handover, [("owner", "Organization/icb-1")], HANDOVER, "t1")   # a named recipient
    assert not passes(handover, [("owner", "Organization/gp-2")], HANDOVER, "t1")
    assert passes(handover, [("patient", "Patient/p9,Patient/p1")], HANDOVER, "t1")
    assert not passes(handover, [("patient", "Patient/p1"), ("owner", "Organization/gp-2")], HANDOVER, "t1")
    admission = BY_URL[TOPIC_BASE + "encounter-admission"]
    assert passes(admission, [("class", "IMP")], encounter("in-progress"), "e1")
    assert not passes(admission, [("class", "AMB")], encounter("in-progress"), "e1")
    merged = BY_URL[TOPIC_BASE + "patient-merged"]
    assert passes(merged, [("patient", "Patient/p1")], {"resourceType": "Patient"}, "p1")
