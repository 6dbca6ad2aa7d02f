"""The recorder's batch write (record_together) against the one-message-at-a-time path it
replaces on the hot path: same record, and a failing batch falls back to one message at a time."""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import AsyncConnection

from hub.bus.envelope import Envelope
from hub.bus.worker import Message
from hub.fhir.identifiers import UNVERIFIED_NHS_NUMBER
from hub.pipeline import recorder
from hub.store import batch as store_batch
from tests.pipeline.conftest import count

NHS = "https://fhir.nhs.uk/Id/nhs-number"
LOCAL = "https://example.org/partner-ids"


def _message(offset: int, source: str, patient_id: str, obs_id: str, *, identifiers: list[dict],
             code: str = "WT") -> Message:
    payload = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": patient_id, "identifier": identifiers,
                      "name": [{"family": "Jones", "given": ["Sam"]}], "birthDate": "1980-01-01"}},
        {"resource": {"resourceType": "Observation", "id": obs_id, "status": "final",
                      "code": {"coding": [{"system": LOCAL, "code": code}]},
                      "subject": {"reference": f"Patient/{patient_id}"}}}]}).encode()
    envelope = Envelope(source=source, kind="fhir-bundle", person_key=patient_id, payload=payload,
                        content_type="application/fhir+json")
    return Message("bundles", 0, offset, envelope.key(), envelope.payload, envelope.headers(), 0)


def _batch() -> list[Message]:
    nhs = {"system": NHS, "value": "9990000026"}
    return [
        _message(0, "src-a", "a1", "obs-a1", identifiers=[nhs]),
        # Another source's record of the same person, in the same batch: found by the NHS number
        # the first message's (not yet written) Patient carries.
        _message(1, "src-b", "b1", "obs-b1", identifiers=[nhs, {"system": LOCAL, "value": "B-1"}]),
        _message(2, "src-a", "a1", "obs-a1", identifiers=[nhs]),  # a replay of the first
        _message(3, "src-a", "a2", "obs-a2", identifiers=[{"system": LOCAL, "value": "A-2"}]),
    ]


async def _record(url: str, batches: list[list[Message]]) -> list:
    rejected = []
    async with await AsyncConnection.connect(url) as conn:
        for batch in batches:
            rejected += (await recorder.record_batch(conn, batch)).rejected
    return rejected


