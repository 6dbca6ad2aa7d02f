"""`ipc-hub up` carries a feed end to end on the embedded default: envelope into its broker,
resource out of its FHIR API, counters on its /metrics; SIGTERM still leaves nothing behind."""
from __future__ import annotations

import httpx
import pytest

from connectors.hl7v2 import frame
from hub.bus.envelope import Envelope
from hub.bus.kafka import BusSettings
from tests.integration.conftest import free_port
from tests.integration.bulk_client import export
from tests.integration.test_cli import RunningHub, _processes_mentioning
from tests.factories import patient
from tests.integration.test_hl7v2_mllp import adt, msa
from tests.pipeline.cohort_cases import LONG_TERM, condition, multiple_conditions
from tests.pipeline.conftest import person_bundle, send, wait_for
from tests.pipeline.test_hl7v2_pipeline import exchange
from tests.pipeline.test_pipeline import nhs_for

pytestmark = pytest.mark.integration


def test_up_runs_the_workers(tmp_path):
    http_port, kafka_port = free_port(), free_port()
    hub = RunningHub(tmp_path / "hub-data", http_port, kafka_port)
    try:
        auth = hub.bearer()
        bus = BusSettings(bootstrap=f"127.0.0.1:{kafka_port}")
        send(bus, [Envelope(source="gp-up", kind="fhir-bundle", person_key="p1",
                            payload=person_bundle(1, 0, nhs=nhs_for(1)))])
        found = wait_for(lambda: httpx.get(f"{hub.base}/fhir/Observation", params={"code": "27113001"},
                                           headers=auth)
                         .json().get("total"), 60, "the observation through the API")
        assert found == 1
        provenance = httpx.get(f"{hub.base}/fhir/Provenance", headers=auth).json()
        assert provenance["total"] == 2  # one per place the message wrote to: his demographics, his health
        # The MLLP listener is part of `up`: an ADT message is acknowledged and reaches the API.
        ack = exchange(hub.mllp_port, [frame(adt("A28", "UP1", "M900^^^RXX01^MR"))])[0]
        assert msa(ack)[1:3] == ["AA", "UP1"]
        patients = wait_for(lambda: httpx.get(f"{hub.base}/fhir/Patient", params={"identifier": "M900"},
                                              headers=auth)
                            .json().get("total"), 60, "the HL7 v2 patient through the API")
        assert patients == 1
        metrics = httpx.get(f"{hub.base}/metrics").text
        assert 'ipc_messages_in_total{topic="ipc.inbound",worker="mapper"} 2.0' in metrics
        assert 'ipc_messages_in_total{topic="ipc.bundles",worker="recorder"} 2.0' in metrics
        assert 'ipc_mllp_messages_total{ack="AA"} 1.0' in metrics  # the MLLP listener's, merged in
        # The cohort worker is one of `up`'s children: an approved definition and a person who
        # meets it become a member Group and an offer, from the change events alone.
        assert _readiness(hub)[1]["processes"]["cohorts"]["ready"] is True
        fhir = httpx.Client(base_url=f"{hub.base}/fhir", headers={**auth, "Content-Type": "application/fhir+json"})
        person = fhir.post("/Patient", json=patient()).json()["id"]
        for code in LONG_TERM[:2]:
            assert fhir.post("/Condition", json=condition(f"Patient/{person}", code, "active")).status_code == 201
        made = fhir.post("/Group", json=multiple_conditions("def-up"))   # the hub assigns its id (HUB_CLIENT_IDS)
        assert made.status_code == 201, made.text
        gid = made.json()["id"]
        wait_for(lambda: fhir.get("/Task", params={"focus": f"Group/cohort-{gid}"}).json().get("total") == 1, 60,
                 "the cohort worker's offer under up")
        members = fhir.get(f"/Group/cohort-{gid}").json()["member"]
        assert [m["entity"]["reference"] for m in members] == [f"Patient/{person}"]
        # Bulk Data exports run in `up`'s exporter worker (the API under `up` runs none: where a
        # large one took the readers' share, make bench section cohorts).
        assert _readiness(hub)[1]["processes"]["exporter"]["ready"] is True
        exported = export(fhir, "/Patient/$export", {"_type": "Patient,Condition"})
        assert person in exported.ids("Patient") and len(exported.ids("Condition")) == 2
        fhir.close()
    finally:
        assert hub.stop() == 0
    assert _processes_mentioning(f"127.0.0.1:{kafka_port}") == []


