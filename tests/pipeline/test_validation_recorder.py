"""The recorder's path: a mapped Bundle holding a resource that breaks a base-specification rule is
rejected alone (dead-lettered with the rule and its FHIRPath location), nothing of it is stored, and
the good messages of the same polled batch are recorded. In process through record_batch on the
real database, and end to end through a recorder worker on a real broker."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from psycopg import AsyncConnection

from hub.bus.envelope import Envelope
from hub.bus.kafka import Publisher
from hub.bus.replay import read_topic
from hub.bus.topics import Topics
from hub.bus.worker import Message
from hub.fhir.identifiers import NHS_NUMBER
from hub.pipeline import recorder
from tests.pipeline.conftest import count, wait_for, worker_env

XHTML = "http://www.w3.org/1999/xhtml"


def _patient(pid: str, **changes: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": "Okafor", "given": ["Dee"]}],
            "birthDate": "1988-03-02", **changes}


def _observation(oid: str, pid: str, **changes: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "weight"},
            "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 70, "unit": "kg"}, **changes}


# rule: (the bad message's resources, the issue code, the location named in the detail)
RULES = {
    "required-binding": ([_patient("bad-p", gender="banana")], "code-invalid", "Patient.gender"),
    "invariant-qty-3": ([_patient("bad-p"), _observation("bad-o", "bad-p", valueQuantity={"value": 1, "code": "kg"})],
                        "invariant", "Observation.valueQuantity"),
    "narrative": ([_patient("bad-p", text={"status": "generated",
                                           "div": f'<div xmlns="{XHTML}"><p onclick="x()">Dee</p></div>'})],
                  "invariant", "Patient.text.div"),
    "nul-character": ([_patient("bad-p", name=[{"family": "Oka\u0000for"}])], "structure", "Patient.name[0].family"),
    "empty-array": ([_patient("bad-p", identifier=[])], "structure", "Patient.identifier"),
    "ipc-profile": ([_patient("bad-p", identifier=[{"system": NHS_NUMBER, "value": "9990000019"}])],
                    "invariant", "Patient.identifier[0].value"),
}


def _message(offset: int, source: str, key: str, resources: list[dict[str, Any]]) -> Message:
    envelope = _envelope(source, key, resources)
    return Message("bundles", 0, offset, envelope.key(), envelope.payload, envelope.headers(), 0)


def _envelope(source: str, key: str, resources: list[dict[str, Any]]) -> Envelope:
    payload = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources]}).encode()
    return Envelope(source=source, kind="fhir-transaction", person_key=key, payload=payload,
                    content_type="application/fhir+json")


async def _record(url: str, batch: list[Message]):
    async with await AsyncConnection.connect(url) as conn:
        return await recorder.record_batch(conn, batch)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_bad_resource_rejects_its_message_alone(clean_db, rule):
    resources, code, location = RULES[rule]
    batch = [
        _message(0, "src-a", "a", [_patient("good-a"), _observation("good-oa", "good-a")]),
        _message(1, "src-b", "b", resources),
        _message(2, "src-c", "c", [_patient("good-c")]),
    ]
    outcome = asyncio.run(_record(clean_db, batch))
    assert [(r.message.offset, r.reason, r.step) for r in outcome.rejected] == [(1, code, "record")]
    assert outcome.rejected[0].detail.startswith(location) or f"] {location}" in outcome.rejected[0].detail, \
        outcome.rejected[0].detail
    assert count(clean_db, "SELECT count(*) FROM resource WHERE res_id LIKE 'bad-%'") == 0
    assert count(clean_db, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") == 2
    assert count(clean_db, "SELECT count(*) FROM resource WHERE res_type = 'Observation'") == 1


def test_the_recorder_worker_dead_letters_an_invalid_message(clean_db, bus, workers):
    topics = Topics(bus.topic_prefix)
    workers.start("recorder", worker_env(bus, clean_db))
    publisher = Publisher(bus, "test-mapper")
    bad = _envelope("src-b", "b", [_patient("bad-p", gender="banana")])
    good = _envelope("src-a", "a", [_patient("good-a")])
    for envelope in (bad, good):
        publisher.send(topics.bundles, envelope.key(), envelope.payload, envelope.headers())
    publisher.flush()
    publisher.close()
    letters = wait_for(lambda: list(read_topic(bus, topics.deadletter, timeout=2)), 60, "a dead letter")
    assert [(letter.headers["dlq-reason"], letter.headers["dlq-step"]) for letter in letters] == \
        [(b"code-invalid", b"record")]
    detail = letters[0].headers["dlq-detail"].decode()
    assert detail.startswith("Patient.gender") and "administrative-gender" in detail
    assert letters[0].value == bad.payload
    wait_for(lambda: count(clean_db, "SELECT count(*) FROM resource WHERE res_id = 'good-a'") == 1, 60,
             "the good message recorded")
    assert count(clean_db, "SELECT count(*) FROM resource WHERE res_id = 'bad-p'") == 0
