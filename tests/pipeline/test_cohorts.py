"""Cohort identification end to end through the real bus: the API writes a synthetic population,
the outbox relay publishes change events to the real broker, and the cohort worker (a real
`ipc-hub worker cohorts` process) keeps each approved definition's member Group and offers up to
date. The expected members are computed from how the population was built, never from the hub."""
from __future__ import annotations

import pytest

from tests.factories import patient
from tests.pipeline.cohort_cases import (
    FHIRPATH,
    LONG_TERM,
    characteristic,
    complex_needs,
    condition,
    definition,
    multiple_conditions,
    population,
    population_bundle,
)
from tests.pipeline.conftest import wait_for, worker_env

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/fhir+json"}
MEMBERSHIP = "https://ipc-hub.example.org/fhir/StructureDefinition/cohort-membership"


def _write_population(fhir, size: int):
    people = population(size)
    reply = fhir.post("", json=population_bundle(people), headers=JSON)
    assert reply.status_code == 200, reply.text[:500]
    locations = [e["response"]["location"] for e in reply.json()["entry"]]
    ids = iter(loc.split("/")[1] for loc in locations if loc.startswith("Patient/"))
    for person in people:
        person.resource["id"] = next(ids)
    return people


def _active(group: dict) -> set[str]:
    return {m["entity"]["reference"].split("/")[1] for m in group.get("member", [])
            if not m.get("inactive") and not m.get("period", {}).get("end")}


def _group(fhir, gid: str) -> dict | None:
    reply = fhir.get(f"/Group/{gid}")
    return reply.json() if reply.status_code == 200 else None


