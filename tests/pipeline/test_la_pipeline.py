"""LA extracts end to end: the connector publishes the samples to the real broker, mapper and
recorder run as real `ipc-hub worker` processes, the record lands in PostgreSQL. Every recorded
resource is checked against the IPC profiles; one plan and one budget statement per person;
re-importing the same extract changes no version in the record."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.la import Importer, Ledger
from connectors.la.publish import KafkaSink
from hub.bus.replay import read_topic
from hub.bus.topics import Topics
from hub.fhir import jsontext
from hub.fhir.identifiers import CANONICAL_BASE, LOCAL_AUTHORITY_PERSON_ID
from hub.fhir.validation import validate
from tests.pipeline.conftest import wait_for, worker_env
from tests.pipeline.test_pipeline import committed_everything

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "la" / "samples"
CATEGORY = f"{CANONICAL_BASE}/CodeSystem/ipc-plan-category"
SD = f"{CANONICAL_BASE}/StructureDefinition"


def _resources(url: str) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
    with psycopg.connect(url) as conn:
        return {(t, i): (v, jsontext.loads(c)) for t, i, v, c in conn.execute(
            "SELECT res_type, res_id, version, content::text FROM resource WHERE NOT deleted")}


def _versions(url: str) -> dict[tuple[str, str, int], str]:
    with psycopg.connect(url) as conn:
        return {(t, i, v): c for t, i, v, c in conn.execute(
            "SELECT res_type, res_id, version, content::text FROM resource_version")}


def _topic_size(bus, topic: str) -> int:
    return len(list(read_topic(bus, topic, timeout=5)))


def _recorded_all(bus, expected: int) -> bool:
    topics = Topics(bus.topic_prefix)
    return (_topic_size(bus, topics.bundles) == expected
            and committed_everything(bus, topics.group("recorder"), topics.bundles))


def _kind(plan: dict[str, Any]) -> str:
    return next(c["code"] for cc in plan.get("category", []) for c in cc.get("coding", []) if c["system"] == CATEGORY)


def _import(bus, tmp_path: Path, folder: str, force: bool = False) -> None:
    target = tmp_path / folder
    target.mkdir()
    files = [Path(shutil.copy(SAMPLES / n, target / n)) for n in ("people.csv", "carers.csv", "events.csv")]
    sink = KafkaSink(bus)
    try:
        reports = Importer(sink, Ledger(tmp_path / "ledger")).import_extract(files, force=force)
    finally:
        sink.close()
    assert [r.status for r in reports] == ["imported"] * 3


def test_the_samples_become_one_profile_valid_record_and_a_reimport_changes_nothing(clean_db, bus, workers, tmp_path):
    env = worker_env(bus, clean_db, HUB_MAPPINGS="mappings.fhir_bundle,mappings.la")
    workers.start("mapper", env)
    workers.start("recorder", env)
    _import(bus, tmp_path, "first")
    wait_for(lambda: _recorded_all(bus, 12), 90, "12 bundles recorded")
    assert _topic_size(bus, Topics(bus.topic_prefix).deadletter) == 0

    record = _resources(clean_db)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for (res_type, _), (_, content) in record.items():
        by_type.setdefault(res_type, []).append(content)
    for res_type, contents in by_type.items():
        for content in contents:
            errors = [i.diagnostics for i in validate(content) if i.severity == "error"]
            assert errors == [], (res_type, errors)

    # People: the four in the people file and the assessed young carer (Susan is both).
    local_ids = sorted(i["value"] for p in by_type["Patient"] for i in p["identifier"]
                       if i["system"] == LOCAL_AUTHORITY_PERSON_ID)
    assert local_ids == ["C200002", "P100001", "P100002", "P100003", "P100004"]
    patient_of = {i["value"]: p["id"] for p in by_type["Patient"] for i in p["identifier"]
                  if i["system"] == LOCAL_AUTHORITY_PERSON_ID}
    assert len(by_type["RelatedPerson"]) == 4
    susan = next(r for r in by_type["RelatedPerson"] if r["identifier"][0]["value"] == "P100002")
    assert susan["patient"]["reference"] == f"Patient/{patient_of['P100001']}"
    own = next(e for e in susan["extension"] if e["url"] == f"{SD}/carer-own-record")
    own_refs = {e["url"]: e["valueReference"]["reference"] for e in own["extension"]}
    assert own_refs["person"] == f"Patient/{patient_of['P100002']}"

    # One care and support plan per person (Susan's carer plan and her events joined), and a
    # budget statement for each person with services.
    plans: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for plan in by_type["CarePlan"]:
        plans.setdefault((plan["subject"]["reference"], _kind(plan)), []).append(plan)
    for person in ("P100001", "P100002", "P100004", "C200002"):
        assert len(plans[(f"Patient/{patient_of[person]}", "care-support-plan")]) == 1, person
    susans_plan = plans[(f"Patient/{patient_of['P100002']}", "care-support-plan")][0]
    assert own_refs["plan"] == f"CarePlan/{susans_plan['id']}"
    assert [a["id"] for a in susans_plan["activity"]] == ["la-event-EV-0013", "la-event-EV-0014"]
    [budget] = plans[(f"Patient/{patient_of['P100001']}", "budget-statement")]
    # The council's mix is kept: its direct payment and its notional budget, each with its account.
    shares = {}
    for allocation in (e for e in budget["extension"] if e["url"] == f"{SD}/budget-allocation"):
        parts = {e["url"]: e for e in allocation["extension"]}
        assert parts["fundingSource"]["valueCodeableConcept"]["coding"][0]["code"] == "local-authority"
        shares[parts["managementOption"]["valueCodeableConcept"]["coding"][0]["code"]] = str(
            parts["amount"]["valueMoney"]["value"])
    assert shares == {"direct-payment": "11700.00", "notional": "5030.00"}
    assert sorted(a["type"]["coding"][0]["code"] for a in by_type["Account"]
                  if a["subject"][0]["reference"] == f"Patient/{patient_of['P100001']}") == ["direct-payment", "notional"]
    graham_plan = plans[(f"Patient/{patient_of['P100001']}", "care-support-plan")][0]
    assert budget["partOf"] == [{"reference": f"CarePlan/{graham_plan['id']}"}]
    assert len(by_type["ServiceRequest"]) == 2 and len(by_type["Procedure"]) == 5
    provenance = len(by_type["Provenance"])
    assert provenance >= 12

    # The same extract again (a forced duplicate upload): nothing in the record changes.
    before = _versions(clean_db)
    _import(bus, tmp_path, "second", force=True)
    wait_for(lambda: _recorded_all(bus, 24), 90, "the re-imported bundles recorded")
    assert _versions(clean_db) == before
