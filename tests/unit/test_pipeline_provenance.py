"""What the recorder's own Provenance says: a conclusion of the hub (a handover completed by a
GP registration) names the versions it rests on, so it can be traced to the feed that said them."""
from __future__ import annotations

from datetime import UTC, datetime

from hub.fhir.validation import validate
from hub.pipeline.provenance import hub_provenance
from hub.store.resources import Version

NOW = datetime(2026, 7, 20, 9, 15, tzinfo=UTC)


def version(res_type: str, res_id: str, number: int) -> Version:
    return Version(res_type, res_id, number, NOW, "{}")


def test_a_completed_handover_derives_from_the_patient_version_naming_the_gp():
    proof = hub_provenance([version("Task", "t1", 2)], "ipc-hub",
                           derived_from=[version("Patient", "p1", 3), version("Patient", "p1", 3)])
    assert proof["target"] == [{"reference": "Task/t1/_history/2"}]
    assert proof["entity"] == [{"role": "derivation", "what": {"reference": "Patient/p1/_history/3"}}]
    assert [i.diagnostics for i in validate(proof) if i.severity == "error"] == []


def test_without_grounds_there_is_no_entity_and_the_id_depends_only_on_the_targets():
    raised = hub_provenance([version("Task", "t1", 1)], "pas")
    assert "entity" not in raised
    grounded = hub_provenance([version("Task", "t1", 1)], "pas", derived_from=[version("Patient", "p1", 1)])
    assert grounded["id"] == raised["id"]  # a replay lands on the same Provenance