def _offers(fhir, gid: str) -> list[dict]:
    bundle = fhir.get("/Task", params={"focus": f"Group/{gid}", "_count": 1000}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


@pytest.fixture()
def cohort_pipeline(clean_db, bus, workers):
    env = worker_env(bus, clean_db)
    workers.start("relay", env)
    workers.start("cohorts", env)
    return workers


def test_a_definition_finds_exactly_the_right_people_and_follows_their_records(clean_db, fhir, cohort_pipeline):
    people = _write_population(fhir, 120)
    expected = {p.resource["id"] for p in people if p.multimorbid()}
    assert 5 < len(expected) < 100  # the population holds both members and non-members
    assert fhir.put("/Group/def-mltc", json=multiple_conditions(), headers=JSON).status_code == 201

    # The definition's own change event evaluates it for everyone.
    group = wait_for(lambda: (g := _group(fhir, "cohort-def-mltc")) and _active(g) == expected and g,
                     90, "the member Group to hold exactly the expected people")
    assert group["actual"] is True and group["quantity"] == len(expected)
    assert group["extension"][0]["valueReference"]["reference"] == "Group/def-mltc/_history/1"
    member = group["member"][0]
    why = next(e for e in member["extension"] if e["url"] == MEMBERSHIP)["extension"][0]
    assert why["url"] == "entered" and "two or more active long-term conditions" in why["valueString"]
    assert member["period"]["start"]
    # The dead were excluded, and the living among them with two conditions are in.
    dead_but_eligible = {p.resource["id"] for p in people if p.deceased and p.active_long_term() >= 2}
    assert not dead_but_eligible & _active(group)

    # One offer per member, for their coordinator's team to make, in their language where known.
    offers = wait_for(lambda: len(o := _offers(fhir, "cohort-def-mltc")) == len(expected) and o, 60,
                      "one offer Task per member")
    assert {o["for"]["reference"].split("/")[1] for o in offers} == expected
    assert all(o["status"] == "requested" and o["code"]["coding"][0]["code"] == "offer-ipc" for o in offers)
    polish = {p.resource["id"] for p in people if p.n % 7 == 0} & expected
    for offer in offers:
        language = [i for i in offer.get("input", []) if i["type"]["text"] == "preferred language"]
        if offer["for"]["reference"].split("/")[1] in polish:
            assert language[0]["valueCodeableConcept"]["coding"][0]["code"] == "pl"
        else:
            assert not language

    # A member's condition resolves: they leave (with why), and their offer not yet made is withdrawn.
    leaver = sorted(expected)[0]
    conditions = fhir.get("/Condition", params={"subject": f"Patient/{leaver}", "clinical-status": "active",
                                                "_count": 50}).json()["entry"]
    for entry in conditions:
        resource = entry["resource"]
        resource["clinicalStatus"]["coding"][0]["code"] = "resolved"
        assert fhir.put(f"/Condition/{resource['id']}", json=resource, headers=JSON).status_code == 200
    group = wait_for(lambda: (g := _group(fhir, "cohort-def-mltc")) and leaver not in _active(g) and g, 60,
                     "the person to leave the cohort")
    left = [m for m in group["member"] if m["entity"]["reference"] == f"Patient/{leaver}"]
    assert left[0]["inactive"] is True and left[0]["period"]["end"]
    reasons = [e for e in next(e for e in left[0]["extension"] if e["url"] == MEMBERSHIP)["extension"]
               if e["url"] == "left"]
    assert reasons[0]["valueString"] == "no longer meets the definition"
    withdrawn = wait_for(lambda: [o for o in _offers(fhir, "cohort-def-mltc")
                                  if o["for"]["reference"] == f"Patient/{leaver}" and o["status"] == "cancelled"],
                         60, "the leaver's offer to be withdrawn")
    assert "No longer in the cohort" in withdrawn[0]["statusReason"]["text"]
    assert _active(group) == expected - {leaver}

    # Someone new gets a second long-term condition: they enter, and get an offer.
    newcomer = next(p for p in people if p.active_long_term() == 1 and not p.deceased)
    missing = next(c for c in LONG_TERM if c not in {code for code, _ in newcomer.conditions})
    subject = f"Patient/{newcomer.resource['id']}"
    assert fhir.post("/Condition", json=condition(subject, missing, "active"), headers=JSON).status_code == 201
    wait_for(lambda: newcomer.resource["id"] in _active(_group(fhir, "cohort-def-mltc")), 60,
             "the newcomer to enter the cohort")
    wait_for(lambda: [o for o in _offers(fhir, "cohort-def-mltc") if o["for"]["reference"] == subject], 60,
             "the newcomer's offer")


def test_any_of_with_fhirpath_and_on_demand_evaluation(clean_db, fhir, cohort_pipeline):
    people = _write_population(fhir, 60)
    expected = {p.resource["id"] for p in people if p.complex_needs()}
    assert expected and len(expected) < len(people)
    assert fhir.put("/Group/def-complex", json=complex_needs(), headers=JSON).status_code == 201
    wait_for(lambda: (g := _group(fhir, "cohort-def-complex")) and _active(g) == expected, 90,
             "the any-of cohort to hold exactly the expected people")
    # On demand, nothing has changed since: the same members, nobody entered or left.
    reply = fhir.post("/Group/def-complex/$evaluate-cohort", json={"resourceType": "Parameters"}, headers=JSON)
    assert reply.status_code == 200, reply.text
    values = {p["name"]: p.get("valueInteger") for p in reply.json()["parameter"]}
    assert values["members"] == len(expected) and values["entered"] == 0 and values["left"] == 0


def test_draft_and_broken_definitions_find_nobody(clean_db, fhir):
    person = fhir.post("/Patient", json=patient(), headers=JSON).json()
    for code in LONG_TERM[:2]:
        fhir.post("/Condition", json=condition(f"Patient/{person['id']}", code, "active"), headers=JSON)
    assert fhir.put("/Group/def-draft", json=multiple_conditions("def-draft", status="draft"),
                    headers=JSON).status_code == 201
    reply = fhir.post("/Group/def-draft/$evaluate-cohort", json={"resourceType": "Parameters"}, headers=JSON)
    assert reply.status_code == 422 and "draft" in reply.json()["issue"][0]["diagnostics"]
    assert fhir.get("/Group/cohort-def-draft").status_code == 404
    # A criterion in a parameter the hub does not know is an error naming it, not a wider search.
    bad = definition("def-bad", "Bad", [characteristic("typo", "application/x-fhir-query", "Condition?cod=123")])
    assert fhir.put("/Group/def-bad", json=bad, headers=JSON).status_code == 201
    reply = fhir.post("/Group/def-bad/$evaluate-cohort", json={"resourceType": "Parameters"}, headers=JSON)
    assert reply.status_code == 422
    assert "characteristic 1 ('typo')" in reply.json()["issue"][0]["diagnostics"]
    bad_path = definition("def-bad2", "Bad", [characteristic("not fhirpath", FHIRPATH, "Encounter.where(((")])
    assert fhir.put("/Group/def-bad2", json=bad_path, headers=JSON).status_code == 201
    assert fhir.post("/Group/def-bad2/$evaluate-cohort", json={"resourceType": "Parameters"},
                     headers=JSON).status_code == 422
    # The approved one finds the person on demand.
    assert fhir.put("/Group/def-ok", json=multiple_conditions("def-ok"), headers=JSON).status_code == 201
    reply = fhir.post("/Group/def-ok/$evaluate-cohort", json={"resourceType": "Parameters"}, headers=JSON)
    values = {p["name"]: p.get("valueInteger") for p in reply.json()["parameter"]}
    assert values["members"] == 1 and values["entered"] == 1


def test_a_cohort_is_seen_only_by_who_may_see_health_data(clean_db, fhir, fhir_as):
    person = fhir.post("/Patient", json=patient(), headers=JSON).json()
    for code in LONG_TERM[:2]:
        fhir.post("/Condition", json=condition(f"Patient/{person['id']}", code, "active"), headers=JSON)
    fhir.put("/Group/def-seen", json=multiple_conditions("def-seen"), headers=JSON)
    assert fhir.post("/Group/def-seen/$evaluate-cohort", json={"resourceType": "Parameters"},
                     headers=JSON).status_code == 200
    assert _active(_group(fhir, "cohort-def-seen")) == {person["id"]}
    scopes = ["system/Group.rs", "system/Task.rs", "system/Patient.rs"]
    charity = fhir_as(partner_class="charity", organisation="1234567", scopes=scopes)
    council = fhir_as(partner_class="local-authority", scopes=scopes)
    for other in (charity, council):
        # The member Group says who has which conditions: held in `health`, which neither sees.
        assert other.get("/Group/cohort-def-seen").status_code == 404
        found = other.get("/Group", params={"_count": 100}).json()
        assert "cohort-def-seen" not in {e["resource"]["id"] for e in found.get("entry", [])}
        assert other.get("/Task", params={"code": "offer-ipc"}).json().get("entry", []) == []
    # Without write on Group and Task, no evaluation.
    assert charity.post("/Group/def-seen/$evaluate-cohort", json={"resourceType": "Parameters"},
                        headers=JSON).status_code == 403


def test_an_offer_answered_by_the_person_is_kept_when_they_leave(clean_db, fhir):
    people = []
    for _ in range(2):
        person = fhir.post("/Patient", json=patient(), headers=JSON).json()["id"]
        conditions = [fhir.post("/Condition", json=condition(f"Patient/{person}", code, "active"), headers=JSON).json()
                      for code in LONG_TERM[:2]]
        people.append((person, conditions))
    fhir.put("/Group/def-answer", json=multiple_conditions("def-answer"), headers=JSON)
    reply = fhir.post("/Group/def-answer/$evaluate-cohort", json={"resourceType": "Parameters"}, headers=JSON)
    assert {p["name"]: p.get("valueInteger") for p in reply.json()["parameter"]}["entered"] == 2
    offers = {o["for"]["reference"].split("/")[1]: o for o in _offers(fhir, "cohort-def-answer")}
    # The coordinator records the first person's answer: declined, with their reason.
    declined = {**offers[people[0][0]], "status": "rejected",
                "statusReason": {"text": "Declined: happy with the support they have"}}
    assert fhir.put(f"/Task/{declined['id']}", json=declined, headers=JSON).status_code == 200
    # Both stop meeting the definition.
    for _person, conditions in people:
        resolved = {**conditions[0], "clinicalStatus": {"coding": [{"system": conditions[0]["clinicalStatus"]["coding"][0]["system"],
                                                                     "code": "resolved"}]}}
        assert fhir.put(f"/Condition/{resolved['id']}", json=resolved, headers=JSON).status_code == 200
    reply = fhir.post("/Group/def-answer/$evaluate-cohort", json={"resourceType": "Parameters"}, headers=JSON)
    assert {p["name"]: p.get("valueInteger") for p in reply.json()["parameter"]}["left"] == 2
    after = {o["for"]["reference"].split("/")[1]: o for o in _offers(fhir, "cohort-def-answer")}
    assert after[people[0][0]]["status"] == "rejected"  # their answer stands
    assert after[people[0][0]]["statusReason"]["text"] == "Declined: happy with the support they have"
    assert after[people[1][0]]["status"] == "cancelled"  # never made: withdrawn
