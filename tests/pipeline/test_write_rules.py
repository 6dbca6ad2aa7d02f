"""The recorder's path keeps the record's write rules: no dangling reference is written (the
message is dead-lettered with the reason, batched or alone), and a placeholder NHS number never
joins two people. Real PostgreSQL, the recorder's own entry points."""
from __future__ import annotations

import asyncio

import psycopg

from hub.fhir.identifiers import NHS_NUMBER
from tests.pipeline.test_plan_assembly import _message
from tests.pipeline.test_recorder_batch import _record

LOCAL = "https://example.org/local-ids"


def _patient(pid: str, identifiers: list[dict]) -> dict:
    return {"resourceType": "Patient", "id": pid, "identifier": identifiers, "name": [{"family": pid}]}


def _goal(gid: str, pid: str, addresses: str | None = None) -> dict:
    goal = {"resourceType": "Goal", "id": gid, "lifecycleStatus": "active", "description": {"text": gid},
            "subject": {"reference": f"Patient/{pid}"}}
    if addresses:
        goal["addresses"] = [{"reference": addresses}]
    return goal


def _stored(url: str, res_type: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT res_id FROM resource WHERE res_type = %s", (res_type,))}


def test_a_message_naming_a_plan_the_record_lacks_is_dead_lettered_with_the_reason(clean_db):
    good = _message(0, "src-a", "a1", [_patient("a1", [{"system": LOCAL, "value": "A1"}]), _goal("g-ok", "a1")])
    bad = _message(1, "src-a", "a2", [_patient("a2", [{"system": LOCAL, "value": "A2"}]),
                                      _goal("g-bad", "a2", addresses="Condition/nowhere")])
    # Batched together (the batch fails whole and falls back to one at a time), then alone.
    rejected = asyncio.run(_record(clean_db, [[good, bad]]))
    assert [(r.message.offset, r.reason) for r in rejected] == [(1, "processing")]
    assert "Condition/nowhere" in rejected[0].detail and "Goal.addresses[0]" in rejected[0].detail
    assert _stored(clean_db, "Goal") == {"g-ok"}
    alone = _message(2, "src-a", "a1", [_goal("g-bad2", "a1", addresses="CarePlan/none")])
    again = asyncio.run(_record(clean_db, [[alone]]))
    assert [r.reason for r in again] == ["processing"] and "CarePlan/none" in again[0].detail
    assert _stored(clean_db, "Goal") == {"g-ok"}


def test_a_message_referring_to_its_own_resources_in_any_order_is_recorded(clean_db):
    resources = [_goal("g-first", "o1", addresses="Condition/c-later"),
                 {"resourceType": "Condition", "id": "c-later", "subject": {"reference": "Patient/o1"},
                  "code": {"text": "Back pain"}},
                 _patient("o1", [{"system": LOCAL, "value": "O1"}])]
    assert asyncio.run(_record(clean_db, [[_message(0, "src-o", "o1", resources)]])) == []
    assert asyncio.run(_record(clean_db, [[_message(1, "src-o", "o1", resources[:2] + [
        {**resources[0], "id": "g-second"}])]])) == []
    assert _stored(clean_db, "Goal") == {"g-first", "g-second"}


def test_a_placeholder_nhs_number_never_joins_two_people(clean_db):
    placeholder = {"system": NHS_NUMBER, "value": "0000000000"}  # passes Modulus 11; nobody's number
    batches = [[_message(0, "gp-a", "p1", [_patient("p1", [placeholder, {"system": LOCAL, "value": "GA-1"}])])],
               [_message(1, "gp-b", "p2", [_patient("p2", [placeholder, {"system": LOCAL, "value": "GB-1"}])])]]
    assert asyncio.run(_record(clean_db, batches)) == []
    assert len(_stored(clean_db, "Patient")) == 2
