"""A child's journey through the hub, end to end, against the real running parts: the session's
embedded PostgreSQL and Tansu broker, mapper, recorder and plan worker as `ipc-hub worker`
processes, `ipc-hub connector children import` (a real CSV import), and the FHIR API on a socket
used by the council's SEN team, a community health trust and the young person's coordinator with
their own tokens.

The journey (issue 17, "How it is checked"): the council's SEN and children's social care extract
brings Jade, 17, with an EHC plan issued years ago and last reviewed thirteen months ago, and her
brother Leo, whose needs assessment was asked for 25 weeks ago and is stuck after the decision to
assess. The community trust adds its health outcome and health provision to her EHC plan; her
coordinator records her views in her own words, with a Provenance naming her as their author.
The hub refuses an EHC plan running to her 25th birthday. The plan worker raises her annual review
and her transition Tasks — preparing for adulthood, taking over her own decisions, the continuing
care to Continuing Healthcare check, the transfer to adult services — each once. Leo's 20 weeks
are overdue and the standard search finds them. Every resource in her record is valid against
the profiles, and Provenance names the source of each."""
from __future__ import annotations

import csv
import json
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.fhir.ages import birthday
from hub.fhir.identifiers import CANONICAL_BASE, LOCAL_AUTHORITY_PERSON_ID, SOURCE_SYSTEM
from hub.plans.reviews import today
from tests.e2e.test_veteran_journey import (
    CLIENT_ID,
    every_page,
    found,
    one,
    profile_errors,
    sources_by_version,
    sources_of,
)
from tests.pipeline.conftest import IPC_HUB, wait_for, worker_env

pytestmark = pytest.mark.integration

CS = f"{CANONICAL_BASE}/CodeSystem"
SD = f"{CANONICAL_BASE}/StructureDefinition"
TASKS = f"{CS}/ipc-children-task"
SECTION = f"{CS}/ipc-ehc-section"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
COUNCIL = "E10000024"
JADE, LEO = "CH-551701", "CH-551702"
JADE_NHS, LEO_NHS = "9991717005", "9991717013"
TRUST, TRUST_CLIENT = "RHA", "journey-community-trust"
COORDINATOR_CLIENT = "journey-coordinator"
# Jade's own words (section A), as she said them at her review.
HER_WORDS = "I want to go to college and learn to cook properly. I don't want people talking about me when I'm there."

DAY = today()
JADE_BORN = date(DAY.year - 17, 1, 1) if DAY >= date(DAY.year, 4, 1) else date(DAY.year - 18, 6, 1)
LEO_BORN = date(DAY.year - 9, 3, 3)
REQUESTED = JADE_BORN + timedelta(days=365 * 11)          # her assessment, at 11
LEO_REQUESTED = DAY - timedelta(weeks=25)


def _back(days: int) -> str:
    return (DAY - timedelta(days=days)).isoformat()


def extract(folder: Path) -> list[Path]:
    """The council's extract: the two children, Jade's issued plan and Leo's open request, and
    Leo's child in need episode."""
    folder.mkdir()
    children = [("LA_Code", "Child_Id", "UPN", "NHS_Number", "Forename", "Surname", "Date_of_Birth", "Sex", "Postcode",
                 "Continuing_Care_From"),
                (COUNCIL, JADE, "K12345678901A", JADE_NHS, "Jade", "Whitfield", JADE_BORN.isoformat(), "F", "NG18 5DD",
                 ""),
                (COUNCIL, LEO, "K12345678902B", LEO_NHS, "Leo", "Whitfield", LEO_BORN.isoformat(), "M", "NG18 5DD", "")]
    week = timedelta(weeks=1)
    ehc = [("LA_Code", "Child_Id", "Date_of_Birth", "Request_Id", "Request_Received_Date", "Decision", "Decision_Date",
            "Advice_Date", "Draft_Plan_Date", "Assessment_Outcome", "Final_Plan_Date", "SEN_Type", "Placement_URN",
            "Placement_Type", "Last_Review_Date", "Plan_Ceased_Date"),
           (COUNCIL, JADE, JADE_BORN.isoformat(), "RQ-J1", REQUESTED.isoformat(), "Assess",
            (REQUESTED + 5 * week).isoformat(), (REQUESTED + 11 * week).isoformat(),
            (REQUESTED + 15 * week).isoformat(), "Plan issued", (REQUESTED + 19 * week).isoformat(), "MLD", "654321",
            "Resourced provision", _back(396), ""),
           (COUNCIL, LEO, LEO_BORN.isoformat(), "RQ-L1", LEO_REQUESTED.isoformat(), "Assess",
            (LEO_REQUESTED + 5 * week).isoformat(), "", "", "", "", "", "", "", "", "")]
    episodes = [("LA_Code", "Child_Id", "Episode_Id", "Episode_Type", "Start_Date", "End_Date", "Primary_Need",
                 "Legal_Status"),
                (COUNCIL, LEO, "EP-5517", "CIN", _back(300), "", "N2", "")]
    files = []
    for name, rows in (("children.csv", children), ("ehc.csv", ehc), ("episodes.csv", episodes)):
        with open(folder / name, "w", newline="", encoding="utf-8") as out:
            csv.writer(out, lineterminator="\n").writerows(rows)
        files.append(folder / name)
    return files


