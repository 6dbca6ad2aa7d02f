"""The recorder's handover rule as pure functions: which messages can settle a GP registration
handover (a Patient naming a GP, or a handover Task), and what a completed handover says."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from hub.fhir.validation import validate
from hub.pipeline.handover import completed, people_to_check
from mappings.mod import map_handover

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "mod" / "samples"


def handover_bundle() -> dict:
    return map_handover((SAMPLES / "handover-full.json").read_bytes(), "mod-handover")


def item(source: str, document: dict) -> tuple:
    return (None, SimpleNamespace(source=source), document)


def test_only_gp_registrations_and_handover_tasks_are_looked_at():
    bundle = handover_bundle()
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    patient_id = task["for"]["reference"].split("/")[1]
    registered = {"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "Patient", "id": "gp-1", "generalPractitioner": [{"reference": "Organization/o"}]}}]}
    unregistered = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "gp-2"}}]}
    merge = {"resourceType": "Parameters", "parameter": []}
    found = people_to_check([item("mod-handover", bundle), item("EMIS|C84001", registered),
                             item("EMIS|C84001", unregistered), item("PAS", merge)])
    assert found == {("mod-handover", patient_id), ("EMIS|C84001", "gp-1")}


def test_completed_handover_keeps_its_due_date_and_names_the_practice():
    task = next(e["resource"] for e in handover_bundle()["entry"] if e["resource"]["resourceType"] == "Task")
    stored = {**task, "meta": {**task["meta"], "versionId": "1", "lastUpdated": "2026-06-02T09:30:01Z"}}
    done = completed(stored, {"reference": "Organization/gp"}, datetime(2026, 7, 10, 9, 0, tzinfo=UTC))
    assert done["status"] == "completed" and done["lastModified"] == "2026-07-10T09:00:00Z"
    assert done["restriction"]["period"] == {"end": "2026-07-31"}
    assert done["executionPeriod"] == {"start": "2026-06-02", "end": "2026-07-10T09:00:00Z"}
    assert done["output"][0]["valueReference"] == {"reference": "Organization/gp"}
    assert done["meta"] == {"profile": task["meta"]["profile"]}
    assert [i.diagnostics for i in validate(done) if i.severity == "error"] == []
    assert stored["status"] == "requested" and "output" not in stored  # the stored one is not changed
