"""The event pipeline end to end: a real Tansu broker, real PostgreSQL, workers as real
`ipc-hub worker` processes."""
from __future__ import annotations

import json
import signal

import httpx
import psycopg
import pytest

from hub.bus.envelope import Envelope
from hub.bus.replay import read_topic
from hub.bus.topics import Topics
from tests.conftest import empty_database
from tests.factories import nhs_check_digit
from tests.integration.conftest import free_port
from tests.pipeline.conftest import committed_everything, count, person_bundle, send, wait_for, worker_env

pytestmark = pytest.mark.integration


def nhs_for(person: int) -> str:
    """A valid NHS number in the test range, the same for a person every time."""
    n = person * 3
    while True:
        first = f"999{n:06d}"
        check = nhs_check_digit(first)
        if check is not None:
            return f"{first}{check}"
        n += 1


def stream(people: int, per_person: int, source: str = "partner-a") -> list[Envelope]:
    return [Envelope(source=source, kind="fhir-bundle", person_key=f"p{p}",
                     payload=person_bundle(p, i, nhs=nhs_for(p)), content_type="application/fhir+json")
            for i in range(per_person) for p in range(people)]


def observations(url: str) -> int:
    return count(url, "SELECT count(*) FROM resource WHERE res_type = 'Observation'")


def versions_without_provenance(url: str) -> int:
    return count(url, """
        SELECT count(*) FROM resource_version v WHERE v.res_type NOT IN ('Provenance')
        AND NOT EXISTS (SELECT 1 FROM resource p, json_array_elements(p.content->'target') t
                        WHERE p.res_type = 'Provenance'
                        AND t->>'reference' = v.res_type || '/' || v.res_id || '/_history/' || v.version)""")


def test_ten_thousand_envelopes_arrive_once_through_a_kill_9(clean_db, bus, workers):
    url = clean_db
    env = worker_env(bus, url)
    workers.start("mapper", env)
    recorder = workers.start("recorder", env)
    send(bus, stream(1000, 10))
    wait_for(lambda: observations(url) >= 2000, 120, "the first records")
    recorder.send_signal(signal.SIGKILL)
    recorder.wait()
    workers.start("recorder", env)
    wait_for(lambda: observations(url) == 10_000, 180, "every observation")
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") == 1000
    # No resource written twice: every Observation and Patient has exactly one version.
    assert count(url, "SELECT count(*) FROM resource_version WHERE res_type IN ('Patient', 'Observation')") == 11_000
    assert versions_without_provenance(url) == 0
    # The ConceptMap added SNOMED CT beside the partner's code.
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Observation' "
                      "AND content::text LIKE '%27113001%'") == 10_000


def test_poison_message_is_dead_lettered_then_replayed_once(clean_db, bus, workers, tmp_path):
    url = clean_db
    topics = Topics(bus.topic_prefix)
    port = free_port()
    mapper = workers.start("mapper", worker_env(bus, url, HUB_WORKER_HTTP_PORT=str(port)))
    workers.start("recorder", worker_env(bus, url))
    poison = Envelope(source="partner-b", kind="care-note", person_key="p1",
                      payload=b'{"note": "x"}', content_type="application/json")
    send(bus, [poison])
    letters = wait_for(lambda: list(read_topic(bus, topics.deadletter, timeout=2)), 30, "a dead letter")
    assert len(letters) == 1
    letter = letters[0]
    assert letter.headers["dlq-reason"] == b"not-supported"
    assert letter.headers["dlq-step"] == b"find-mapping"
    assert letter.value == poison.payload
    assert letter.headers["dlq-topic"] == topics.inbound.encode()
    # The worker's own endpoints: dead letters by reason, messages per topic, health.
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'ipc_dead_letters_total{reason="not-supported",worker="mapper"} 1.0' in text
    assert f'ipc_messages_in_total{{topic="{topics.inbound}",worker="mapper"}} 1.0' in text
    assert f'ipc_messages_out_total{{topic="{topics.deadletter}",worker="mapper"}} 1.0' in text
    assert "ipc_record_latency_seconds_bucket" in text
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    # Fix the mapping (deploy a mapper that knows the kind) and replay the dead letter.
    mapper.terminate()
    mapper.wait(15)
    fixed = worker_env(bus, url, HUB_MAPPINGS="mappings.fhir_bundle,tests.pipeline.care_note_mapping")
    workers.start("mapper", fixed)
    from hub.bus.replay import replay_dead_letters

    assert len(replay_dead_letters(bus, topics.deadletter, reason="not-supported")) == 1
    wait_for(lambda: count(url, "SELECT count(*) FROM resource WHERE res_type = 'Communication'") == 1,
             30, "the replayed note in the record")
    assert replay_dead_letters(bus, topics.deadletter, reason="not-supported")  # a second replay ...
    send(bus, [Envelope(source="partner-a", kind="fhir-bundle", person_key="p9",
                        payload=person_bundle(9, 0, nhs=nhs_for(9)))])
    wait_for(lambda: observations(url) == 1, 30, "a later message")  # ... has been processed by now
    assert count(url, "SELECT count(*) FROM resource_version WHERE res_type = 'Communication'") == 1