def _snapshot(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return {
            "links": conn.execute("SELECT source, source_id, patient_id, method FROM person_link "
                                  "ORDER BY 1, 2").fetchall(),
            "versions": conn.execute("SELECT res_type, res_id, version, method FROM resource_version "
                                     "WHERE res_type <> 'Provenance' ORDER BY 1, 2, 3").fetchall(),
            "current": conn.execute("SELECT res_type, res_id, version, content::jsonb - 'meta' FROM resource "
                                    "WHERE res_type <> 'Provenance' ORDER BY 1, 2").fetchall(),
            "provenance": conn.execute("SELECT count(*) FROM resource WHERE res_type = 'Provenance'").fetchone()[0],
            "events": conn.execute("SELECT res_type, res_id, version FROM outbox WHERE res_type <> 'Provenance' "
                                   "ORDER BY seq").fetchall(),
            "tokens": conn.execute("SELECT res_type, res_id, param, system, code FROM idx_token "
                                   "WHERE res_type <> 'Provenance' ORDER BY 1, 2, 3, 4, 5").fetchall(),
            "references": conn.execute("SELECT res_type, res_id, param, target_type, target_id FROM idx_reference "
                                       "WHERE res_type <> 'Provenance' ORDER BY 1, 2, 3, 4, 5").fetchall(),
        }


def test_batch_records_what_one_message_at_a_time_records(clean_db):
    url = clean_db
    assert asyncio.run(_record(url, [[m] for m in _batch()])) == []
    one_by_one = _snapshot(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE resource, resource_version, outbox, person_link, idx_token, idx_string, "
                     "idx_reference, idx_date, idx_number, idx_quantity, idx_uri")
    assert asyncio.run(_record(url, [_batch()])) == []
    together = _snapshot(url)
    assert together == one_by_one
    # One person for both sources; the second source's Observation points at them.
    assert {(s, i, p) for s, i, p, _ in together["links"]} >= {("src-a", "a1", "a1"), ("src-b", "b1", "a1")}
    assert ("Patient", "a1", 2) in {row[:3] for row in together["current"]}
    assert together["provenance"] == 3  # the replay wrote nothing, so no Provenance for it
    # A replay of the whole batch writes nothing at all.
    before = count(url, "SELECT count(*) FROM resource_version")
    assert asyncio.run(_record(url, [_batch()])) == []
    assert count(url, "SELECT count(*) FROM resource_version") == before


def test_a_bad_message_in_a_batch_is_rejected_alone(clean_db):
    url = clean_db
    batch = _batch()
    # Passes every check before the database, then the database refuses it. The hub's checks leave
    # no known input PostgreSQL cannot store (NUL characters, runaway numbers and nesting are
    # refused before it), so a trigger stands in for whatever else the database may refuse.
    batch.insert(1, _message(9, "src-c", "c1", "obs-c1", identifiers=[{"system": LOCAL, "value": "C-1"}]))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION test_refuse_row() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'refused by the database'; END $$")
        conn.execute("CREATE TRIGGER test_refuse BEFORE INSERT OR UPDATE ON resource FOR EACH ROW "
                     "WHEN (NEW.res_id = 'obs-c1') EXECUTE FUNCTION test_refuse_row()")
    try:
        rejected = asyncio.run(_record(url, [batch]))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER test_refuse ON resource")
            conn.execute("DROP FUNCTION test_refuse_row()")
    assert [(r.message.offset, r.reason) for r in rejected] == [(9, "exception")]
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Observation'") == 3
    assert count(url, "SELECT count(*) FROM person_link WHERE source = 'src-c'") == 0
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Provenance'") == 3


def test_a_concurrent_insert_makes_the_batch_fall_back(clean_db, monkeypatch):
    """Another writer creates a resource after the batch looked (an absent row cannot be
    locked): the batch's insert fails and the messages are recorded one at a time, on top."""
    url = clean_db
    write_staged = store_batch.write_staged

    async def racing(conn, staged, existing):
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("INSERT INTO resource (res_type, res_id, version, last_updated, content) "
                          "VALUES ('Observation', 'obs-a2', 1, now(), '{}')")
        await write_staged(conn, staged, existing)

    monkeypatch.setattr(store_batch, "write_staged", racing)
    assert asyncio.run(_record(url, [_batch()])) == []
    assert count(url, "SELECT version FROM resource WHERE res_type = 'Observation' AND res_id = 'obs-a2'") == 2
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Observation'") == 3
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Provenance'") == 3


def _plan_message(offset: int, plan_id: str, start: str, end: str) -> Message:
    plan = json.loads((Path(__file__).resolve().parents[2] / "profiles/examples/CarePlan-adult-plan.json")
                      .read_text())
    plan = json.loads(json.dumps(plan).replace('"Patient/adult-patient"', '"Patient/plan-person"'))
    plan.update(id=plan_id, period={"start": start, "end": end})
    payload = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "plan-person",
                      "identifier": [{"system": LOCAL, "value": "PLAN-1"}]}},
        {"resource": plan}]}).encode()
    envelope = Envelope(source="src-plans", kind="fhir-bundle", person_key="plan-person", payload=payload,
                        content_type="application/fhir+json")
    return Message("bundles", 0, offset, envelope.key(), envelope.payload, envelope.headers(), 0)


def test_overlapping_plans_from_the_pipeline_become_one_plan(clean_db, hold_referenced):
    """Two open plans for one person and overlapping periods in one batch: the second joins the
    first (hub.pipeline.plans), so the one-plan rule holds without refusing a source's words; a
    plan for a later period stays a plan of its own."""
    example = json.loads(_plan_message(0, "plan-2026", "2026-01-01", "2026-12-31").value)
    hold_referenced([e["resource"] for e in example["entry"]])  # the plan's goals, team and funders
    batch = [_plan_message(0, "plan-2026", "2026-01-01", "2026-12-31"),
             _plan_message(1, "plan-2026-bis", "2026-06-01", "2027-05-31"),
             _plan_message(2, "plan-2028", "2028-01-01", "2028-12-31")]
    assert asyncio.run(_record(clean_db, [batch])) == []
    with psycopg.connect(clean_db) as conn:
        plans = {row[0]: row[1] for row in conn.execute(
            "SELECT res_id, content::jsonb FROM resource WHERE res_type = 'CarePlan'")}
    assert sorted(plans) == ["plan-2026", "plan-2028"]
    assert plans["plan-2026"]["period"] == {"start": "2026-01-01", "end": "2026-12-31"}


def test_a_number_that_failed_the_nhs_check_never_joins_two_people(clean_db):
    """Two sources send the same impossible NHS number for different people: kept on each, and
    never used to match (an NHS number failing Modulus 11 is not an NHS number)."""
    bad = {"system": UNVERIFIED_NHS_NUMBER, "value": "9990000017"}
    batches = [[_message(0, "src-a", "a9", "obs-a9", identifiers=[bad, {"system": LOCAL, "value": "A-9"}])],
               [_message(1, "src-b", "b9", "obs-b9", identifiers=[bad, {"system": LOCAL, "value": "B-9"}])]]
    assert asyncio.run(_record(clean_db, batches)) == []
    with psycopg.connect(clean_db) as conn:
        patients = conn.execute("SELECT content::jsonb FROM resource WHERE res_type = 'Patient'").fetchall()
    assert len(patients) == 2
    assert all(bad["value"] in {i["value"] for i in p[0]["identifier"]} for p in patients)


