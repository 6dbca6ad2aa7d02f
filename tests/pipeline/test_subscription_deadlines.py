"""The time-based topics (issue 15): handover overdue, review due, review overdue. Real API,
broker and PostgreSQL, the relay and the notifier on threads, real HTTP receivers. The deadline
scheduler's pass (`hub.subscriptions.deadlines.raise_due`) is the one the notifier runs every
minute, called here with the moment a later day begins, so a deadline passes without waiting
for it; what it raises is judged and delivered by the running notifier."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from psycopg import AsyncConnection

from hub.fhir.jsontext import dumps
from hub.plans.reviews import today
from hub.subscriptions.deadlines import midnight, raise_due
from tests.integration.access_cases import JSON, lead_charity_consent, make_person
from tests.integration.conftest import start_api  # noqa: F401 (fixture)
from tests.pipeline.conftest import count, wait_for
from tests.pipeline.test_subscriptions import (  # noqa: F401 (fixtures)
    IPC,
    TOPIC,
    _database,
    api,
    client,
    ipc_plan,
    post,
    receivers,
    run_notifier,
    status_of,
    subscription,
)
from tests.pipeline.test_subscriptions_journey import agreement

pytestmark = pytest.mark.integration

TRANSITION = IPC + "CodeSystem/ipc-transition"


def handover(patient: str, practice: str, due: str, status: str = "requested") -> dict:
    """A GP registration handover Task as the MOD mapping writes it (due on `due`)."""
    return {"resourceType": "Task", "status": status, "intent": "order", "priority": "routine",
            "code": {"coding": [{"system": TRANSITION, "code": "gp-registration-handover"}]},
            "for": {"reference": f"Patient/{patient}"}, "owner": {"reference": f"Organization/{practice}"},
            "authoredOn": "2026-06-02T09:30:00Z", "lastModified": "2026-06-02T09:30:00Z",
            "executionPeriod": {"start": "2026-06-02", "end": due}, "restriction": {"period": {"end": due}}}


async def _passes(database_url: str, moment, schedulers: int = 1) -> int:
    """`schedulers` notifiers' deadline passes at `moment`, at once, each on its own connection."""
    conns = [await AsyncConnection.connect(database_url, autocommit=True) for _ in range(schedulers)]
    try:
        return sum(await asyncio.gather(*(raise_due(conn, moment) for conn in conns)))
    finally:
        for conn in conns:
            await conn.close()


def test_handover_overdue_is_raised_once_for_the_practice_whatever_runs(api, token_for, run_notifier, receivers,
                                                                        fhir, clean_db):
    ours, theirs = receivers(), receivers()
    for org in ("gp-overdue-1", "gp-overdue-2"):
        r = fhir.put(f"/Organization/{org}", content=dumps({"resourceType": "Organization", "id": org, "name": org}),
                     headers=JSON)
        assert r.status_code in (200, 201), r.text
    practice = client(api, token_for, partner_class="nhs", organisation="C84001", client_id="gp-overdue",
                      scopes=["system/Subscription.cruds", "system/Task.rs"])
    sub = post(practice, subscription("handover-overdue", ours.url, filters=("Task?owner=Organization/gp-overdue-1",)))
    post(practice, subscription("handover-overdue", theirs.url, filters=("Task?owner=Organization/gp-overdue-2",)))
    run_notifier()
    wait_for(lambda: ours.of_type("handshake") and theirs.of_type("handshake"), 30, "the handshakes")

    due = today() + timedelta(days=1)
    person = post(fhir, {"resourceType": "Patient", "name": [{"family": "Overdue"}]})
    late = post(fhir, handover(person["id"], "gp-overdue-1", due.isoformat()))
    post(fhir, handover(person["id"], "gp-overdue-1", due.isoformat(), status="completed"))  # done in time

    assert asyncio.run(_passes(clean_db, midnight(due))) == 0  # on its due day it is not yet overdue
    after = midnight(due + timedelta(days=1)) + timedelta(minutes=1)
    # Two notifiers scanning at the same moment raise the deadline once between them ...
    assert asyncio.run(_passes(clean_db, after, schedulers=2)) == 1
    # ... and a notifier started again later does not raise it again.
    assert asyncio.run(_passes(clean_db, after + timedelta(hours=1))) == 0

    wait_for(lambda: ours.of_type("event-notification"), 30, "the overdue handover's notification")
    bundle = ours.of_type("event-notification")[0]
    status = status_of(bundle)
    assert status["topic"] == TOPIC + "handover-overdue"
    assert [e["event-number"] for e in status["events"]] == ["1"]
    assert bundle["entry"][1]["resource"]["id"] == late["id"]
    assert bundle["entry"][1]["request"] == {"method": "GET", "url": f"Task/{late['id']}"}
    assert count(clean_db, "SELECT count(*) FROM subscription_event WHERE subscription_id = %s", sub["id"]) == 1
    assert theirs.of_type("event-notification") == []  # another practice's handovers are not its