def test_ambiguous_demographics_raise_a_review_task_never_a_merge(clean_db, bus, workers):
    url = clean_db
    workers.start("mapper", worker_env(bus, url))
    workers.start("recorder", worker_env(bus, url))
    send(bus, [
        # The same name written two ways ("O'Brien", "OBrien"): still a probable match to review.
        Envelope(source="gp-x", kind="fhir-bundle", person_key="a",
                 payload=person_bundle(1, 0, nhs=nhs_for(1), family="O'Brien")),
        Envelope(source="charity-y", kind="fhir-bundle", person_key="b",
                 payload=person_bundle(2, 0, nhs="", family="OBrien")),
    ])
    wait_for(lambda: count(url, "SELECT count(*) FROM resource WHERE res_type = 'Task'") >= 1, 30, "a review Task")
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") == 2
    with psycopg.connect(url) as conn:
        task = json.loads(conn.execute("SELECT content::text FROM resource WHERE res_type = 'Task'").fetchone()[0])
    assert task["status"] == "requested"
    assert task["code"]["coding"][0]["code"] == "review-possible-duplicate"
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Patient' AND content::text LIKE '%\"link\"%'") == 0


def test_same_person_from_two_sources_by_nhs_number_and_a_merge(clean_db, bus, workers):
    url = clean_db
    workers.start("mapper", worker_env(bus, url))
    workers.start("recorder", worker_env(bus, url))
    send(bus, [Envelope(source="gp-x", kind="fhir-bundle", person_key="k", payload=person_bundle(1, 0, nhs=nhs_for(1)))])
    wait_for(lambda: observations(url) == 1, 30, "the first source")
    send(bus, [
        Envelope(source="hosp-z", kind="fhir-bundle", person_key="k", payload=person_bundle(1, 1, nhs=nhs_for(1))),
        Envelope(source="hosp-z", kind="fhir-bundle", person_key="k", payload=person_bundle(2, 0, nhs=nhs_for(2))),
        Envelope(source="hosp-z", kind="person-merge", person_key="k",
                 payload=json.dumps({"survivor": "p1", "retired": "p2"}).encode()),
    ])
    wait_for(lambda: count(url, "SELECT count(*) FROM resource WHERE res_type = 'Patient' "
                               "AND content::text LIKE '%replaced-by%'") == 1, 30, "the merge")
    # The NHS number joined hosp-z's p1 to gp-x's person: two Patients in all, not three.
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") == 2
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Patient' "
                      "AND content::text LIKE '%\"replaces\"%'") == 1
    # Both observations about person 1 point at the one shared Patient.
    assert observations(url) == 3
    assert count(url, "SELECT count(DISTINCT content->'subject'->>'reference') FROM resource "
                      "WHERE res_type = 'Observation'") == 2
    # Merging keeps history: the retired Patient has an earlier version.
    assert count(url, "SELECT max(version) FROM resource WHERE res_type = 'Patient' "
                      "AND content::text LIKE '%replaced-by%'") == 2


def record_digest(url: str) -> list[tuple[str, str, str]]:
    """The record as (type, id, content without meta), Provenance aside (it names offsets)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT res_type, res_id, (content::jsonb - 'meta')::text FROM resource "
                            "WHERE res_type <> 'Provenance' ORDER BY 1, 2").fetchall()
    return [tuple(r) for r in rows]


def test_two_recorders_split_partitions_and_make_the_same_record_as_one(clean_db, bus, workers, kafka):
    from hub.bus.kafka import BusSettings
    from hub.bus.replay import replay_topic
    from hub.bus.topics import ensure_topics

    url = clean_db
    feed = stream(200, 5)
    # One recorder.
    workers.start("mapper", worker_env(bus, url))
    workers.start("recorder", worker_env(bus, url))
    send(bus, feed)
    wait_for(lambda: observations(url) == 1000, 60, "the record from one recorder")
    one = record_digest(url)
    workers.stop_all()
    # From an empty database again: the record and its bookkeeping (person links, and the
    # per-source freshness, which would take the same envelopes sent again for what they are,
    # messages already recorded).
    empty_database(url)
    # Two recorders in one group, on fresh topics.
    two_bus = BusSettings(bootstrap=kafka, topic_prefix=bus.topic_prefix + "b", partitions=4,
                          session_timeout_ms=2000, heartbeat_interval_ms=500)
    ensure_topics(kafka, Topics(two_bus.topic_prefix), 4)
    env = worker_env(two_bus, url)
    workers.start("mapper", env)
    first, second = workers.start("recorder", env), workers.start("recorder", env)
    wait_for(lambda: all(_assigned(p) and len(_assigned(p)) < 4 for p in (first, second)), 30,
             "both recorders holding partitions")
    send(two_bus, feed)
    wait_for(lambda: observations(url) == 1000, 60, "the record from two recorders")
    assert record_digest(url) == one
    assert sorted(_assigned(first) + _assigned(second)) == [0, 1, 2, 3]
    # Replaying a whole partition of mapped Bundles changes nothing.
    before = count(url, "SELECT count(*) FROM resource_version")
    topics = Topics(two_bus.topic_prefix)
    assert replay_topic(two_bus, topics.bundles, 0, 0) > 0
    wait_for(lambda: committed_everything(two_bus, topics.group("recorder"), topics.bundles), 30,
             "the recorders to pass the replayed records")
    assert count(url, "SELECT count(*) FROM resource_version") == before


def _assigned(proc) -> list[int]:
    """The partitions a worker process last logged as assigned."""
    lines = [line for line in open(proc.log_path) if "holds partitions:" in line]
    if not lines:
        return []
    text = lines[-1].rsplit("holds partitions:", 1)[1].strip()
    return [int(p) for p in text.split(",") if p]