def _observation_message(offset: int, received_at: datetime, value: str) -> Message:
    payload = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "fresh-p", "identifier": [{"system": LOCAL, "value": "F-1"}],
                      "name": [{"family": value}]}},
        {"resource": {"resourceType": "Observation", "id": "fresh-obs", "status": "final",
                      "code": {"text": value}, "subject": {"reference": "Patient/fresh-p"}}}]}).encode()
    envelope = Envelope(source="src-f", kind="fhir-bundle", person_key="fresh-p", payload=payload,
                        content_type="application/fhir+json", received_at=received_at)
    return Message("bundles", 0, offset, envelope.key(), envelope.payload, envelope.headers(), 0)


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "one-at-a-time"])
def test_an_older_message_replayed_late_does_not_put_older_words_back(clean_db, batched):
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    older, newer = _observation_message(0, monday, "Older"), _observation_message(1, monday + timedelta(hours=2), "Newer")
    assert asyncio.run(_record(clean_db, [[older, newer]] if batched else [[older], [newer]])) == []
    replay = _observation_message(2, monday, "Older")  # the same envelope time: a replay of the first
    assert asyncio.run(_record(clean_db, [[replay]])) == []
    with psycopg.connect(clean_db) as conn:
        rows = dict(conn.execute("SELECT res_type, content::jsonb FROM resource "
                                 "WHERE res_type IN ('Patient', 'Observation')").fetchall())
        versions = conn.execute("SELECT count(*) FROM resource_version WHERE res_id = 'fresh-obs'").fetchone()[0]
    assert rows["Observation"]["code"] == {"text": "Newer"}
    assert rows["Patient"]["name"] == [{"family": "Newer"}]
    assert versions == 2


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "one-at-a-time"])
def test_an_older_message_recorded_late_still_adds_what_is_new_to_the_person(clean_db, batched):
    """An A47 is keyed by the identifier it changes, so it can be recorded after a newer message
    about the person from another partition: it may not overwrite the newer words, but the
    identifier it brings is not lost."""
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    newer = _observation_message(1, monday + timedelta(hours=2), "Newer")
    older = json.loads(_observation_message(0, monday, "Older").value)
    older["entry"][0]["resource"]["identifier"].append({"system": LOCAL, "value": "F-2"})
    older["entry"] = older["entry"][:1]
    envelope = Envelope(source="src-f", kind="fhir-bundle", person_key="fresh-p", payload=json.dumps(older).encode(),
                        content_type="application/fhir+json", received_at=monday)
    late = Message("bundles", 0, 2, envelope.key(), envelope.payload, envelope.headers(), 0)
    assert asyncio.run(_record(clean_db, [[newer, late]] if batched else [[newer], [late]])) == []
    with psycopg.connect(clean_db) as conn:
        person = conn.execute("SELECT content::jsonb FROM resource WHERE res_type = 'Patient'").fetchone()[0]
    assert person["name"] == [{"family": "Newer"}]
    assert {i["value"] for i in person["identifier"]} == {"F-1", "F-2"}


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "one-at-a-time"])
def test_a_resend_recorded_after_newer_messages_writes_no_version(clean_db, batched):
    """A resend keeps its first copy's received-at (connectors/hl7v2): recorded after newer
    messages about the person (another partition, or a whole stream sent again), it neither
    rewords an identifier nor reorders the record's fields, so it writes nothing at all."""
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    first = _observation_message(0, monday, "Older")
    bundle = json.loads(_observation_message(1, monday, "Newer").value)
    patient = bundle["entry"][0]["resource"]
    patient["identifier"][0]["use"] = "official"
    bundle["entry"][0]["resource"] = {"gender": "unknown", **patient}  # other fields, another order
    envelope = Envelope(source="src-f", kind="fhir-bundle", person_key="fresh-p", payload=json.dumps(bundle).encode(),
                        content_type="application/fhir+json", received_at=monday + timedelta(hours=2))
    newer = Message("bundles", 0, 1, envelope.key(), envelope.payload, envelope.headers(), 0)
    assert asyncio.run(_record(clean_db, [[first, newer]] if batched else [[first], [newer]])) == []
    before = count(clean_db, "SELECT count(*) FROM resource_version")
    resends = [_observation_message(2, monday, "Older"),
               Message("bundles", 0, 3, envelope.key(), envelope.payload, envelope.headers(), 0)]
    assert asyncio.run(_record(clean_db, [resends] if batched else [[m] for m in resends])) == []
    assert count(clean_db, "SELECT count(*) FROM resource_version") == before
    with psycopg.connect(clean_db) as conn:
        person = conn.execute("SELECT content::jsonb FROM resource WHERE res_type = 'Patient'").fetchone()[0]
    assert person["identifier"] == [{"system": LOCAL, "value": "F-1", "use": "official"}]
    assert person["gender"] == "unknown" and person["name"] == [{"family": "Newer"}]