def test_review_due_then_overdue_told_only_of_what_the_person_shared(api, token_for, run_notifier, receivers, fhir,
                                                                     recorder, clean_db):
    shared, private = make_person(fhir), make_person(fhir)
    private.charity_number = shared.charity_number  # the same charity; only one person shared the plan
    lead_charity_consent(recorder, shared)
    due_receiver, overdue_receiver = receivers(), receivers()
    charity = client(api, token_for, partner_class="charity", organisation=shared.charity_number,
                     client_id="review-charity", scopes=["system/CarePlan.rs", "system/Subscription.cruds"])
    due_sub = post(charity, subscription("review-due", due_receiver.url))
    post(charity, subscription("review-overdue", overdue_receiver.url))
    run_notifier()
    wait_for(lambda: due_receiver.of_type("handshake") and overdue_receiver.of_type("handshake"), 30, "handshakes")

    due = today() + timedelta(days=1)
    r = fhir.put("/Practitioner/review-coordinator", content=dumps({
        "resourceType": "Practitioner", "id": "review-coordinator", "name": [{"family": "Coordinator"}]}), headers=JSON)
    assert r.status_code in (200, 201), r.text
    plans = {}
    for person in (private, shared):   # the private one first: its withheld event must leave no gap
        plan = post(fhir, ipc_plan(person.patient, "Reviewed yearly"))
        plan["status"] = "active"
        plan["extension"] = [e for e in plan["extension"] if not e["url"].endswith("/ipc-stage")] + [
            {"url": IPC + "StructureDefinition/ipc-stage", "valueCodeableConcept": {
                "coding": [{"system": IPC + "CodeSystem/ipc-stage", "code": "make-it-happen"}]}},
            agreement(f"Patient/{person.patient}", "person"),
            {"url": IPC + "StructureDefinition/care-coordinator",
             "valueReference": {"reference": "Practitioner/review-coordinator"}},
            {"url": IPC + "StructureDefinition/next-review-date", "valueDate": due.isoformat()}]
        r = fhir.put(f"/CarePlan/{plan['id']}", content=dumps(plan), headers=JSON)
        assert r.status_code == 200, r.text
        plans[person.patient] = r.json()

    assert asyncio.run(_passes(clean_db, midnight(due) + timedelta(minutes=1))) == 2    # due: both plans
    wait_for(lambda: due_receiver.of_type("event-notification"), 30, "the review-due notification")
    wait_for(lambda: count(clean_db, "SELECT count(*) FROM subscription WHERE id = %s AND judged = matched "
                       "AND matched = 2", due_sub["id"]) == 1, 30, "both review-due events judged")
    told = [(e["event-number"], b["entry"][1]["resource"]["id"]) for b in due_receiver.of_type("event-notification")
            for e in status_of(b)["events"]]
    assert told == [("1", plans[shared.patient]["id"])]   # numbered 1: the withheld one took no number
    assert overdue_receiver.of_type("event-notification") == []   # not overdue until the day after

    assert asyncio.run(_passes(clean_db, midnight(due + timedelta(days=1)) + timedelta(minutes=1))) == 2
    wait_for(lambda: overdue_receiver.of_type("event-notification"), 30, "the review-overdue notification")
    bundle = overdue_receiver.of_type("event-notification")[0]
    assert status_of(bundle)["topic"] == TOPIC + "review-overdue"
    assert [e["event-number"] for e in status_of(bundle)["events"]] == ["1"]
    assert bundle["entry"][1]["resource"]["id"] == plans[shared.patient]["id"]
    assert all(private.patient not in str(b) for b in due_receiver.taken + overdue_receiver.taken)
