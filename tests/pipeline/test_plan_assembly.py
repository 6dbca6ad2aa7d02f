"""Several sources' parts of one person's plan and budget statement become one plan in the
record (hub.pipeline.plans), whichever order they arrive in, batched or one at a time; a source may
name a person it sent before by its own id. Real PostgreSQL, the recorder's own entry points."""
from __future__ import annotations

import asyncio
import json

import psycopg
import pytest
from psycopg import AsyncConnection

from hub.bus.envelope import Envelope
from hub.bus.worker import Message
from hub.fhir.identifiers import CANONICAL_BASE, NHS_NUMBER
from hub.pipeline import recorder

CATEGORY = f"{CANONICAL_BASE}/CodeSystem/ipc-plan-category"
ALLOCATION = f"{CANONICAL_BASE}/StructureDefinition/budget-allocation"
FUNDING = f"{CANONICAL_BASE}/CodeSystem/ipc-funding-source"
NHS = "9990000018"


def _patient(pid: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "identifier": [{"system": NHS_NUMBER, "value": NHS}],
            "name": [{"family": "Okafor", "given": ["Dee"]}], "birthDate": "1988-03-02"}


def _plan(pid: str, plan_id: str, activity: str, *, description: str = "", goal: str | None = None) -> dict:
    """A source's part of the person's plan: valid on its own against the IPC care plan profile
    (stage and description), as every resource the recorder writes must be."""
    plan = {"resourceType": "CarePlan", "id": plan_id, "status": "draft", "intent": "plan",
            "extension": [{"url": f"{CANONICAL_BASE}/StructureDefinition/ipc-stage", "valueCodeableConcept": {
                "coding": [{"system": f"{CANONICAL_BASE}/CodeSystem/ipc-stage", "code": "preparation"}]}}],
            "category": [{"coding": [{"system": CATEGORY, "code": "care-support-plan"}]}],
            "subject": {"reference": f"Patient/{pid}"}, "period": {"start": "2026-01-01"},
            "title": "Care and support plan", "description": description or f"Services: {activity}",
            "activity": [{"id": activity, "detail": {"status": "scheduled", "description": activity,
                                                     "performer": [{"display": "Support provider"}]}}]}
    if goal:
        plan["goal"] = [{"reference": goal}]
    return plan


def _allocation(source: str, amount: float) -> dict:
    return {"url": ALLOCATION, "extension": [
        {"url": "fundingSource", "valueCodeableConcept": {"coding": [{"system": FUNDING, "code": source}]}},
        {"url": "amount", "valueMoney": {"value": amount, "currency": "GBP"}},
        {"url": "managementOption", "valueCodeableConcept": {"coding": [
            {"system": f"{CANONICAL_BASE}/CodeSystem/ipc-management-option", "code": "direct-payment"}]}}]}


def _budget(pid: str, budget_id: str, plan_id: str, source: str, amount: float) -> dict:
    return {"resourceType": "CarePlan", "id": budget_id, "status": "active", "intent": "plan",
            "category": [{"coding": [{"system": CATEGORY, "code": "budget-statement"}]}],
            "subject": {"reference": f"Patient/{pid}"}, "period": {"start": "2026-04-01", "end": "2027-03-31"},
            "partOf": [{"reference": f"CarePlan/{plan_id}"}], "extension": [
                {"url": f"{CANONICAL_BASE}/StructureDefinition/budget-type", "valueCodeableConcept": {"coding": [
                    {"system": f"{CANONICAL_BASE}/CodeSystem/ipc-budget-type",
                     "code": "personal-health-budget" if source == "nhs" else "personal-budget"}]}},
                {"url": f"{CANONICAL_BASE}/StructureDefinition/indicative-amount",
                 "valueMoney": {"value": amount, "currency": "GBP"}},
                _allocation(source, amount)]}


def _message(offset: int, source: str, key: str, resources: list[dict]) -> Message:
    payload = json.dumps({"resourceType": "Bundle", "type": "collection",
                          "entry": [{"resource": r} for r in resources]}).encode()
    envelope = Envelope(source=source, kind="fhir-bundle", person_key=key, payload=payload,
                        content_type="application/fhir+json")
    return Message("bundles", 0, offset, envelope.key(), envelope.payload, envelope.headers(), 0)


def _goal(pid: str, goal_id: str) -> dict:
    return {"resourceType": "Goal", "id": goal_id, "lifecycleStatus": "active",
            "description": {"text": "Back to climbing"}, "subject": {"reference": f"Patient/{pid}"}}


def _mod_part(offset: int, description: str = "What matters: getting back to climbing") -> Message:
    # The plan's goal travels with it: the recorder never writes a reference to nothing.
    return _message(offset, "mod", "mod-1", [_patient("mod-p"), _goal("mod-p", "mod-goal"),
                                             _plan("mod-p", "mod-plan", "mod-welfare", description=description,
                                                   goal="Goal/mod-goal")])


def _la_part(offset: int, amount: float = 5200.0) -> Message:
    return _message(offset, "la", "la-1", [_patient("la-p"), _plan("la-p", "la-plan", "la-event-7"),
                                            _budget("la-p", "la-budget", "la-plan", "local-authority", amount)])


