"""Statement lines through the real pipeline (Tansu broker, PostgreSQL, `ipc-hub worker`
processes): a line naming by NHS number someone the record does not hold yet is not dropped and
not filed in nobody's record. It goes to the dead-letter topic with its reason, and once the
person arrives a replay puts it in their record, once."""
from __future__ import annotations

import pytest

from connectors.statements import envelope_for
from hub.bus.envelope import Envelope
from hub.bus.replay import read_topic, replay_dead_letters
from hub.bus.topics import Topics
from tests.pipeline.conftest import count, person_bundle, send, wait_for, worker_env

pytestmark = pytest.mark.integration

NHS = "9990000018"
LINE = f"DPSS01,2026-10,L-1,{NHS},nhs,direct-payment,2026-10-01,Spend,PA,100.00,personal-assistant,,,,"


def test_a_line_for_someone_not_yet_in_the_record_waits_in_the_dead_letters_then_lands(clean_db, bus, workers):
    url, topics = clean_db, Topics(bus.topic_prefix)
    workers.start("mapper", worker_env(bus, url))
    workers.start("recorder", worker_env(bus, url))
    send(bus, [envelope_for("DPSS01", NHS, LINE, "0" * 64, 2)])
    [letter] = wait_for(lambda: list(read_topic(bus, topics.deadletter, timeout=2)), 30, "the dead letter")
    assert letter.headers["dlq-reason"] == b"not-found"
    assert b"does not hold yet" in letter.headers["dlq-detail"]
    assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'ChargeItem'") == 0
    # The council's extract brings her; the replayed line lands in her record, and only once.
    send(bus, [Envelope(source="partner-a", kind="fhir-bundle", person_key=f"nhs:{NHS}",
                        payload=person_bundle(1, 0, nhs=NHS))])
    wait_for(lambda: count(url, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") == 1, 30, "the person")
    assert len(replay_dead_letters(bus, topics.deadletter, reason="not-found")) == 1
    wait_for(lambda: count(url, "SELECT count(*) FROM resource WHERE res_type = 'ChargeItem'") == 1, 30,
             "the replayed line")
    assert count(url, "SELECT count(*) FROM resource r JOIN resource p ON p.res_type = 'Patient'"
                      " AND r.content->'subject'->>'reference' = 'Patient/' || p.res_id"
                      " WHERE r.res_type = 'ChargeItem'") == 1
