"""The veteran journey, told as it happens: a MOD handover goes through the real pipeline (mapper
and recorder as worker processes, the relay and the notifier on threads), the receiving GP
practice's subscription (filtered by its ODS code) is told of the handover; the lead charity's
subscription is told when the plan is agreed, with the plan the veteran let it see. And the
operator's `ipc-hub subscriptions` command."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from connectors.mod.document import envelope_meta
from hub.bus.envelope import Envelope
from hub.fhir.jsontext import dumps
from tests.integration.access_cases import JSON
from tests.integration.conftest import start_api  # noqa: F401 (fixture)
from tests.pipeline.conftest import IPC_HUB, send, wait_for, worker_env
from tests.pipeline.test_subscriptions import (  # noqa: F401 (fixtures)
    IPC,
    TOPIC,
    _database,
    api,
    client,
    post,
    receivers,
    run_notifier,
    status_of,
    subscription,
)

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "connectors" / "mod" / "samples" / "handover-full.json"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
SERVICE_NUMBER = "https://ipc-hub.example.org/fhir/Id/mod-service-number"


def agreement(by: str, role: str) -> dict:
    return {"url": IPC + "StructureDefinition/plan-agreement", "extension": [
        {"url": "agreedBy", "valueReference": {"reference": by}},
        {"url": "role", "valueCodeableConcept": {"coding": [{"system": IPC + "CodeSystem/ipc-agreement-role",
                                                             "code": role}]}},
        {"url": "date", "valueDateTime": "2026-07-20T10:00:00Z"}]}


def test_gp_told_of_the_handover_and_lead_charity_of_the_agreed_plan(api, token_for, run_notifier, receivers, bus,
                                                                     clean_db, workers, fhir):
    env = worker_env(bus, clean_db)
    workers.start("mapper", env)
    workers.start("recorder", env)
    practice_receiver, charity_receiver = receivers(), receivers()
    practice = client(api, token_for, partner_class="nhs", organisation="C84001", client_id="gp-c84001",
                      scopes=["system/Subscription.cruds", "system/Task.rs", "system/Patient.rs"])
    charity = client(api, token_for, partner_class="charity", organisation="1123456", client_id="lead-charity",
                     scopes=["system/Subscription.cruds", "system/CarePlan.rs"])
    post(practice, subscription("mod-handover-received", practice_receiver.url,
                                filters=(f"Task?owner:identifier={ODS}|C84001",)))
    post(practice, subscription("mod-handover-received", receivers().url,   # another practice's filter
                                filters=(f"Task?owner:identifier={ODS}|Z99999",)))
    post(charity, subscription("plan-agreed", charity_receiver.url))
    run_notifier()
    wait_for(lambda: practice_receiver.of_type("handshake") and charity_receiver.of_type("handshake"), 30,
             "the handshakes")

    document = json.loads(SAMPLE.read_bytes())
    send(bus, [Envelope(payload=SAMPLE.read_bytes(), **envelope_meta(document, "mod-handover"))])
    wait_for(lambda: practice_receiver.of_type("event-notification"), 90, "the practice's handover notification")
    bundle = practice_receiver.of_type("event-notification")[0]
    task = bundle["entry"][1]["resource"]
    assert task["resourceType"] == "Task" and task["code"]["coding"][0]["code"] == "gp-registration-handover"
    assert [e["event-number"] for e in status_of(bundle)["events"]] == ["1"]
    assert charity_receiver.of_type("event-notification") == []   # a draft plan is not an agreed one

    # The coordinator agrees the plan with the veteran: the lead charity is told, with the plan.
    patient = fhir.get("/Patient", params={"identifier": f"{SERVICE_NUMBER}|{document['person']['serviceNumber']}"})
    patient_id = patient.json()["entry"][0]["resource"]["id"]
    plans = fhir.get("/CarePlan", params={"subject": f"Patient/{patient_id}", "category":
                                          IPC + "CodeSystem/ipc-plan-category|care-support-plan"}).json()
    plan = plans["entry"][0]["resource"]
    plan["status"] = "active"
    plan["extension"] = [e for e in plan["extension"] if not e["url"].endswith("/ipc-stage")] + [
        {"url": IPC + "StructureDefinition/ipc-stage", "valueCodeableConcept": {
            "coding": [{"system": IPC + "CodeSystem/ipc-stage", "code": "make-it-happen"}]}},
        agreement(f"Patient/{patient_id}", "person"),
        {"url": IPC + "StructureDefinition/next-review-date", "valueDate": "2026-10-20"}]
    r = fhir.put(f"/CarePlan/{plan['id']}", content=dumps(plan), headers=JSON)
    assert r.status_code == 200, r.text
    wait_for(lambda: charity_receiver.of_type("event-notification"), 60, "the charity's plan-agreed notification")
    told = charity_receiver.of_type("event-notification")[0]
    assert told["entry"][1]["resource"]["id"] == plan["id"]
    assert told["entry"][1]["resource"]["status"] == "active"

    # The operator's view: both subscriptions of the practice, one told one event, the other none.
    listed = subprocess.run([IPC_HUB, "subscriptions", "list", "--json"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {r["client"] + r["topic"].rsplit("/", 1)[-1] + str(r["events"]): r for r in json.loads(listed.stdout)}
    assert "gp-c84001mod-handover-received1" in rows and "gp-c84001mod-handover-received0" in rows
    assert "Bearer" not in listed.stdout  # no receiver's token in an operator's listing


def test_operator_pauses_resumes_and_resends(api, token_for, run_notifier, receivers, bus, clean_db, fhir):
    receiver = receivers()
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-operated")
    sub = post(nhs, subscription("plan-changed", receiver.url, payload="id-only"))
    run_notifier()
    wait_for(lambda: receiver.of_type("handshake"), 30, "the handshake")
    env = worker_env(bus, clean_db)

    def cli(*args: str) -> str:
        done = subprocess.run([IPC_HUB, "subscriptions", *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("pause", sub["id"])
    from tests.pipeline.test_subscriptions import ipc_plan

    person = post(fhir, {"resourceType": "Patient", "name": [{"family": "Paused"}]})
    post(fhir, ipc_plan(person["id"], "while paused"))
    # Queued while paused; numbered only when judged for sending.
    wait_for(lambda: json.loads(cli("list", "--json"))[0]["waiting"] == 1, 30, "the event queued while paused")
    assert receiver.of_type("event-notification") == []
    cli("resume", sub["id"])
    wait_for(lambda: receiver.of_type("event-notification"), 30, "the event after resume")
    cli("resend", sub["id"], "--since", "1")
    wait_for(lambda: len(receiver.of_type("event-notification")) == 2, 30, "the event sent again")
    again = [status_of(b)["events"][0]["event-number"] for b in receiver.of_type("event-notification")]
    assert again == ["1", "1"]
    missing = subprocess.run([IPC_HUB, "subscriptions", "pause", "no-such-subscription"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no subscription" in missing.stderr