@pytest.fixture()
def running(clean_db, bus, workers):
    env = worker_env(bus, clean_db, HUB_PLAN_WORKER_INTERVAL_S="1")
    for name in ("mapper", "recorder", "plans"):
        workers.start(name, env)
    return workers


def put(client: httpx.Client, resource: dict[str, Any]) -> httpx.Response:
    return client.put(f"/{resource['resourceType']}/{resource['id']}", content=json.dumps(resource),
                      headers={**FHIR_JSON, "If-Match": f'W/"{resource["meta"]["versionId"]}"'})


def code_of(task: dict[str, Any]) -> str:
    return task["code"]["coding"][0]["code"]


def test_a_childs_journey_from_ehc_plan_to_adult_services(running, fhir, fhir_as, clean_db, bus, tmp_path):
    # 1. The council's extract, as its operator imports it.
    result = subprocess.run([IPC_HUB, "connector", "children", "import", *map(str, extract(tmp_path / "extract"))],
                            env=worker_env(bus, clean_db, HUB_CHILDREN_LEDGER_DIR=str(tmp_path / "ledger")),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    jade = wait_for(lambda: one(fhir, "/Patient", identifier=f"{LOCAL_AUTHORITY_PERSON_ID}|{JADE}"), 60, "Jade")
    leo = wait_for(lambda: one(fhir, "/Patient", identifier=f"{LOCAL_AUTHORITY_PERSON_ID}|{LEO}"), 60, "Leo")
    her = f"Patient/{jade['id']}"
    ehc = wait_for(lambda: one(fhir, "/CarePlan", subject=her, category=f"{CS}/ipc-plan-category|ehc-plan"), 60,
                   "her EHC plan")
    last_day = (birthday(JADE_BORN, 25) - timedelta(days=1)).isoformat()
    assert ehc["status"] == "active" and ehc["period"]["end"] == last_day
    plan = wait_for(lambda: one(fhir, "/CarePlan", subject=her, category=f"{CS}/ipc-plan-category|care-support-plan"),
                    60, "her IPC plan")
    assert f"CarePlan/{ehc['id']}" in json.dumps(plan["extension"])   # linked to her EHC plan

    # 2. The community trust adds its part of her EHC plan: a health outcome and its provision.
    trust = fhir_as(partner_class="nhs", organisation=TRUST, client_id=TRUST_CLIENT,
                    scopes=["system/CarePlan.rus", "system/Goal.crs", "system/Patient.rs"])
    goal = trust.post("/Goal", headers=FHIR_JSON, content=json.dumps({
        "resourceType": "Goal", "meta": {"profile": [f"{SD}/ipc-goal"]}, "lifecycleStatus": "active",
        "category": [{"coding": [{"system": f"{CS}/ipc-life-area", "code": "health"}]},
                     {"coding": [{"system": SECTION, "code": "e-outcomes"}]}],
        "description": {"text": "By the end of her first college year Jade manages her own epilepsy medication."},
        "subject": {"reference": her}, "startDate": DAY.isoformat()}))
    assert goal.status_code == 201, goal.text
    current = trust.get(f"/CarePlan/{ehc['id']}").json()
    current["goal"] = [*current.get("goal", []), {"reference": f"Goal/{goal.json()['id']}"}]
    current["activity"] = [*current.get("activity", []), {"id": "trust-epilepsy-nurse", "detail": {
        "code": {"coding": [{"system": SECTION, "code": "g-health-provision"}]}, "status": "in-progress",
        "description": "Epilepsy specialist nurse: a termly review and a care plan shared with her college."}}]
    updated = put(trust, current)
    assert updated.status_code == 200, updated.text

    # 3. Her views, in her own words: from her, with a Provenance naming her their author.
    coordinator = fhir_as(partner_class="nhs", organisation="RX1", client_id=COORDINATOR_CLIENT,
                          scopes=["system/Communication.crs", "system/Provenance.crs", "system/CarePlan.rus"])
    recorded = coordinator.post("/", headers=FHIR_JSON, content=json.dumps({
        "resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:6f1c1c40-0d0e-4a59-9a0a-7d0c7f8b1a01", "request": {"method": "POST", "url": "Communication"},
             "resource": {"resourceType": "Communication", "meta": {"profile": [f"{SD}/ipc-young-person-views"]},
                          "status": "completed", "category": [{"coding": [{"system": SECTION, "code": "a-views"}]}],
                          "subject": {"reference": her}, "sender": {"reference": her},
                          "sent": f"{DAY.isoformat()}T10:00:00Z", "payload": [{"contentString": HER_WORDS}]}},
            {"fullUrl": "urn:uuid:6f1c1c40-0d0e-4a59-9a0a-7d0c7f8b1a02", "request": {"method": "POST", "url": "Provenance"},
             "resource": {"resourceType": "Provenance",
                          "target": [{"reference": "urn:uuid:6f1c1c40-0d0e-4a59-9a0a-7d0c7f8b1a01"}],
                          "recorded": f"{DAY.isoformat()}T10:05:00Z",
                          "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                                          "code": "author"}]}, "who": {"reference": her}},
                                    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                                          "code": "enterer"}]},
                                     "who": {"display": "Her coordinator, typing what she said"}}]}}]}))
    assert recorded.status_code == 200, recorded.text
    views_id = recorded.json()["entry"][0]["response"]["location"].split("/")[1]
    current = coordinator.get(f"/CarePlan/{ehc['id']}").json()
    current["supportingInfo"] = [{"reference": f"Communication/{views_id}"}]
    assert put(coordinator, current).status_code == 200

    # 4. No EHC plan runs to the 25th birthday.
    current = fhir.get(f"/CarePlan/{ehc['id']}").json()
    current["period"]["end"] = birthday(JADE_BORN, 25).isoformat()
    refused = put(fhir, current)
    assert refused.status_code == 422, refused.text
    assert last_day in refused.json()["issue"][0]["diagnostics"]

    # 5. The plan worker: her annual review (last one 13 months ago) and her transition Tasks.
    # (No continuing care check: nothing in her record says she is in children's continuing care.)
    expected = {"ehc-annual-review", "preparing-for-adulthood", "decisions-pass", "adult-transfer"}

    def raised() -> list[str] | None:
        codes = [code_of(t) for t in found(fhir, "/Task", subject=her, _count=100)]
        return codes if expected <= set(codes) else None

    codes = wait_for(raised, 60, "her annual review and transition Tasks")
    assert sorted(c for c in codes if c in expected) == sorted(expected)   # each once
    assert "continuing-care-check" not in codes
    transfer = one(fhir, "/Task", subject=her, code=f"{TASKS}|adult-transfer")
    assert transfer["restriction"]["period"]["end"] == birthday(JADE_BORN, 18).isoformat()
    assert transfer["focus"] == {"reference": f"CarePlan/{ehc['id']}"}

    # 6. Leo's 20 weeks have passed: the overdue search finds his final plan, nobody else's.
    overdue = found(fhir, "/Task", code=f"{TASKS}|ehc-final", status="requested,in-progress",
                    **{"due-date": f"lt{DAY.isoformat()}"})
    assert [(t["for"]["reference"], t["restriction"]["period"]["end"]) for t in overdue] == [
        (f"Patient/{leo['id']}", (LEO_REQUESTED + timedelta(weeks=20)).isoformat())]
    assert not found(fhir, "/CarePlan", subject=f"Patient/{leo['id']}", category=f"{CS}/ipc-plan-category|ehc-plan")

    # 7. Her whole record is valid against the profiles, and every part says where it came from.
    everything = every_page(fhir, f"/Patient/{jade['id']}/$everything", _count=100)
    assert {"Patient", "CarePlan", "Goal", "Task", "Condition", "Communication", "Provenance"} <= {
        r["resourceType"] for r in everything}
    assert [e for r in everything for e in profile_errors(r)] == []
    provenances = every_page(fhir, "/Provenance", _count=100)
    by_version = sources_by_version(provenances)
    council = f"la-{COUNCIL}"
    assert council in sources_of(by_version, her)
    assert {council, TRUST_CLIENT, COORDINATOR_CLIENT} <= sources_of(by_version, f"CarePlan/{ehc['id']}")
    assert sources_of(by_version, f"Goal/{goal.json()['id']}") == {TRUST_CLIENT}
    for task in found(fhir, "/Task", subject=her, _count=100):
        attributed = [p for p in provenances if any(t["reference"].startswith(f"Task/{task['id']}/")
                                                    for t in p["target"])]
        assert attributed, code_of(task)
        names = {a["who"].get("display") for p in attributed for a in p["agent"]} | sources_of(
            by_version, f"Task/{task['id']}")
        assert council in names or "IPC Hub plan worker" in names, (code_of(task), names)
    # Her words are hers: the Provenance the coordinator sent names her as author; the hub's own
    # names the coordinator's client as the one who wrote them down.
    about_views = [p for p in provenances if any(t["reference"].startswith(f"Communication/{views_id}")
                                                 for t in p["target"])]
    authors = {a["who"].get("reference") for p in about_views for a in p["agent"]
               if a.get("type", {}).get("coding", [{}])[0].get("code") == "author"}
    assert her in authors
    assert COORDINATOR_CLIENT in sources_of(by_version, f"Communication/{views_id}")
    assert fhir.get(f"/Communication/{views_id}").json()["payload"][0]["contentString"] == HER_WORDS
    assert all(a["who"]["identifier"]["system"] in (SOURCE_SYSTEM, CLIENT_ID) for p in provenances
               for a in p["agent"] if "identifier" in a.get("who", {}))
