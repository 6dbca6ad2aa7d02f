"""The MOD handover mapping as a pure function: every field of the full sample lands where it
should, every resource passes the IPC profiles it claims or falls under, ids are deterministic,
and a document that cannot be mapped is refused with a FhirError."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from hub.fhir.errors import FhirError
from hub.fhir.ids import source_id
from hub.fhir.resources import check_structure
from hub.fhir.validation import validate
from mappings.mod import MAPPINGS, map_handover

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "mod" / "samples"
SD = "https://ipc-hub.example.org/fhir/StructureDefinition/"
CS = "https://ipc-hub.example.org/fhir/CodeSystem/"
SOURCE = "mod-handover"


def doc(name: str = "handover-full") -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def mapped(document: dict) -> dict:
    return map_handover(json.dumps(document).encode(), SOURCE)


def of_type(bundle: dict, res_type: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == res_type]


def one(bundle: dict, res_type: str) -> dict:
    found = of_type(bundle, res_type)
    assert len(found) == 1, [r["id"] for r in found]
    return found[0]


def by_ref(bundle: dict, reference: str) -> dict:
    res_type, res_id = reference.split("/")
    return next(e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == res_type and e["resource"]["id"] == res_id)


def ext(resource: dict, url: str) -> list[dict]:
    return [e for e in resource.get("extension", []) if e["url"] == url]


def code_of(concept: dict) -> tuple[str, str]:
    return concept["coding"][0]["system"].rsplit("/", 1)[-1], concept["coding"][0]["code"]


@pytest.fixture(scope="module")
def full() -> dict:
    return mapped(doc())


def test_registered_for_the_connector_kind():
    assert MAPPINGS["mod-handover"] is map_handover


@pytest.mark.parametrize("name", ["handover-full", "handover-minimal"])
def test_every_resource_is_valid_against_the_ipc_profiles(name):
    bundle = mapped(doc(name))
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        check_structure(resource)
        assert [i.diagnostics for i in validate(resource) if i.severity == "error"] == [], resource["resourceType"]


def test_patient_carries_identity_contact_and_service(full):
    patient = one(full, "Patient")
    source = doc()
    assert patient["id"] == source_id(SOURCE, "Patient", "service-number|30112233")
    assert patient["meta"]["profile"] == [SD + "ipc-patient"]
    assert patient["identifier"] == [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9994500007"},
                                     {"system": "https://ipc-hub.example.org/fhir/Id/mod-service-number",
                                      "value": "30112233"}]
    assert patient["name"][0] == {"use": "official", "family": "Whitfield", "given": ["Samuel", "James"],
                                  "prefix": ["Cpl"]}
    assert patient["name"][1] == {"use": "usual", "family": "Whitfield", "given": ["Sam"], "prefix": ["Mr"]}
    assert (patient["birthDate"], patient["gender"]) == ("1994-05-21", "male")
    assert patient["telecom"] == [{"system": "phone", "value": "07700 900417"},
                                  {"system": "email", "value": "sam.whitfield@example.org"}]
    home, temp = patient["address"]
    assert home == {"use": "home", "line": ["Flat 2, 14 Chapel Street"], "postalCode": "NG18 1AA", "city": "Mansfield",
                    "district": "Nottinghamshire", "period": {"start": "2026-07-04"}}
    assert temp["use"] == "temp" and temp["postalCode"] == source["person"]["contact"]["address"]["postcode"]
    service = {p["url"]: p for p in ext(patient, SD + "armed-forces-service")[0]["extension"]}
    assert code_of(service["branch"]["valueCodeableConcept"]) == ("ipc-service-branch", "british-army")
    assert service["enlisted"]["valueDate"] == "2013-09-02"
    assert service["discharged"]["valueDate"] == "2026-07-03"
    assert code_of(service["recoveryPathwayStatus"]["valueCodeableConcept"]) == (
        "ipc-recovery-pathway-status", "transitioning")
    attributable = [p["valueReference"]["reference"] for p in ext(patient, SD + "armed-forces-service")[0]["extension"]
                    if p["url"] == "serviceAttributableCondition"]
    assert attributable == [f"Condition/{c['id']}" for c in of_type(full, "Condition")]
    assert "generalPractitioner" not in patient  # the receiving practice is the Task's, until registration


def test_flags_and_service_attributable_conditions(full):
    flags = {code_of(f["code"])[1]: f for f in of_type(full, "Flag")}
    assert flags["service-leaver"]["period"] == {"start": "2026-06-02", "end": "2026-07-03"}
    assert flags["armed-forces-veteran"]["period"] == {"start": "2026-07-03"}
    conditions = of_type(full, "Condition")
    assert [c["code"]["coding"][0]["code"] for c in conditions] == ["90584004", "47505003"]
    spinal = conditions[0]
    assert spinal["code"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert (CS + "ipc-transition", "service-attributable") in {
        (c["coding"][0]["system"], c["coding"][0]["code"]) for c in spinal["category"]}
    assert spinal["onsetDateTime"] == "2024-11-08"
    assert spinal["note"] == [{"text": "Incomplete injury at T10, sustained on operations"}]
    assert "note" not in conditions[1]


def test_referral_to_commissioners_from_the_mod(full):
    referral = one(full, "ServiceRequest")
    assert referral["meta"]["profile"] == [SD + "ipc-referral"]
    assert code_of(referral["category"][0]) == ("ipc-transition", "ipc4v-referral")
    assert referral["identifier"][0]["value"] == "HO-2026-000417"
    assert referral["authoredOn"] == "2026-06-02T09:30:00Z"
    assert referral["occurrencePeriod"] == {"start": "2026-06-30"}  # the planned discharge date
    assert by_ref(full, referral["requester"]["reference"])["name"].startswith("Ministry of Defence")
    performers = [by_ref(full, p["reference"]) for p in referral["performer"]]
    assert [p.get("identifier", [{}])[0].get("value") or p["name"] for p in performers] == ["QT1", "891"]
    assert len(referral["reasonReference"]) == 2 and len(referral["supportingInfo"]) == 2


def test_draft_plan_at_preparation_coordinated_by_the_welfare_manager(full):
    plan = one(full, "CarePlan")
    assert plan["meta"]["profile"] == [SD + "ipc-care-plan"]
    assert (plan["status"], plan["intent"]) == ("draft", "plan")
    assert code_of(ext(plan, SD + "ipc-stage")[0]["valueCodeableConcept"]) == ("ipc-stage", "preparation")
    manager = by_ref(full, ext(plan, SD + "care-coordinator")[0]["valueReference"]["reference"])
    assert manager["resourceType"] == "Practitioner"
    assert manager["name"] == [{"use": "official", "family": "Hughes", "given": ["Karen"], "prefix": ["Mrs"]}]
    assert manager["identifier"][0]["value"] == "VWM-0042"
    assert manager["telecom"] == [{"system": "phone", "value": "0808 1914 218"},
                                  {"system": "email", "value": "karen.hughes@veterans-uk.example.org"}]
    linked = ext(plan, SD + "linked-plan")
    assert len(linked) == 1 and linked[0]["extension"][1]["valueIdentifier"]["value"] == "IRP-2025-0417"
    assert plan["careTeam"] == [{"reference": f"CareTeam/{one(full, 'CareTeam')['id']}"}]
    assert len(plan["goal"]) == 3 and len(plan["addresses"]) == 2 and len(plan["supportingInfo"]) == 2
    assert plan["period"] == {"start": "2026-06-02"}


def test_steering_group_with_coordinator_charity_gp_commissioners_and_units(full):
    team = one(full, "CareTeam")
    members = [(p["role"][0]["coding"][0]["code"], by_ref(full, p["member"]["reference"]), p.get("period"))
               for p in team["participant"]]
    roles = [(role, m["resourceType"] if m["resourceType"] == "Practitioner" else m["name"]) for role, m, _ in members]
    assert roles == [("care-coordinator", "Practitioner"), ("lead-charity", "Forces Together Midshire"),
                     ("gp", "Chapel Street Surgery"),
                     ("steering-group-member", "NHS Nottingham and Nottinghamshire ICB"),
                     ("steering-group-member", "Nottinghamshire County Council"),
                     ("steering-group-member", "Personnel Recovery Unit Tidworth"),
                     ("steering-group-member", "DMRC Stanford Hall")]
    assert members[5][2] == {"start": "2025-01-10", "end": "2026-07-03"}
    assert members[6][2] == {"start": "2024-12-01", "end": "2025-03-28"}
    charity = members[1][1]
    assert charity["identifier"][0]["value"] == "1123456"
    assert {"system": "email", "value": "help@forces-together.example.org"} in charity["telecom"]


def test_goals_and_documents_from_existing_plans(full):
    source = doc()
    goals = of_type(full, "Goal")
    assert [g["description"]["text"] for g in goals] == [
        g["description"] for d in source["documents"] for g in d["goals"]]
    first = goals[0]
    assert code_of(first["category"][0]) == ("ipc-life-area", "accommodation-own")
    assert code_of(first["priority"]) == ("goal-priority", "high-priority")
    assert (first["startDate"], first["target"]) == ("2026-05-20", [{"dueDate": "2026-09-30"}])
    assert goals[0]["id"] != goals[2]["id"]  # goal G1 of two documents: two goals
    plan_doc, ot_doc = of_type(full, "DocumentReference")
    assert plan_doc["content"][0]["attachment"]["data"] == source["documents"][0]["data"]
    assert base64.b64decode(plan_doc["content"][0]["attachment"]["data"]).startswith(b"%PDF")
    assert plan_doc["content"][0]["attachment"]["contentType"] == "application/pdf"
    assert code_of(plan_doc["category"][0]) == ("ipc-formal-plan-type", "recovery-plan")
    assert [r["reference"] for r in plan_doc["context"]["related"]] == [f"Goal/{g['id']}" for g in goals[:2]]
    assert ot_doc["content"][0]["attachment"]["url"] == source["documents"][1]["url"]
    assert ot_doc["masterIdentifier"]["value"] == "OT-2026-0031"
    assert by_ref(full, ot_doc["author"][0]["reference"])["name"] == "DMRC Stanford Hall"


def test_consent_to_share_by_partner(full):
    consent = one(full, "Consent")
    assert consent["meta"]["profile"] == [SD + "ipc-consent"]
    assert consent["dateTime"] == "2026-05-28T14:00:00Z"
    assert code_of(consent["policyRule"]) == ("v3-ActCode", "OPTIN")
    provisions = consent["provision"]["provision"]
    got = [(p["type"], p["actor"][0]["role"]["coding"][0]["code"], by_ref(full, p["actor"][0]["reference"]["reference"])
            .get("name"), [c["coding"][0]["code"] for c in p["code"]]) for p in provisions]
    assert got == [
        ("permit", "nhs", "NHS Nottingham and Nottinghamshire ICB", ["demographics", "care-support-plan", "health",
                                                                     "armed-forces-service"]),
        ("permit", "local-authority", "Nottinghamshire County Council", ["demographics", "care-support-plan", "carers",
                                                                          "budget"]),
        ("permit", "lead-charity", "Forces Together Midshire", ["demographics", "care-support-plan", "care-team"]),
        ("permit", "defence", "Ministry of Defence, Defence Recovery Pathway", ["demographics", "armed-forces-service"]),
        ("permit", "education", "Nottingham Trent University", ["demographics"]),
    ]


def test_refused_consent_is_recorded_as_opt_out():
    consent = one(mapped(doc("handover-minimal")), "Consent")
    assert code_of(consent["policyRule"]) == ("v3-ActCode", "OPTOUT")
    assert [p["type"] for p in consent["provision"]["provision"]] == ["deny"]


def test_handover_task_to_gp_practice_and_commissioners_with_due_date(full):
    task = one(full, "Task")
    assert task["meta"]["profile"] == [SD + "ipc-handover-task"]
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert code_of(task["code"]) == ("ipc-transition", "gp-registration-handover")
    assert task["for"]["reference"] == f"Patient/{one(full, 'Patient')['id']}"
    assert task["focus"]["reference"] == f"ServiceRequest/{one(full, 'ServiceRequest')['id']}"
    assert task["restriction"]["period"] == {"end": "2026-07-31"}
    assert task["executionPeriod"] == {"start": "2026-06-02", "end": "2026-07-31"}
    owner = by_ref(full, task["owner"]["reference"])
    assert owner["identifier"][0] == {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "C84001"}
    recipients = [by_ref(full, r["reference"])["identifier"][0]["value"] for r in task["restriction"]["recipient"]]
    assert recipients == ["C84001", "QT1"]


def test_due_date_defaults_to_28_days_after_discharge():
    source = doc()
    del source["destination"]["gpRegistrationDueDate"]
    assert one(mapped(source), "Task")["restriction"]["period"]["end"] == "2026-07-31"  # 3 July + 28 days
    minimal = one(mapped(doc("handover-minimal")), "Task")
    assert minimal["restriction"]["period"]["end"] == "2026-10-13"  # planned 15 September + 28 days
    assert "owner" not in minimal


def test_ids_are_deterministic_and_a_corrected_resend_lands_on_the_same_resources(full):
    assert mapped(doc()) == full
    corrected = doc()
    corrected["issued"] = "2026-06-09T10:00:00Z"
    corrected["person"]["contact"]["phone"] = ["07700 900999"]
    again = mapped(corrected)
    assert [e["request"]["url"] for e in again["entry"]] == [e["request"]["url"] for e in full["entry"]]
    other = doc()
    other["person"]["serviceNumber"] = "30999999"
    assert {e["resource"]["id"] for e in mapped(other)["entry"] 
              if e["resource"]["resourceType"] not in ("Organization", "Practitioner")} \
        .isdisjoint({e["resource"]["id"] for e in full["entry"]})


@pytest.mark.parametrize(("payload", "code"), [
    (b"\xff\xfe not json", "structure"),
    (b'{"schemaVersion": "1.0"}', "required"),
])
def test_unmappable_payload_is_a_fhir_error(payload, code):
    with pytest.raises(FhirError) as caught:
        map_handover(payload, SOURCE)
    assert caught.value.code == code
