"""A council's children's extract through the real pipeline: `connectors.children` on the
council extracts' importer publishes to the real broker, mapper and recorder run as `ipc-hub
worker` processes, the record lands in PostgreSQL; then the plan worker's scheduler (run here on
chosen days, two at once) raises the EHC annual review and the growing-up steps.

Checked: every recorded resource is valid against the profiles; the EHC plan ends the day before
the 25th birthday and is linked from the child's one IPC plan; the assessment's 20 weeks are
Tasks and the late one is found by the overdue search (real HTTP); bad rows are reported by line
and column and nothing of them is published; re-importing changes no version. A 17-year-old's
transition Tasks and the annual review are raised exactly once; a re-import never undoes a
coordinator's change to a timeline Task and shows where the council differs; by two schedulers at once; at 18
the adult plan replaces the child's and keeps its goals; a young carer from the council's adult
extract is reassessed before 18; the continuing care check is raised only for children in
children's continuing care (the extract's column, or a Flag the ICB writes)."""
from __future__ import annotations

import asyncio
import csv
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from connectors.children import KINDS
from connectors.la import Importer, Ledger, iter_errors
from connectors.la.publish import KafkaSink
from hub.bus.topics import Topics
from hub.fhir import jsontext
from hub.fhir.identifiers import CANONICAL_BASE, LOCAL_AUTHORITY_PERSON_ID
from hub.fhir.validation import validate
from hub.pipeline.planlife import PlanWorker
from tests.pipeline.conftest import wait_for, worker_env
from tests.pipeline.test_la_pipeline import _recorded_all, _topic_size, _versions

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "children" / "samples"
CS = f"{CANONICAL_BASE}/CodeSystem"
TASKS = f"{CS}/ipc-children-task"
COUNCIL = "E10000024"
TODAY = date(2026, 12, 3)          # Ellie (born 2009-05-14) is 17
HER_18TH = date(2027, 5, 14)


def _record(url: str) -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    with psycopg.connect(url) as conn:
        for res_type, content in conn.execute("SELECT res_type, content::text FROM resource WHERE NOT deleted"):
            by_type.setdefault(res_type, []).append(jsontext.loads(content))
    return by_type


def _import(bus, tmp_path: Path, folder: str, files: list[Path], kinds=KINDS, force: bool = False):
    target = tmp_path / folder
    target.mkdir()
    copies = [Path(shutil.copy(f, target / f.name)) for f in files]
    sink = KafkaSink(bus)
    try:
        return Importer(sink, Ledger(tmp_path / "ledger"), kinds=kinds).import_extract(copies, force=force)
    finally:
        sink.close()


def _young_carer_extract(folder: Path) -> list[Path]:
    """The council's adult extract: a mother, and her 16-year-old son assessed as her young carer."""
    folder.mkdir()
    people = [("LA_Code", "LA_Person_Unique_Identifier", "NHS_Number", "Given_Name", "Family_Name", "Date_of_Birth",
               "Gender", "Postcode", "Date_of_Death"),
              (COUNCIL, "P-MUM-1", "9990000034", "Grace", "Adeyemi", "1980-06-01", "Female", "NG18 4CC", "")]
    carers = [("LA_Code", "Carer_LA_Person_Unique_Identifier", "Cared_For_LA_Person_Unique_Identifier",
               "Relationship_To_Cared_For", "Carer_Assessed", "Carer_Assessment_Date", "NHS_Number", "Given_Name",
               "Family_Name", "Date_of_Birth", "Gender", "Postcode"),
              (COUNCIL, "P-SON-1", "P-MUM-1", "Son/Daughter", "Y", "2025-06-01", "9990000042", "Tomi", "Adeyemi",
               "2009-03-01", "Male", "NG18 4CC")]
    out = []
    for name, rows in (("people.csv", people), ("carers.csv", carers)):
        with open(folder / name, "w", newline="", encoding="utf-8") as stream:
            csv.writer(stream, lineterminator="\n").writerows(rows)
        out.append(folder / name)
    return out


def _code(resource: dict[str, Any]) -> str:
    return resource["code"]["coding"][0]["code"]


def _for(resource: dict[str, Any]) -> str:
    return resource["for"]["reference"]


