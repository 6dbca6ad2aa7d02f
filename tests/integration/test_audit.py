"""Audit over real HTTP and real PostgreSQL: every read, search and write (refused ones too)
becomes an AuditEvent findable by patient, and the audit trail is itself guarded and audited."""
from __future__ import annotations

import base64
import time
from collections.abc import Callable

import httpx
import psycopg
import pytest

from tests import factories
from tests.integration.conftest import mint_token

AUDITOR_SCOPES = ("system/AuditEvent.rs",)


@pytest.fixture()
def auditor(fhir_as) -> httpx.Client:
    return fhir_as(partner_class="nhs", organisation="X26", client_id=factories.unique("auditor-"),
                   scopes=AUDITOR_SCOPES)


def audit_events(auditor: httpx.Client, params: dict, want: Callable[[list[dict]], bool],
                 timeout: float = 10.0) -> list[dict]:
    """Search the audit trail until `want(events)` holds: records are written off the request path."""
    deadline = time.monotonic() + timeout
    while True:
        response = auditor.get("/AuditEvent", params=params)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        events = [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "AuditEvent"]
        if want(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit record matched within {timeout} s: {events}")
        time.sleep(0.05)


def by_client(events: list[dict], client_id: str) -> list[dict]:
    return [e for e in events if e["agent"][0].get("who", {}).get("identifier", {}).get("value") == client_id]


def subtype(event: dict) -> str:
    return event["subtype"][0]["code"]


def create_patient(fhir: httpx.Client, **extra) -> str:
    response = fhir.post("/Patient", json=factories.patient(**extra),
                         headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_read_by_one_client_is_findable_by_patient_with_its_client_org_and_outcome(fhir, fhir_as, auditor):
    patient_id = create_patient(fhir)
    reader_id = factories.unique("la-reader-")
    reader = fhir_as(partner_class="local-authority", organisation="E09000033", client_id=reader_id,
                     scopes=("system/Patient.rs",), purpose_of_use="HOPERAT")
    assert reader.get(f"/Patient/{patient_id}").status_code == 200

    events = audit_events(auditor, {"patient": f"Patient/{patient_id}"},
                          lambda evs: any(subtype(e) == "read" for e in by_client(evs, reader_id)))
    event = next(e for e in by_client(events, reader_id) if subtype(e) == "read")
    assert event["type"]["code"] == "rest" and event["action"] == "R" and event["outcome"] == "0"
    client, organisation = event["agent"]
    assert client["requestor"] is True
    assert client["role"][0]["coding"][0]["code"] == "local-authority"
    assert client["purposeOfUse"][0]["coding"][0]["code"] == "HOPERAT"
    assert client["network"]["address"] == "127.0.0.1"
    assert organisation["who"]["identifier"]["value"] == "E09000033"
    assert {"reference": f"Patient/{patient_id}"} in [e.get("what") for e in event["entity"]]

    one = auditor.get(f"/AuditEvent/{event['id']}")
    assert one.status_code == 200 and one.json()["id"] == event["id"]
    as_xml = auditor.get(f"/AuditEvent/{event['id']}", params={"_format": "xml"})
    assert as_xml.status_code == 200 and "<AuditEvent xmlns=\"http://hl7.org/fhir\">" in as_xml.text
    assert f"<id value=\"{event['id']}\"/>" in as_xml.text


def test_a_search_is_findable_by_each_patient_it_disclosed(fhir, fhir_as, auditor):
    patient_id = create_patient(fhir)
    plan = factories.care_plan(f"Patient/{patient_id}")
    assert fhir.post("/CarePlan", json=plan, headers={"Content-Type": "application/fhir+json"}).status_code == 201
    searcher_id = factories.unique("searcher-")
    searcher = fhir_as(partner_class="nhs", organisation="RX1", client_id=searcher_id,
                       scopes=("system/CarePlan.rs",))
    found = searcher.get("/CarePlan", params={"subject": f"Patient/{patient_id}"})
    assert found.status_code == 200 and found.json()["total"] == 1

    posted = searcher.post("/CarePlan/_search", data={"subject": f"Patient/{patient_id}"},
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert posted.status_code == 200 and posted.json()["total"] == 1

    events = audit_events(auditor, {"patient": patient_id, "agent": searcher_id}, lambda evs: len(evs) == 2)
    assert all(subtype(e) == "search-type" and e["action"] == "E" for e in events)
    described = sorted((e["entity"][-1]["description"], base64.b64decode(e["entity"][-1]["query"]).decode())
                       for e in events)
    assert described == [("GET /fhir/CarePlan", f"subject=Patient%2F{patient_id}"),
                         ("POST /fhir/CarePlan/_search", f"subject=Patient%2F{patient_id}")]  # the form too


def test_writes_are_audited_as_create_update_and_delete(fhir, auditor):
    patient_id = create_patient(fhir)
    body = fhir.get(f"/Patient/{patient_id}").json()
    body["gender"] = "female"
    assert fhir.put(f"/Patient/{patient_id}", json=body,
                    headers={"Content-Type": "application/fhir+json"}).status_code == 200
    assert fhir.delete(f"/Patient/{patient_id}").status_code == 204

    events = audit_events(auditor, {"patient": patient_id},
                          lambda evs: {"create", "update", "delete"} <= {subtype(e) for e in evs})
    actions = {subtype(e): e["action"] for e in by_client(events, "test-admin")}
    assert actions["create"] == "C" and actions["update"] == "U" and actions["delete"] == "D"


def test_refused_attempts_are_audited_with_who_tried(fhir, fhir_as, auditor, hub_url):
    patient_id = create_patient(fhir)
    prober_id = factories.unique("prober-")
    prober = fhir_as(partner_class="charity", organisation="1234567", client_id=prober_id,
                     scopes=("system/Goal.rs",))
    assert prober.get(f"/Patient/{patient_id}").status_code == 403  # no Patient scope
    assert prober.get("/Patient/no-such-person").status_code in (403, 404)
    anonymous = httpx.get(f"{hub_url}/fhir/Patient/{patient_id}")
    assert anonymous.status_code == 401

    events = audit_events(auditor, {"patient": patient_id},
                          lambda evs: len(by_client(evs, prober_id)) == 1 and any(
                              e["agent"][0]["who"].get("display") == "unauthenticated caller" for e in evs))
    refused = by_client(events, prober_id)[0]
    assert refused["outcome"] == "4" and "403" in refused["outcomeDesc"]
    assert refused["agent"][1]["who"]["identifier"]["value"] == "1234567"
    assert audit_events(auditor, {"agent": prober_id, "outcome": "4"}, lambda evs: len(evs) == 2)


def test_reading_the_audit_trail_is_itself_audited(fhir, auditor, fhir_as):
    patient_id = create_patient(fhir)
    assert fhir.get(f"/Patient/{patient_id}").status_code == 200
    audit_events(auditor, {"patient": patient_id}, lambda evs: any(subtype(e) == "read" for e in evs))

    # A second auditor finds the first one's search of this person's trail, and what it asked.
    second = fhir_as(partner_class="nhs", organisation="X26", client_id=factories.unique("second-auditor-"),
                     scopes=AUDITOR_SCOPES)
    events = audit_events(second, {"patient": patient_id, "subtype": "search-type"},
                          lambda evs: any(e["entity"][-1].get("query") for e in evs))
    searched = events[-1]  # the oldest: the first auditor's first search
    assert searched["action"] == "E" and searched["outcome"] == "0"
    assert searched["agent"][0]["who"]["identifier"]["value"].startswith("auditor-")
    assert base64.b64decode(searched["entity"][-1]["query"]).decode() == f"patient={patient_id}"
    assert searched["entity"][-1]["description"] == "GET /fhir/AuditEvent"


def test_only_clients_with_audit_scope_see_the_trail_and_nobody_can_write_it(fhir_as, hub_url):
    reader = fhir_as(partner_class="nhs", scopes=("system/Patient.rs",))
    refused = reader.get("/AuditEvent", params={"patient": "x"})
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    assert httpx.get(f"{hub_url}/fhir/AuditEvent").status_code == 401
    writer = fhir_as(partner_class="nhs", scopes=("system/*.cruds",))
    assert writer.get("/AuditEvent").status_code == 403  # a wildcard granted for the record is not enough
    forged = writer.post("/AuditEvent", json={"resourceType": "AuditEvent"},
                         headers={"Content-Type": "application/fhir+json"})
    assert forged.status_code == 405
    assert writer.delete("/AuditEvent/00000000-0000-0000-0000-000000000000").status_code == 405


def test_date_count_paging_and_summary(fhir, auditor):
    patient_id = create_patient(fhir)
    for _ in range(3):
        assert fhir.get(f"/Patient/{patient_id}").status_code == 200
    audit_events(auditor, {"patient": patient_id}, lambda evs: len(evs) >= 4)  # create + 3 reads

    counted = auditor.get("/AuditEvent", params={"patient": patient_id, "_summary": "count"}).json()
    assert counted["total"] >= 4 and "entry" not in counted
    page = auditor.get("/AuditEvent", params={"patient": patient_id, "_count": "2"}).json()
    assert len(page["entry"]) == 2
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = auditor.get(next_url).json()
    assert {e["resource"]["id"] for e in second["entry"]}.isdisjoint({e["resource"]["id"] for e in page["entry"]})
    recorded = [e["resource"]["recorded"] for e in page["entry"]]
    assert recorded == sorted(recorded, reverse=True)

    assert auditor.get("/AuditEvent", params={"patient": patient_id, "date": "ge2000-01-01"}).json()["total"] >= 4
    assert auditor.get("/AuditEvent", params={"patient": patient_id, "date": "lt2000-01-01"}).json()["total"] == 0
    bad = auditor.get("/AuditEvent", params={"date": "last-tuesday"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert auditor.get("/AuditEvent/not-an-id").status_code == 404


def test_stopping_the_api_writes_every_queued_record_first(start_api, signing_keys, pg_url):
    api = start_api()
    patient_id = factories.unique("p-")
    token = mint_token(signing_keys, api.settings)
    with httpx.Client(base_url=f"{api.url}/fhir", headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(30):
            assert client.get(f"/Patient/{patient_id}").status_code == 404
    api.stop()
    with psycopg.connect(pg_url) as conn:  # no waiting: shutdown drained the queue
        written = conn.execute("SELECT count(*) FROM audit_event WHERE patients && %s AND outcome = 4",
                               ([patient_id],)).fetchone()[0]
    assert written == 30


def test_the_writer_reports_its_progress_in_metrics(fhir, hub_url, auditor):
    patient_id = create_patient(fhir)
    audit_events(auditor, {"patient": patient_id}, lambda evs: len(evs) == 1)
    metrics = httpx.get(f"{hub_url}/metrics").text
    written = next(line for line in metrics.splitlines() if line.startswith("ipc_audit_records_written_total"))
    assert float(written.split()[-1]) >= 1
    assert "ipc_audit_queue_depth" in metrics and "ipc_audit_write_failures_total" in metrics
