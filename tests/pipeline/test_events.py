"""Change events for API writes (outbox → relay → Kafka) and the store's skip-unchanged update."""
from __future__ import annotations

import asyncio
import json
import threading

import psycopg
import pytest

from hub.bus.replay import read_topic
from hub.bus.topics import Topics
from hub.pipeline.service import Relay
from hub.search.access import Access
from hub.store import resources as repository
from tests.factories import patient
from tests.pipeline.conftest import count, wait_for

pytestmark = pytest.mark.integration


def test_api_writes_become_change_events_in_order(clean_db, hub_url, fhir, bus):
    created = fhir.post("/Patient", json=patient(), headers={"Content-Type": "application/fhir+json"}).json()
    fhir.put(f"/Patient/{created['id']}", json={**created, "gender": "other"},
             headers={"Content-Type": "application/fhir+json"})
    fhir.delete(f"/Patient/{created['id']}")
    # Three versions of the Patient and, for each, the Provenance naming the client that wrote it.
    assert count(clean_db, "SELECT count(*) FROM outbox WHERE res_type = 'Patient'") == 3
    assert count(clean_db, "SELECT count(*) FROM outbox WHERE res_type = 'Provenance'") == 3
    stop = threading.Event()
    relay = Relay(bus, clean_db)
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: count(clean_db, "SELECT count(*) FROM outbox") == 0, 30, "the relay to drain the outbox")
        assert relay.ready()
    finally:
        stop.set()
        thread.join(10)
    # Keyed by person: the Patient's own events, and the rest of its record's, share one key.
    events = [json.loads(r.value) for r in read_topic(bus, Topics(bus.topic_prefix).record_events)
              if r.key == f"Patient/{created['id']}".encode()]
    events = [e for e in events if (e["resourceType"], e["id"]) == ("Patient", created["id"])]
    assert [(e["versionId"], e["method"]) for e in events] == [("1", "POST"), ("2", "PUT"), ("3", "DELETE")]


def test_update_can_skip_content_that_has_not_changed(clean_db):
    async def scenario() -> tuple[int, str, int, int]:
        async with await psycopg.AsyncConnection.connect(clean_db) as conn:
            body = patient()
            first, _ = await repository.update(conn, "Patient", "p-skip", dict(body), skip_unchanged=True, access=Access.system())
            same, created = await repository.update(conn, "Patient", "p-skip",
                                                    {**body, "meta": {"source": "elsewhere"}}, skip_unchanged=True, access=Access.system())
            changed, _ = await repository.update(conn, "Patient", "p-skip", {**body, "gender": "other"},
                                                 skip_unchanged=True, access=Access.system())
            plain, _ = await repository.update(conn, "Patient", "p-skip", {**body, "gender": "other"},
                                                access=Access.system())
            await conn.commit()
            assert not created
            return same.version, same.method, changed.version, plain.version

    same_version, method, changed_version, plain_version = asyncio.run(scenario())
    assert (same_version, method) == (1, repository.UNCHANGED)
    assert changed_version == 2
    assert plain_version == 3  # without skip_unchanged every PUT is a version, as the REST API expects
    assert count(clean_db, "SELECT count(*) FROM outbox WHERE res_id = 'p-skip'") == 3