def _la_event(offset: int, person: str) -> Message:
    """A later row about a person LA sent before, naming them only by LA's own id."""
    return _message(offset, "la", "la-1", [_plan(person, "la-plan-2", "la-event-8")])


async def _record(url: str, batches: list[list[Message]]) -> list:
    rejected = []
    async with await AsyncConnection.connect(url) as conn:
        for batch in batches:
            rejected += (await recorder.record_batch(conn, batch)).rejected
    return rejected


def _plans(url: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT content::jsonb FROM resource WHERE res_type = 'CarePlan' AND NOT deleted ORDER BY res_id")]


def _of_kind(plans: list[dict], code: str) -> list[dict]:
    return [p for p in plans if p["category"][0]["coding"][0]["code"] == code]


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "one-at-a-time"])
def test_parts_from_two_sources_make_one_plan(clean_db, batched):
    messages = [_mod_part(0), _la_part(1)]
    batches = [messages] if batched else [[m] for m in messages]
    assert asyncio.run(_record(clean_db, batches)) == []
    plans = _plans(clean_db)
    [plan] = _of_kind(plans, "care-support-plan")
    [budget] = _of_kind(plans, "budget-statement")
    person = plan["subject"]["reference"]
    assert budget["subject"]["reference"] == person
    assert [a["id"] for a in plan["activity"]] == ["mod-welfare", "la-event-7"]
    assert plan["description"] == "What matters: getting back to climbing"  # first source's words kept
    assert plan["goal"] == [{"reference": "Goal/mod-goal"}]
    # The budget's partOf named LA's part; it now names the one plan.
    assert budget["partOf"] == [{"reference": f"CarePlan/{plan['id']}"}]


def test_a_replayed_part_changes_nothing_and_a_source_updates_only_its_own(clean_db):
    assert asyncio.run(_record(clean_db, [[_mod_part(0), _la_part(1)]])) == []
    with psycopg.connect(clean_db) as conn:
        before = conn.execute("SELECT count(*) FROM resource_version").fetchone()[0]
    assert asyncio.run(_record(clean_db, [[_mod_part(2), _la_part(3)]])) == []
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM resource_version").fetchone()[0] == before

    # MOD restates its plan (it owns the plan's words); LA restates its share of the budget.
    budget_nhs = _message(4, "nhs-icb", "icb-1", [_patient("icb-p"),
                                                   _budget("icb-p", "icb-budget", "none", "nhs", 24000.0)])
    assert asyncio.run(_record(clean_db, [[_mod_part(5, "What matters: climbing and my dog"),
                                           budget_nhs, _la_part(6, amount=6100.0)]])) == []
    plans = _plans(clean_db)
    [plan] = _of_kind(plans, "care-support-plan")
    [budget] = _of_kind(plans, "budget-statement")
    assert plan["description"] == "What matters: climbing and my dog"
    assert [a["id"] for a in plan["activity"]] == ["mod-welfare", "la-event-7"]
    shares = {a["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]: a["extension"][1]["valueMoney"]["value"]
              for a in budget["extension"] if a["url"] == ALLOCATION}
    assert shares == {"local-authority": 6100.0, "nhs": 24000.0}


def test_two_sources_at_once_on_two_connections_still_make_one_plan(clean_db):
    """Different sources key the same person differently, so their parts can be recorded by two
    lanes at the same moment; the plan lock makes the second join the first's plan."""
    async def both() -> list:
        async with await AsyncConnection.connect(clean_db) as a, await AsyncConnection.connect(clean_db) as b:
            results = await asyncio.gather(recorder.record_batch(a, [_mod_part(0)]),
                                           recorder.record_batch(b, [_la_part(1)]))
        return [r for result in results for r in result.rejected]

    assert asyncio.run(both()) == []
    [plan] = _of_kind(_plans(clean_db), "care-support-plan")
    assert sorted(a["id"] for a in plan["activity"]) == ["la-event-7", "mod-welfare"]


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "one-at-a-time"])
def test_a_source_names_a_person_it_sent_before_by_its_own_id(clean_db, batched):
    messages = [_la_part(0), _la_event(1, "la-p")]
    assert asyncio.run(_record(clean_db, [messages] if batched else [[m] for m in messages])) == []
    [plan] = _of_kind(_plans(clean_db), "care-support-plan")
    assert [a["id"] for a in plan["activity"]] == ["la-event-7", "la-event-8"]
    with psycopg.connect(clean_db) as conn:
        patients = conn.execute("SELECT res_id FROM resource WHERE res_type = 'Patient'").fetchall()
    assert [(plan["subject"]["reference"],)] == [(f"Patient/{p}",) for (p,) in patients]


def test_a_person_nobody_sent_is_refused_not_pointed_at(clean_db):
    rejected = asyncio.run(_record(clean_db, [[_la_event(0, "never-sent")]]))
    assert [(r.reason, r.step) for r in rejected] == [("not-found", "record")]
    assert "Patient/never-sent" in rejected[0].detail
    assert _plans(clean_db) == []