def test_up_loads_the_demonstration_cohort_through_the_feeds_and_takes_mod_handovers(tmp_path):
    """On a first start `up` drops the sample MOD handover and LA extract into its watched
    folders; they reach the API through the connectors and the pipeline. The MOD connector it
    runs checks the hub's own tokens (a defence client's handover is accepted)."""
    import json
    import re
    from pathlib import Path

    import connectors.mod

    data_dir = tmp_path / "hub-data"
    hub = RunningHub(data_dir, free_port(), free_port(), demo=True)
    try:
        auth = hub.bearer()

        def total(params: dict) -> int:
            return httpx.get(f"{hub.base}/fhir/Patient", params=params, headers=auth).json().get("total", 0)

        mod_sample = json.loads((Path(connectors.mod.__file__).parent / "samples" / "handover-full.json").read_text())
        service_number = mod_sample["person"]["serviceNumber"]
        assert wait_for(lambda: total({"identifier": service_number}), 90, "the MOD sample's veteran") == 1
        assert wait_for(lambda: total({"identifier": "P100001"}), 90, "the LA sample's person") == 1
        assert (data_dir / "mod-drop" / "processed" / "handover-full.json").exists()
        # The statements connector runs under `up` too, watching its own drop folder: the sample
        # statement (six lines for the LA sample's P100002) lands as spend lines in her record.
        import connectors.statements

        assert wait_for(lambda: total({"identifier": "P100002"}), 90, "the LA sample's second person") == 1
        statement = (Path(connectors.statements.__file__).parent / "samples" / "statement.csv").read_bytes()
        partial = data_dir / "statements-drop" / "september.csv.part"
        partial.write_bytes(statement)
        partial.rename(partial.with_suffix(""))
        [susan] = httpx.get(f"{hub.base}/fhir/Patient", params={"identifier": "P100002"}, headers=auth).json()["entry"]

        def lines() -> int:
            return httpx.get(f"{hub.base}/fhir/ChargeItem", params={"subject": f"Patient/{susan['resource']['id']}"},
                             headers=auth).json().get("total", 0)

        wait_for(lambda: lines() >= 6, 90, "the sample statement's six lines")
        assert lines() == 6
        assert [p.name for p in (data_dir / "statements-drop" / "processed").glob("*september.csv")]
        # And the children's drop folder (issue 17), watched by its own supervised child: the
        # sample children reach the API (the acknowledgement rule is tests/integration/test_children_watch.py).
        import connectors.children

        children = (Path(connectors.children.__file__).parent / "samples" / "children.csv").read_bytes()
        partial = data_dir / "children-drop" / "children.csv.part"
        partial.write_bytes(children)
        partial.rename(partial.with_suffix(""))
        assert wait_for(lambda: total({"identifier": "CH-000101"}), 90, "the children's sample child") == 1
        assert [p.name for p in (data_dir / "children-drop" / "processed").glob("*children.csv")]

        secret = re.search(r"defence\s+(demo-defence)\s+(\S+)", "".join(hub.output))
        assert secret, "the banner lists no defence client"
        token = httpx.post(f"{hub.base}/auth/token", data={"grant_type": "client_credentials"},
                           auth=secret.groups()).json()["access_token"]
        minimal = (Path(connectors.mod.__file__).parent / "samples" / "handover-minimal.json").read_bytes()
        answer = httpx.post(f"http://127.0.0.1:{hub.mod_port}/handover", content=minimal,
                            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert answer.status_code == 202, answer.text
        refused = httpx.post(f"http://127.0.0.1:{hub.mod_port}/handover", content=minimal,
                             headers={**auth, "Content-Type": "application/json"})
        assert refused.status_code == 403  # an NHS client may not send MOD handovers
    finally:
        assert hub.stop() == 0


def _child(hub: RunningHub, role: str) -> int:
    """The pid of the supervised child running `ipc-hub <role>` (e.g. "worker relay")."""
    from tests.durability.hub_process import children_of, cmdline

    found = [pid for pid in children_of(hub.process.pid) if cmdline(pid).endswith(f"main {role} ")]
    assert len(found) == 1, [cmdline(pid) for pid in children_of(hub.process.pid)]
    return found[0]


def _readiness(hub: RunningHub) -> tuple[int, dict]:
    answer = httpx.get(f"{hub.base}/readyz", timeout=10)
    return answer.status_code, answer.json()


def test_readyz_names_a_stuck_or_stopped_worker_and_the_dead_letter_limit_is_an_alarm(tmp_path):
    """/readyz is 503 and names the worker while one is stuck (SIGSTOP: its loop does not turn)
    or stopped; a run of rejected messages past HUB_DLQ_MAX_CONSECUTIVE stops the mapper with
    an ERROR on the console and in /readyz, and `up` keeps supervising it (restarts it)."""
    import os
    import signal

    hub = RunningHub(tmp_path / "hub-data", free_port(), free_port(), env={"HUB_DLQ_MAX_CONSECUTIVE": "5"})
    try:
        assert _readiness(hub)[0] == 200
        relay = _child(hub, "worker relay")
        os.kill(relay, signal.SIGSTOP)
        try:
            status, body = wait_for(lambda: (r := _readiness(hub))[0] == 503 and r, 30, "the stuck relay in /readyz")
            assert body["processes"]["relay"]["ready"] is False
            assert all(p["ready"] for name, p in body["processes"].items() if name != "relay")
        finally:
            os.kill(relay, signal.SIGCONT)
        wait_for(lambda: _readiness(hub)[0] == 200, 30, "the relay ready again")

        # Six envelopes no mapping knows, in a row, on one partition: the limit of five trips.
        bus = BusSettings(bootstrap=hub.bootstrap)
        send(bus, [Envelope(source="gp-up", kind="no-such-kind", person_key="p1", payload=b"{}")
                   for _ in range(6)])
        status, body = wait_for(lambda: (r := _readiness(hub))[0] == 503 and "dead-letter limit" in
                                r[1]["processes"]["mapper"]["state"] and r, 60, "the mapper stopped by the limit")
        assert body["processes"]["mapper"]["ready"] is False
        wait_for(lambda: any(_alarm(line) for line in hub.output), 30, "the alarm on the console")
        wait_for(lambda: _child_restarted(hub), 60, "the mapper restarted by the supervisor")
    finally:
        assert hub.stop() == 0


def _child_restarted(hub: RunningHub) -> bool:
    status, body = _readiness(hub)
    return body["processes"]["mapper"]["restarts"] >= 1


def _alarm(line: str) -> bool:
    """A JSON log line on the console: an ERROR that the mapper stopped at the dead-letter limit."""
    import json

    try:
        record = json.loads(line)
    except ValueError:
        return False
    return (record.get("level") == "error" and "stopped by the dead-letter limit" in record.get("event", "")
            and record.get("args", [None])[0] == "mapper")


def test_up_supervises_the_plan_worker(tmp_path):
    """`up` runs the plan worker (`ipc-hub worker plans`) as a supervised child: /readyz names
    it, and an outcome questionnaire written to the API becomes an Observation through it."""
    hub = RunningHub(tmp_path / "hub-data", free_port(), free_port())
    try:
        status, body = _readiness(hub)
        assert status == 200 and body["processes"]["plans"]["ready"] is True
        assert _child(hub, "worker plans")
        auth = {**hub.bearer(), "Content-Type": "application/fhir+json"}
        fhir = f"{hub.base}/fhir"
        person = httpx.post(f"{fhir}/Patient", headers=auth, json={
            "resourceType": "Patient", "name": [{"family": "Upton", "given": ["Pat"]}]}).json()
        plan = httpx.post(f"{fhir}/CarePlan", headers=auth, json={
            "resourceType": "CarePlan", "status": "draft", "intent": "plan",
            "subject": {"reference": f"Patient/{person['id']}"}}).json()
        ipc = "https://ipc-hub.example.org/fhir/"
        response = httpx.post(f"{fhir}/QuestionnaireResponse", headers=auth, json={
            "resourceType": "QuestionnaireResponse", "meta": {"profile": [f"{ipc}StructureDefinition/ipc-outcome-response"]},
            "questionnaire": f"{ipc}Questionnaire/goal-attainment-scaling", "status": "completed",
            "subject": {"reference": f"Patient/{person['id']}"}, "basedOn": [{"reference": f"CarePlan/{plan['id']}"}],
            "authored": "2026-06-01T10:00:00Z", "item": [{"linkId": "attainment", "answer": [{"valueInteger": 1}]}]})
        assert response.status_code == 201, response.text
        derived = wait_for(lambda: httpx.get(f"{fhir}/Observation", headers=auth, params={
            "derived-from": f"QuestionnaireResponse/{response.json()['id']}"}).json().get("entry"), 60,
            "the score as an Observation")
        assert derived[0]["resource"]["valueQuantity"]["value"] == 1
    finally:
        assert hub.stop() == 0