COORDINATOR = {"identifier": {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "555123456789"},
               "display": "Priya Shah (care coordinator)"}


def _task_of(fhir, child: str, code: str) -> dict[str, Any]:
    [entry] = fhir.get("/Task", params={"subject": child, "code": f"{TASKS}|{code}"}).json()["entry"]
    return entry["resource"]


def _coordinator_takes_on(fhir, child: str) -> None:
    """Through the API, as the workspace does: owner, status and a note on two of the child's steps."""
    for code, status, note in (("ehc-advice", "in-progress", "Reports from the paediatrician and the EP chased."),
                               ("ehc-final", "on-hold", "Family asked for the draft meeting after half term.")):
        task = _task_of(fhir, child, code)
        task.update(status=status, owner=COORDINATOR, note=[{"text": note}])
        answer = fhir.put(f"/Task/{task['id']}", json=task, headers={
            "Content-Type": "application/fhir+json", "If-Match": f'W/"{task["meta"]["versionId"]}"'})
        assert answer.status_code == 200, answer.text


def _with_sams_advice(folder: Path) -> Path:
    """The council's next ehc file: the same rows, with Sam's advice gathered on 20 May."""
    folder.mkdir()
    with open(SAMPLES / "ehc.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        if row["Child_Id"] == "CH-000102":
            row["Advice_Date"] = "2026-05-20"
    with open(folder / "ehc.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return folder / "ehc.csv"


async def _schedule_twice(url: str, day: date, what: str) -> list[int]:
    """Two schedulers at once (as on two machines), each on its own connection."""
    async def one() -> int:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            worker = PlanWorker(url)
            return await getattr(worker, what)(conn, day)
    return list(await asyncio.gather(one(), one()))


def test_a_childrens_extract_becomes_the_record_and_the_child_grows_up(clean_db, bus, workers, tmp_path, fhir):
    env = worker_env(bus, clean_db)
    workers.start("mapper", env)
    workers.start("recorder", env)
    files = [SAMPLES / n for n in ("episodes.csv", "ehc.csv", "children.csv")]
    reports = _import(bus, tmp_path, "first", files)
    assert [(r.kind, r.status, r.rows_good) for r in reports] == [
        ("episodes", "imported", 2), ("ehc", "imported", 3), ("children", "imported", 3)]
    # Bad rows: each reported with its line and column, none published.
    [bad] = _import(bus, tmp_path, "bad", [SAMPLES / "bad" / "ehc.csv"])
    assert (bad.status, bad.rows_read, bad.rows_bad, bad.envelopes) == ("imported", 5, 5, 0)
    assert {(e.line, e.column) for e in iter_errors(bad.errors_path)} == {
        (2, "Decision_Date"), (3, "Decision"), (4, "SEN_Type"), (5, "Decision"), (6, "LA_Code"), (6, "Placement_URN")}
    wait_for(lambda: _recorded_all(bus, 8), 90, "8 bundles recorded")
    assert _topic_size(bus, Topics(bus.topic_prefix).deadletter) == 0

    record = _record(clean_db)
    for contents in record.values():
        for content in contents:
            assert [i.diagnostics for i in validate(content) if i.severity == "error"] == [], content["resourceType"]
    child = {i["value"]: p["id"] for p in record["Patient"] for i in p["identifier"]
             if i["system"] == LOCAL_AUTHORITY_PERSON_ID}
    ellie, sam, lily = (f"Patient/{child[c]}" for c in ("CH-000101", "CH-000102", "CH-000103"))
    plans = {(p["subject"]["reference"], p["category"][0]["coding"][0]["code"]): p for p in record["CarePlan"]}
    her_ehc = plans[(ellie, "ehc-plan")]
    assert her_ehc["status"] == "active" and her_ehc["period"] == {"start": "2020-01-13", "end": "2034-05-13"}
    her_plan = plans[(ellie, "care-support-plan")]
    linked = [x for e in her_plan["extension"] if e["url"].endswith("/linked-plan") for x in e["extension"]]
    assert {"url": "plan", "valueReference": {"reference": f"CarePlan/{her_ehc['id']}"}} in linked
    assert (sam, "ehc-plan") not in plans and len(record["EpisodeOfCare"]) == 2
    tasks = {(_for(t), _code(t)): t["status"] for t in record["Task"]}
    assert {k[1]: v for k, v in tasks.items() if k[0] == sam} == {
        "ehc-request": "completed", "ehc-decision": "completed", "ehc-advice": "requested",
        "ehc-draft": "requested", "ehc-final": "requested"}
    assert sorted(k[1] for k in tasks if k[0] == lily) == ["ehc-decision", "ehc-request"]

    # Sam's request came on 2 March 2026: the final plan was due 20 weeks on, and is overdue.
    found = fhir.get("/Task", params={"code": f"{TASKS}|ehc-final", "status": "requested",
                                      "due-date": f"lt{TODAY.isoformat()}"})
    assert found.status_code == 200, found.text
    overdue = [e["resource"] for e in found.json().get("entry", []) if e["search"]["mode"] == "match"]
    assert [(_for(t), t["restriction"]["period"]["end"]) for t in overdue] == [(sam, "2026-07-20")]

    # The same extract again changes nothing.
    before = _versions(clean_db)
    _import(bus, tmp_path, "again", files, force=True)
    wait_for(lambda: _recorded_all(bus, 16), 90, "the re-imported bundles recorded")
    assert _versions(clean_db) == before

    # Her coordinator's goals on her plan (what the adult plan must keep), and a young carer from
    # the council's adult extract.
    goals = []
    for text in ("I want to go to college to learn catering.", "I want to travel to college on my own."):
        made = fhir.post("/Goal", json={"resourceType": "Goal", "lifecycleStatus": "active",
                                        "description": {"text": text}, "subject": {"reference": ellie}},
                         headers={"Content-Type": "application/fhir+json"})
        assert made.status_code == 201, made.text
        goals.append({"reference": f"Goal/{made.json()['id']}"})
    current = fhir.get(f"/CarePlan/{her_plan['id']}").json()
    current["goal"] = goals
    assert fhir.put(f"/CarePlan/{her_plan['id']}", json=current, headers={
        "Content-Type": "application/fhir+json", "If-Match": f'W/"{current["meta"]["versionId"]}"'}).status_code == 200
    from connectors.la import KINDS as LA_KINDS
    _import(bus, tmp_path, "carers", _young_carer_extract(tmp_path / "adult-extract"), kinds=LA_KINDS)
    wait_for(lambda: _recorded_all(bus, 18), 90, "the adult extract recorded")
    son = next(p["id"] for p in _record(clean_db)["Patient"] for i in p["identifier"] if i["value"] == "P-SON-1")

    # Sam's coordinator takes on his advice step and his final plan step; the council then sends
    # his advice date. A re-import moves only what the council owns, keeps what she changed and
    # shows her where the council differs, once.
    _coordinator_takes_on(fhir, sam)
    # Her community trust has added its health provision to Ellie's EHC plan meanwhile.
    ehc_now = fhir.get(f"/CarePlan/{her_ehc['id']}").json()
    nurse = {"id": "trust-epilepsy-nurse", "detail": {"status": "in-progress", "description": "Epilepsy nurse visits",
             "code": {"coding": [{"system": f"{CS}/ipc-ehc-section", "code": "g-health-provision"}]}}}
    ehc_now["activity"] = [*ehc_now["activity"], nurse]
    assert fhir.put(f"/CarePlan/{her_ehc['id']}", json=ehc_now, headers={
        "Content-Type": "application/fhir+json", "If-Match": f'W/"{ehc_now["meta"]["versionId"]}"'}).status_code == 200
    _import(bus, tmp_path, "advice", [_with_sams_advice(tmp_path / "advice-extract")])
    wait_for(lambda: _recorded_all(bus, 21), 90, "the council's new dates recorded")
    assert nurse in fhir.get(f"/CarePlan/{her_ehc['id']}").json()["activity"]   # the re-sent plan keeps it
    advice = _task_of(fhir, sam, "ehc-advice")
    assert advice["status"] == "in-progress" and advice["owner"] == COORDINATOR
    assert advice["executionPeriod"] == {"end": "2026-05-20"}          # the council's date moved
    assert [n["text"] for n in advice["note"]][0] == "Reports from the paediatrician and the EP chased."
    [differs] = [n for n in advice["note"] if n.get("authorString", "").startswith("IPC Hub")]
    assert "done on 2026-05-20" in differs["text"] and "(in-progress) is kept" in differs["text"]
    final = _task_of(fhir, sam, "ehc-final")
    assert (final["status"], final["owner"], len(final["note"])) == ("on-hold", COORDINATOR, 1)  # nothing differs
    assert final["restriction"]["period"]["end"] == "2026-07-20"
    before = _versions(clean_db)
    _import(bus, tmp_path, "advice-again", [tmp_path / "advice-extract" / "ehc.csv"], force=True)
    wait_for(lambda: _recorded_all(bus, 24), 90, "the same dates again")
    assert _versions(clean_db) == before                                # the note is not added twice

    # Children's continuing care: Ellie's from the council's extract (Continuing_Care_From), a
    # health Flag; Lily (14, no EHC plan) is recorded in it by her ICB through the API. Sam (11,
    # no plan yet, no complex health need) and nobody else gets the check.
    [ellies_flag] = [f for f in record["Flag"] if f["subject"]["reference"] == ellie]
    assert ellies_flag["code"]["coding"][0]["code"] == "childrens-continuing-care"
    assert ellies_flag["period"] == {"start": "2016-04-01"}
    icb = {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "15M"},
           "display": "NHS Nottingham and Nottinghamshire ICB"}
    made = fhir.post("/Flag", json={
        "resourceType": "Flag", "status": "active", "subject": {"reference": lily}, "period": {"start": "2025-01-06"},
        "code": {"coding": [{"system": f"{CS}/ipc-flag", "code": "childrens-continuing-care"}]}, "author": icb},
        headers={"Content-Type": "application/fhir+json"})
    assert made.status_code == 201, made.text

    # Two schedulers at once, on a day she is 17: each step raised once, and never again.
    assert sum(asyncio.run(_schedule_twice(clean_db, TODAY, "raise_growing_up"))) == 6
    assert sum(asyncio.run(_schedule_twice(clean_db, TODAY, "raise_growing_up"))) == 0
    assert sum(asyncio.run(_schedule_twice(clean_db, TODAY, "raise_reviews"))) == 1   # her EHC annual review
    record = _record(clean_db)
    raised = sorted((_for(t), _code(t)) for t in record["Task"] if t["code"]["coding"][0]["code"] not in
                    {"ehc-request", "ehc-decision", "ehc-advice", "ehc-draft", "ehc-final"})
    assert raised == sorted([(ellie, "adult-transfer"), (ellie, "continuing-care-check"), (ellie, "decisions-pass"),
                             (ellie, "ehc-annual-review"), (ellie, "preparing-for-adulthood"),
                             (lily, "continuing-care-check"), (f"Patient/{son}", "young-carer-reassessment")])
    lilys = next(t for t in record["Task"] if _for(t) == lily and _code(t) == "continuing-care-check")
    assert lilys["owner"] == icb and lilys["restriction"]["period"] == {"start": "2026-03-01", "end": "2030-03-01"}
    review = next(t for t in record["Task"] if _code(t) == "ehc-annual-review")
    assert review["restriction"]["period"]["end"] == "2026-01-20"   # a year after her last review
    for task in record["Task"]:
        assert [i.diagnostics for i in validate(task) if i.severity == "error"] == []

    # Her 18th birthday: the adult plan replaces hers and keeps her goals, raised once.
    assert sum(asyncio.run(_schedule_twice(clean_db, HER_18TH, "raise_growing_up"))) == 1
    adult = [p for p in _record(clean_db)["CarePlan"]
             if p["subject"]["reference"] == ellie and p.get("replaces")]
    assert len(adult) == 1
    assert adult[0]["replaces"] == [{"reference": f"CarePlan/{her_plan['id']}"}]
    assert adult[0]["goal"] == goals and adult[0]["period"]["start"] == "2027-05-14"
    assert any(c["coding"][0]["code"] == "ipc-adult" for c in adult[0]["category"])
    assert [i.diagnostics for i in validate(adult[0]) if i.severity == "error"] == []
    assert sum(asyncio.run(_schedule_twice(clean_db, HER_18TH, "raise_growing_up"))) == 0
