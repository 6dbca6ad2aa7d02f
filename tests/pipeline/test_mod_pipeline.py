"""MOD handover end to end: `ipc-hub connector mod` as a real process (HTTPS POST and a watched
drop folder, token keys fetched from the hub API's JWKS), the session's Tansu broker, mapper and
recorder as real worker processes, the record in PostgreSQL read back over the FHIR API.

Proves: every resource a sample becomes is in the record and valid against the IPC profiles;
the handover is overdue by a standard search past its due date and no longer once the person's
GP registration arrives over HL7 v2 (or was there first); a duplicate upload changes nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import psycopg
import pytest

from connectors.hl7v2 import envelope_meta as hl7_meta
from hub.bus.envelope import Envelope
from hub.bus.kafka import BusSettings
from hub.fhir.validation import validate
from mappings.hl7v2 import parse
from tests.conftest import empty_database
from tests.integration.conftest import free_port
from tests.pipeline.conftest import (
    IPC_HUB,
    Workers,
    fresh_bus,
    send,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "mod" / "samples"
HANDOVER = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-transition|gp-registration-handover"
SERVICE_NUMBER = "https://ipc-hub.example.org/fhir/Id/mod-service-number"


def overdue(fhir, on: str) -> list[dict]:
    """The overdue handovers as the README documents the query: open, due before `on`."""
    r = fhir.get("/Task", params={"code": HANDOVER, "status": "requested", "period": f"eb{on}"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def handover_task(fhir, service_number: str) -> dict | None:
    patients = fhir.get("/Patient", params={"identifier": f"{SERVICE_NUMBER}|{service_number}"}).json()
    if not patients.get("entry"):
        return None
    patient_id = patients["entry"][0]["resource"]["id"]
    tasks = fhir.get("/Task", params={"code": HANDOVER, "subject": f"Patient/{patient_id}"}).json()
    return tasks["entry"][0]["resource"] if tasks.get("entry") else None


def gp_registration(nhs: str, family: str, given: str, birth: str, control: str) -> Envelope:
    """An ADT^A28 from a GP system registering the person at practice C84001, as the HL7 v2
    connector publishes it."""
    message = "\r".join([
        f"MSH|^~\\&|EMIS|C84001|IPC|HUB|20260710090000||ADT^A28^ADT_A05|{control}|P|2.4",
        "EVN|A28|20260710090000",
        f"PID|1||{control}^^^C84001^MR~{nhs}^^^NHS^NH||{family}^{given}||{birth.replace('-', '')}|M",
        "PD1|||Chapel Street Surgery^^C84001|G1234567^Patel^Asha",
    ]) + "\r"
    return Envelope(payload=message.encode(), **hl7_meta(parse(message)))


class ModConnector:
    def __init__(self, bus: BusSettings, pg_url: str, hub_api, tmp: Path, workers: Workers) -> None:
        self.port = free_port()
        self.drop = tmp / "drop"
        log = open(tmp / "mod-connector.log", "w")  # noqa: SIM115 - the process writes it until stopped
        env = worker_env(bus, pg_url, HUB_MOD_PORT=str(self.port), HUB_MOD_DROP_DIR=str(self.drop),
                         HUB_MOD_POLL_INTERVAL_S="0.1",
                         HUB_AUTH_JWKS_URL=f"{hub_api.url}/.well-known/jwks.json",
                         HUB_AUTH_ISSUER=hub_api.settings.token_issuer(),
                         HUB_AUTH_AUDIENCE=hub_api.settings.token_audience())
        self.proc = subprocess.Popen([IPC_HUB, "connector", "mod"], env=env, stdout=log, stderr=subprocess.STDOUT)
        workers.procs.append(self.proc)
        wait_for(lambda: self._healthy() or self.proc.poll() is not None, 30, "the MOD connector")
        assert self.proc.poll() is None, Path(log.name).read_text()

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, body: bytes, token: str) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.port}/handover", content=body, timeout=30,
                          headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def stack(kafka, pg_url, hub_api, tmp_path_factory):
    empty_database(pg_url)
    bus = fresh_bus(kafka)
    tmp = tmp_path_factory.mktemp("mod")
    workers = Workers(tmp)
    env = worker_env(bus, pg_url)
    workers.start("mapper", env)
    workers.start("recorder", env)
    connector = ModConnector(bus, pg_url, hub_api, tmp, workers)
    yield bus, connector
    workers.stop_all()


@pytest.fixture(scope="module")
def defence_token(token_for) -> str:
    return token_for(partner_class="defence", organisation="D1A", scopes=["system/*.c"], lifetime_s=3600)


def versions(pg_url: str, res_type: str, res_id: str) -> int:
    with psycopg.connect(pg_url) as conn:
        return conn.execute("SELECT count(*) FROM resource_version WHERE res_type = %s AND res_id = %s",
                            (res_type, res_id)).fetchone()[0]


def test_handover_becomes_a_valid_record_overdue_until_gp_registration(stack, fhir, defence_token, pg_url):
    bus, connector = stack
    full = SAMPLES / "handover-full.json"
    r = connector.post(full.read_bytes(), defence_token)
    assert r.status_code == 202, r.text

    task = wait_for(lambda: handover_task(fhir, "30112233"), 60, "the handover Task in the record")
    patient_id = task["for"]["reference"].split("/")[1]
    everything = fhir.get(f"/Patient/{patient_id}/$everything", params={"_count": 200}).json()
    resources = [e["resource"] for e in everything["entry"]]
    kinds = sorted({r["resourceType"] for r in resources})
    assert {"Patient", "Flag", "Condition", "ServiceRequest", "CarePlan", "CareTeam", "Goal", "DocumentReference",
            "Consent", "Task"} <= set(kinds), kinds
    for resource in resources:
        errors = [i.diagnostics for i in validate(resource) if i.severity == "error"]
        assert errors == [], (resource["resourceType"], errors)
    claimed = {p for r in resources for p in (r.get("meta") or {}).get("profile", [])}
    assert {"https://ipc-hub.example.org/fhir/StructureDefinition/" + name for name in (
        "ipc-referral", "ipc-handover-task", "ipc-service-condition", "ipc-care-plan", "ipc-care-team", "ipc-goal",
        "ipc-consent", "ipc-flag")} <= claimed
    r = fhir.post("/Task/$validate", content=json.dumps(task), headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    assert not [i for i in r.json()["issue"] if i["severity"] == "error"]

    # Due 2026-07-31: not overdue on the due date itself, overdue the day after.
    assert overdue(fhir, "2026-07-31") == []
    assert [t["id"] for t in overdue(fhir, "2026-08-01")] == [task["id"]]

    # A duplicate upload, then the GP registration, under the same person key (so in that order).
    plan = next(r for r in resources if r["resourceType"] == "CarePlan")
    before = {(r["resourceType"], r["id"]): versions(pg_url, r["resourceType"], r["id"]) for r in resources}
    assert connector.post(full.read_bytes(), defence_token).status_code == 202
    send(bus, [gp_registration("9994500007", "Whitfield", "Samuel", "1994-05-21", "GP0001")])
    done = wait_for(lambda: (t := handover_task(fhir, "30112233")) and t["status"] == "completed" and t, 60,
                    "the handover completed by the GP registration")
    assert done["output"][0]["valueReference"]["reference"].startswith("Organization/")
    assert done["restriction"]["period"]["end"] == "2026-07-31"
    assert overdue(fhir, "2026-08-01") == []
    patient = fhir.get(f"/Patient/{patient_id}").json()
    assert patient["generalPractitioner"]
    # The duplicate changed nothing: only the Patient (GP filled in) and the Task moved on.
    after = {key: versions(pg_url, *key) for key in before}
    changed = {key for key in before if after[key] != before[key]}
    assert changed == {("Patient", patient_id), ("Task", task["id"])}, changed
    assert fhir.get(f"/CarePlan/{plan['id']}").json()["meta"]["versionId"] == plan["meta"]["versionId"]


def test_gp_registration_first_completes_the_handover_on_arrival(stack, fhir, defence_token):
    bus, connector = stack
    send(bus, [gp_registration("9994500015", "Okafor", "Aisha", "1990-02-11", "GP0002")])
    wait_for(lambda: fhir.get("/Patient", params={"identifier": "https://fhir.nhs.uk/Id/nhs-number|9994500015"})
             .json().get("entry"), 60, "the GP's Patient")
    document = json.loads((SAMPLES / "handover-minimal.json").read_text())
    document["person"]["nhsNumber"] = "9994500015"
    assert connector.post(json.dumps(document).encode(), defence_token).status_code == 202
    wait_for(lambda: handover_task(fhir, "RN4471X"), 60, "the handover Task")
    task = wait_for(lambda: (t := handover_task(fhir, "RN4471X"))["status"] == "completed" and t, 30,
                    "the handover completed")
    assert task["id"] not in {t["id"] for t in overdue(fhir, "2027-01-01")}


def test_drop_folder_files_reach_the_record_or_failed(stack, fhir):
    _, connector = stack
    document = json.loads((SAMPLES / "handover-minimal.json").read_text())
    document["person"].update(serviceNumber="RM88123", name={"given": ["Lee"], "family": "Carver"})
    document["handoverId"] = "HO-2026-000777"
    (connector.drop / "lee.json.tmp").write_text(json.dumps(document))
    (connector.drop / "lee.json.tmp").rename(connector.drop / "lee.json")
    shutil.copy(SAMPLES / "bad" / "nhs-number-mod11.json", connector.drop / "typo.json")

    task = wait_for(lambda: handover_task(fhir, "RM88123"), 60, "the dropped handover in the record")
    assert task["status"] == "requested"
    assert task["id"] in {t["id"] for t in overdue(fhir, "2026-10-14")}  # planned discharge + 28 days
    with_people = fhir.get("/Task", params={"code": HANDOVER, "status": "requested", "period": "eb2026-10-14",
                                            "_include": "Task:patient"}).json()
    people = [e["resource"] for e in with_people["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert task["for"]["reference"] in {f"Patient/{p['id']}" for p in people}
    wait_for(lambda: (connector.drop / "failed" / "typo.json.reason.txt").exists(), 30, "the refusal")
    assert "/person/nhsNumber" in (connector.drop / "failed" / "typo.json.reason.txt").read_text()
    assert (connector.drop / "processed" / "lee.json").exists()
    assert not list((connector.drop / "working").iterdir())


def test_a_1_mb_handover_with_an_800_kb_pdf_is_accepted_and_recorded_whole(stack, fhir, defence_token, pg_url):
    """Issue 19's red-team case: a valid handover of ~1.07 MB (an 800 KB PDF attached; the
    intake advertises 10 MiB) used to get 503 every time. It is answered 202 only because the bus
    holds it, and the document reaches the record byte for byte."""
    import base64
    import hashlib
    import os

    _, connector = stack
    pdf = b"%PDF-1.4\n" + os.urandom(800 * 1024)
    document = json.loads((SAMPLES / "handover-full.json").read_text())
    document["person"].update(serviceNumber="RM90001", nhsNumber="9994500023")
    document["handoverId"] = "HO-2026-000800"
    document["documents"][0]["data"] = base64.b64encode(pdf).decode()
    body = json.dumps(document).encode()
    assert 1_000_000 < len(body) < 10 * 1024 * 1024
    answer = connector.post(body, defence_token)
    assert answer.status_code == 202, answer.text

    def recorded_pdf() -> bytes | None:
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute("SELECT content->'content'->0->'attachment'->>'data' FROM resource "
                                "WHERE res_type = 'DocumentReference' AND content::text LIKE %s",
                                ("%" + document["documents"][0]["data"][:64] + "%",)).fetchall()
        return base64.b64decode(rows[0][0]) if rows else None

    stored = wait_for(recorded_pdf, 90, "the 800 KB document in the record")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(pdf).digest()
    assert handover_task(fhir, "RM90001") is not None
