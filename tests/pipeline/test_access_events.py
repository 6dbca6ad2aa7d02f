"""Change events carry whose record and which part they are about (Kafka headers ipc-patient
and ipc-record-part), so anything delivering record.events to partners can apply consent
without fetching the resource."""
from __future__ import annotations

import json
import threading

import pytest

from hub.bus.replay import read_topic
from hub.bus.topics import Topics
from hub.pipeline.service import Relay
from tests.pipeline.conftest import count, wait_for

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/fhir+json"}


def test_record_events_carry_patient_and_part_headers(clean_db, hub_url, fhir, bus):
    patient = fhir.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Events"}]},
                        headers=JSON).json()
    flag = fhir.post("/Flag", headers=JSON, json={
        "resourceType": "Flag", "status": "active", "subject": {"reference": f"Patient/{patient['id']}"},
        "category": [{"text": "Safeguarding"}], "code": {"text": "Visit in pairs"}}).json()
    org = fhir.post("/Organization", json={"resourceType": "Organization", "name": "GP"}, headers=JSON).json()
    stop = threading.Event()
    relay = Relay(bus, clean_db)
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: count(clean_db, "SELECT count(*) FROM outbox") == 0, 30, "the relay to drain the outbox")
    finally:
        stop.set()
        thread.join(10)
    records = list(read_topic(bus, Topics(bus.topic_prefix).record_events))
    headers = {"{resourceType}/{id}".format(**json.loads(r.value)): r.headers for r in records}
    # Keyed by person, so one person's events keep their order (one partition); a resource outside
    # every record by itself.
    keys = {"{resourceType}/{id}".format(**json.loads(r.value)): r.key for r in records}
    assert keys[f"Flag/{flag['id']}"] == keys[f"Patient/{patient['id']}"] == f"Patient/{patient['id']}".encode()
    assert keys[f"Organization/{org['id']}"] == f"Organization/{org['id']}".encode()
    assert headers[f"Patient/{patient['id']}"] == {"ipc-patient": patient["id"].encode(),
                                                   "ipc-record-part": b"demographics"}
    assert headers[f"Flag/{flag['id']}"] == {"ipc-patient": patient["id"].encode(),
                                             "ipc-record-part": b"safeguarding"}
    assert headers[f"Organization/{org['id']}"] == {}
