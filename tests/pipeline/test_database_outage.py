"""The database going away mid-stream: the recorder backs off and retries, commits nothing while
it is away, and loses nothing. A PostgreSQL of its own, so stopping it disturbs no other test."""
from __future__ import annotations

import pytest

from hub.bus.envelope import Envelope
from hub.runtime.embedded import EmbeddedPostgres
from hub.store.migrate import migrate
from tests.pipeline.conftest import count, person_bundle, send, wait_for, worker_env
from tests.pipeline.test_pipeline import nhs_for

pytestmark = pytest.mark.integration


def test_recorder_survives_the_database_going_away(tmp_path, bus, workers):
    server = EmbeddedPostgres(tmp_path / "db")
    url = server.start()
    try:
        migrate(url)
        workers.start("mapper", worker_env(bus, url))
        recorder = workers.start("recorder", worker_env(bus, url))
        first = [Envelope(source="s", kind="fhir-bundle", person_key=f"p{p}", payload=person_bundle(p, 0, nhs=nhs_for(p)))
                 for p in range(100)]
        send(bus, first)
        wait_for(lambda: count(url, "SELECT count(*) FROM resource WHERE res_type = 'Observation'") == 100,
                 60, "the first records")
        server.stop()
        later = [Envelope(source="s", kind="fhir-bundle", person_key=f"p{p}",
                          payload=person_bundle(p, i, nhs=nhs_for(p))) for i in (1, 2) for p in range(100)]
        send(bus, later)
        wait_for(lambda: "transient failure" in open(recorder.log_path).read(), 30, "the recorder to back off")
        url = server.start()
        wait_for(lambda: count(url, "SELECT count(*) FROM resource WHERE res_type = 'Observation'") == 300,
                 60, "every record after the database returned")
        assert recorder.poll() is None  # it kept running throughout
        assert count(url, "SELECT count(*) FROM resource_version WHERE res_type = 'Observation'") == 300
        assert count(url, "SELECT count(*) FROM resource WHERE res_type = 'Patient'") == 100
    finally:
        workers.stop_all()
        server.stop()
