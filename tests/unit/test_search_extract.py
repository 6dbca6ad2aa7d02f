"""hub.search.extract: index rows from resources, and agreement of the compiled path walker
with fhirpathpy (the reference FHIRPath engine) on every parameter of the IPC resource types."""
from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from hub.search.definitions import SearchParam, supported_params
from hub.search.extract import (
    EMITTERS,
    IndexRows,
    compile_param,
    fhirpathpy_evaluator,
    index_rows,
)
from hub.fhir.references import parse_reference
from hub.search.pathwalk import UnsupportedExpression, compile_path, reference_type
from hub.search.values import (
    DATE_MAX,
    DATE_MIN,
    NUMBER_MAX,
    NUMBER_MIN,
    date_range,
    normalize,
    precision_range,
)
from tests.shared_data import UKCORE_EXAMPLES

NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
SCT = "http://snomed.info/sct"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Hand-made resources for the IPC types, each element a search parameter reads filled in.

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "pat-1",
    "meta": {"versionId": "1", "lastUpdated": "2024-01-01T10:00:00Z",
             "profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"],
             "tag": [{"system": "http://example.org/tags", "code": "ipc", "display": "IPC"}],
             "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
             "source": "urn:ipc:connector:gp"},
    "extension": [{"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory",
                   "valueCodeableConcept": {"coding": [{"code": "A"}]}}],
    "identifier": [{"system": NHS, "value": "9000000009", "type": {"text": "NHS Number"}}],
    "active": True,
    "name": [{"use": "official", "family": "Brontë", "given": ["Zoë", "Anne"], "prefix": ["Mrs"],
              "suffix": ["MBE"], "text": "Mrs Zoë Anne Brontë MBE"},
             {"use": "nickname", "given": ["Zo"]}],
    "telecom": [{"system": "phone", "value": "01632 960587", "use": "home"},
                {"system": "email", "value": "zoe@example.org"}],
    "gender": "female", "birthDate": "1968-03-21", "deceasedDateTime": "2024-06-01T12:00:00+01:00",
    "address": [{"use": "home", "line": ["1 Trevelyan Square", "Boar Lane"], "city": "Leeds",
                 "district": "West Yorkshire", "state": "England", "postalCode": "LS1 6AE", "country": "GBR"}],
    "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-GB",
                                                "display": "English (United Kingdom)"}]}}],
    "generalPractitioner": [{"reference": "Organization/Y12345", "identifier": {"system": ODS, "value": "Y12345"}},
                            {"reference": "Practitioner/pr-1"}],
    "managingOrganization": {"reference": "Organization/Y12345"},
    "link": [{"other": {"reference": "RelatedPerson/rp-1"}, "type": "seealso"}],
}

CAREPLAN: dict[str, Any] = {
    "resourceType": "CarePlan", "id": "cp-1",
    "extension": [{"url": "https://ipc-hub.example.org/fhir/StructureDefinition/care-coordinator",
                   "valueReference": {"reference": "Practitioner/vwm-1"}},
                  # The plan's life (issue 13): the guide's stage, next-review-date and need parameters.
                  {"url": "https://ipc-hub.example.org/fhir/StructureDefinition/ipc-stage", "valueCodeableConcept": {
                      "coding": [{"system": "https://ipc-hub.example.org/fhir/CodeSystem/ipc-stage",
                                  "code": "make-it-happen"}]}},
                  {"url": "https://ipc-hub.example.org/fhir/StructureDefinition/next-review-date",
                   "valueDate": "2027-02-05"},
                  {"url": "https://ipc-hub.example.org/fhir/StructureDefinition/life-area-need", "extension": [
                      {"url": "lifeArea", "valueCodeableConcept": {"coding": [
                          {"system": "https://ipc-hub.example.org/fhir/CodeSystem/ipc-life-area",
                           "code": "accommodation-own"}]}},
                      {"url": "notWorking", "valueString": "Stairs to the flat"}]}],
    "identifier": [{"system": "https://example.org/ipc/careplan", "value": "PSP-001"}],
    "instantiatesCanonical": ["https://example.org/PlanDefinition/ipc|1.0"],
    "instantiatesUri": ["https://example.org/guidance/ipc"],
    "basedOn": [{"reference": "CarePlan/cp-0"}], "replaces": [{"reference": "CarePlan/cp-old"}],
    "partOf": [{"reference": "CarePlan/cp-parent"}],
    "status": "active", "intent": "plan",
    "category": [{"coding": [{"system": SCT, "code": "734163000", "display": "Care plan"}],
                  "text": "Personalised care and support plan"}],
    "subject": {"reference": "Patient/pat-1"}, "encounter": {"reference": "Encounter/enc-1"},
    "period": {"start": "2024-02-01", "end": "2025-01-31"},
    "careTeam": [{"reference": "CareTeam/ct-1"}], "addresses": [{"reference": "Condition/cond-1"}],
    "goal": [{"reference": "Goal/goal-1"}],
    "activity": [
        {"detail": {"code": {"coding": [{"system": SCT, "code": "385763009", "display": "Hospice care"}]},
                    "status": "scheduled",
                    "scheduledPeriod": {"start": "2024-03-01T09:00:00Z", "end": "2024-03-01T10:00:00Z"},
                    "performer": [{"reference": "Practitioner/pr-2"}]}},
        {"reference": {"reference": "ServiceRequest/sr-1"},
         "detail": {"status": "in-progress",
                    "scheduledTiming": {"event": ["2024-04-01T09:00:00Z", "2024-05-01T09:00:00Z"]}}},
        {"detail": {"status": "not-started", "scheduledString": "weekly"}},
    ],
}

GOAL: dict[str, Any] = {
    "resourceType": "Goal", "id": "goal-1",
    "identifier": [{"system": "https://example.org/ipc/goal", "value": "G-1"}],
    "lifecycleStatus": "active",
    "achievementStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
                                      "code": "improving"}]},
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/goal-category", "code": "behavioral"}]}],
    "description": {"text": "Walk to the shops every day"},
    "subject": {"reference": "Patient/pat-1"}, "startDate": "2024-02-01",
    "target": [{"dueDate": "2024-06-30"}, {"dueDuration": {"value": 10, "unit": "wk"}}],
}

RELATED_PERSON: dict[str, Any] = {
    "resourceType": "RelatedPerson", "id": "rp-1", "active": True,
    "identifier": [{"system": "https://example.org/ipc/carer", "value": "C-9"}],
    "patient": {"reference": "Patient/pat-1"},
    "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "DAU",
                                  "display": "daughter"}]}],
    "name": [{"family": "Brontë", "given": ["Emily"]}],
    "telecom": [{"system": "phone", "value": "07700 900123"}, {"system": "email", "value": "emily@example.org"}],
    "gender": "female", "birthDate": "1990-07",
    "address": [{"use": "home", "line": ["2 Park Row"], "city": "Leeds", "postalCode": "LS1 5HD", "country": "GBR",
                 "state": "England"}],
}

CARE_TEAM: dict[str, Any] = {
    "resourceType": "CareTeam", "id": "ct-1", "status": "active",
    "identifier": [{"system": "https://example.org/ipc/team", "value": "T-1"}],
    "category": [{"coding": [{"system": "http://loinc.org", "code": "LA27976-2", "display": "Encounter-focused care team"}]}],
    "subject": {"reference": "Patient/pat-1"}, "encounter": {"reference": "Encounter/enc-1"},
    "period": {"start": "2024-01-01"},
    "participant": [{"member": {"reference": "Practitioner/pr-1"}}, {"member": {"reference": "RelatedPerson/rp-1"}}],
}

CONSENT: dict[str, Any] = {
    "resourceType": "Consent", "id": "consent-1", "status": "active",
    "identifier": [{"system": "https://example.org/ipc/consent", "value": "CN-1"}],
    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": {"reference": "Patient/pat-1"}, "dateTime": "2024-01-15T11:00:00Z",
    "performer": [{"reference": "Patient/pat-1"}], "organization": [{"reference": "Organization/Y12345"}],
    "sourceReference": {"reference": "DocumentReference/doc-1"},
    "provision": {"type": "permit", "period": {"start": "2024-01-15", "end": "2025-01-15"},
                  "actor": [{"role": {"text": "carer"}, "reference": {"reference": "RelatedPerson/rp-1"}}],
                  "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
                  "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}],
                  "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
                  "data": [{"meaning": "related", "reference": {"reference": "CarePlan/cp-1"}}]},
}

PROVENANCE: dict[str, Any] = {
    "resourceType": "Provenance", "id": "prov-1",
    "target": [{"reference": "CarePlan/cp-1"}, {"reference": "Patient/pat-1"}],
    "occurredDateTime": "2024-02-01T09:55:00Z", "recorded": "2024-02-01T10:00:00.123Z",
    "location": {"reference": "Location/loc-1"},
    "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                    "code": "author"}]},
               "role": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "AUT"}]}],
               "who": {"reference": "Practitioner/pr-1"}}],
    "entity": [{"role": "source", "what": {"reference": "DocumentReference/doc-1"}}],
    "signature": [{"type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}],
                   "when": "2024-02-01T10:00:00Z", "who": {"reference": "Practitioner/pr-1"}}],
}

AUDIT_EVENT: dict[str, Any] = {
    "resourceType": "AuditEvent", "id": "audit-1",
    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
    "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
    "action": "R", "recorded": "2024-02-01T10:00:00+00:00", "outcome": "0",
    "agent": [{"type": {"text": "user"}, "role": [{"text": "care coordinator"}],
               "who": {"reference": "Practitioner/pr-1"}, "altId": "cc-17", "name": "Dr Jones",
               "requestor": True, "policy": ["https://example.org/policy/ipc"],
               "network": {"address": "192.168.0.7", "type": "2"}},
              {"who": {"reference": "Patient/pat-1"}, "requestor": False}],
    "source": {"site": "Leeds", "observer": {"reference": "Device/hub"}},
    "entity": [{"what": {"reference": "Patient/pat-1"}, "name": "patient record",
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}],
}

ORGANIZATION: dict[str, Any] = {
    "resourceType": "Organization", "id": "Y12345", "active": True,
    "identifier": [{"system": ODS, "value": "Y12345"}],
    "type": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/organisation-role", "code": "76"}]}],
    "name": "Leeds GP Practice", "alias": ["Trevelyan Surgery"],
    "telecom": [{"system": "phone", "value": "0113 496 0000"}],
    "address": [{"use": "work", "line": ["1 Trevelyan Square"], "city": "Leeds", "postalCode": "LS1 6AE",
                 "country": "GBR", "state": "England"}],
    "partOf": {"reference": "Organization/ICB-1"}, "endpoint": [{"reference": "Endpoint/ep-1"}],
}

PRACTITIONER: dict[str, Any] = {
    "resourceType": "Practitioner", "id": "pr-1", "active": True,
    "identifier": [{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "C1234567"}],
    "name": [{"family": "Jones", "given": ["Ann"], "prefix": ["Dr"]}],
    "telecom": [{"system": "email", "value": "ann.jones@nhs.net"}, {"system": "phone", "value": "0113 496 0001"}],
    "address": [{"use": "work", "city": "Leeds", "postalCode": "LS1 6AE", "country": "GBR", "state": "England"}],
    "gender": "female",
    "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": "cy", "display": "Welsh"}]}],
}

ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter", "id": "enc-1", "status": "finished",
    "extension": [{"url": "https://ipc-hub.example.org/fhir/StructureDefinition/care-plan",
                   "valueReference": {"reference": "CarePlan/cp-1"}}],
    "identifier": [{"system": "https://example.org/ipc/encounter", "value": "E-1"}],
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
    "type": [{"coding": [{"system": SCT, "code": "11429006", "display": "Consultation"}]}],
    "subject": {"reference": "Patient/pat-1"}, "episodeOfCare": [{"reference": "EpisodeOfCare/eoc-1"}],
    "basedOn": [{"reference": "ServiceRequest/sr-1"}], "appointment": [{"reference": "Appointment/appt-1"}],
    "participant": [{"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                           "code": "PPRF"}]}],
                     "individual": {"reference": "Practitioner/pr-1"}},
                    {"individual": {"reference": "RelatedPerson/rp-1"}}],
    "period": {"start": "2024-02-01T09:00:00Z", "end": "2024-02-01T09:30:00Z"},
    "length": {"value": 30, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"},
    "reasonCode": [{"text": "Annual review"}], "reasonReference": [{"reference": "Condition/cond-1"}],
    "diagnosis": [{"condition": {"reference": "Condition/cond-1"}}],
    "account": [{"reference": "Account/acc-1"}],
    "hospitalization": {"specialArrangement": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/encounter-special-arrangements",
                                                             "code": "wheel"}]}]},
    "location": [{"location": {"reference": "Location/loc-1"}, "period": {"start": "2024-02-01T09:00:00Z"}}],
    "serviceProvider": {"reference": "Organization/Y12345"}, "partOf": {"reference": "Encounter/enc-0"},
}

FLAG: dict[str, Any] = {
    "resourceType": "Flag", "id": "flag-1", "status": "active",
    "extension": [{"url": "https://ipc-hub.example.org/fhir/StructureDefinition/care-plan",
                   "valueReference": {"reference": "CarePlan/cp-1"}}],
    "identifier": [{"system": "https://example.org/ipc/flag", "value": "F-1"}],
    "code": {"text": "Lives alone"}, "subject": {"reference": "Patient/pat-1"},
    "period": {"start": "2024-01-01"}, "encounter": {"reference": "Encounter/enc-1"},
    "author": {"reference": "Practitioner/pr-1"},
}

TASK: dict[str, Any] = {
    "resourceType": "Task", "id": "task-1", "status": "in-progress", "intent": "order", "priority": "urgent",
    "identifier": [{"system": "https://example.org/ipc/task", "value": "TK-1"}],
    "groupIdentifier": {"system": "https://example.org/ipc/task-group", "value": "TG-1"},
    "basedOn": [{"reference": "CarePlan/cp-1"}], "partOf": [{"reference": "Task/task-0"}],
    "businessStatus": {"text": "awaiting budget approval"},
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "focus": {"reference": "ServiceRequest/sr-1"}, "for": {"reference": "Patient/pat-1"},
    "encounter": {"reference": "Encounter/enc-1"},
    "executionPeriod": {"start": "2024-02-02T08:00:00Z"},
    "authoredOn": "2024-02-01T10:00:00Z", "lastModified": "2024-02-02T08:00:00Z",
    "requester": {"reference": "Practitioner/pr-1"},
    "performerType": [{"coding": [{"system": SCT, "code": "224535009", "display": "Registered nurse"}]}],
    "owner": {"reference": "Organization/Y12345"},
}

SERVICE_REQUEST: dict[str, Any] = {
    "resourceType": "ServiceRequest", "id": "sr-1", "status": "active", "intent": "order", "priority": "routine",
    "identifier": [{"system": "https://example.org/ipc/referral", "value": "R-1"}],
    "instantiatesCanonical": ["https://example.org/PlanDefinition/social-prescribing"],
    "instantiatesUri": ["https://example.org/protocol/sp"],
    "basedOn": [{"reference": "CarePlan/cp-1"}], "replaces": [{"reference": "ServiceRequest/sr-0"}],
    "requisition": {"system": "https://example.org/ipc/requisition", "value": "RQ-1"},
    "category": [{"coding": [{"system": SCT, "code": "306206005", "display": "Referral to service"}]}],
    "code": {"coding": [{"system": SCT, "code": "871731000000106", "display": "Referral to social prescribing service"}]},
    "subject": {"reference": "Patient/pat-1"}, "encounter": {"reference": "Encounter/enc-1"},
    "occurrencePeriod": {"start": "2024-03-01", "end": "2024-03-31"}, "authoredOn": "2024-02-01",
    "requester": {"reference": "Practitioner/pr-1"},
    "performerType": {"coding": [{"system": SCT, "code": "309390008", "display": "Social worker"}]},
    "performer": [{"reference": "Organization/link-worker"}],
    "bodySite": [{"coding": [{"system": SCT, "code": "123037004"}]}],
    "specimen": [{"reference": "Specimen/spec-1"}],
}

EPISODE_OF_CARE: dict[str, Any] = {
    "resourceType": "EpisodeOfCare", "id": "eoc-1", "status": "active",
    "identifier": [{"system": "https://example.org/ipc/episode", "value": "EP-1"}],
    "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/episodeofcare-type", "code": "hacc"}]}],
    "diagnosis": [{"condition": {"reference": "Condition/cond-1"}}],
    "patient": {"reference": "Patient/pat-1"}, "managingOrganization": {"reference": "Organization/Y12345"},
    "period": {"start": "2024-01-01"}, "referralRequest": [{"reference": "ServiceRequest/sr-1"}],
    "careManager": {"reference": "Practitioner/pr-1"},
}

SAMPLES = [PATIENT, CAREPLAN, GOAL, RELATED_PERSON, CARE_TEAM, CONSENT, PROVENANCE, AUDIT_EVENT,
           ORGANIZATION, PRACTITIONER, ENCOUNTER, FLAG, TASK, SERVICE_REQUEST, EPISODE_OF_CARE]
IPC_TYPES = [s["resourceType"] for s in SAMPLES]


def rows_for(resource: dict[str, Any], param: str) -> dict[str, list[tuple]]:
    """The rows of one parameter, by table, empty tables left out."""
    found = {name: [r for r in rows if r[0] == param] for name, rows in index_rows(resource).tables().items()}
    return {name: rows for name, rows in found.items() if rows}


# --------------------------------------------------------------------------------------------
# Value rules


def test_token_rows() -> None:
    assert rows_for(PATIENT, "gender") == {"idx_token": [("gender", None, "female", None)]}
    assert rows_for(PATIENT, "active") == {"idx_token": [("active", None, "true", None)]}
    assert rows_for(PATIENT, "identifier") == {"idx_token": [("identifier", NHS, "9000000009", "nhs number")]}
    assert rows_for(PATIENT, "language") == {"idx_token": [
        ("language", "urn:ietf:bcp:47", "en-GB", "english (united kingdom)")]}
    assert rows_for(PATIENT, "_tag") == {"idx_token": [("_tag", "http://example.org/tags", "ipc", "ipc")]}
    # CodeableConcept: each coding plus its text as a code-less row (for :text)
    assert rows_for(CAREPLAN, "category")["idx_token"] == [
        ("category", SCT, "734163000", "care plan"),
        ("category", None, None, "personalised care and support plan"),
    ]
    # text-only CodeableConcept
    assert rows_for(TASK, "business-status") == {"idx_token": [("business-status", None, None, "awaiting budget approval")]}


def test_contact_point_tokens_have_no_system() -> None:
    assert rows_for(PATIENT, "telecom")["idx_token"] == [
        ("telecom", None, "01632 960587", None), ("telecom", None, "zoe@example.org", None)]
    assert rows_for(PATIENT, "phone") == {"idx_token": [("phone", None, "01632 960587", None)]}
    assert rows_for(PATIENT, "email") == {"idx_token": [("email", None, "zoe@example.org", None)]}


def test_deceased_token_follows_the_r4_expression() -> None:
    assert rows_for(PATIENT, "deceased") == {"idx_token": [("deceased", None, "true", None)]}
    alive = {"resourceType": "Patient", "id": "x"}
    assert rows_for(alive, "deceased") == {"idx_token": [("deceased", None, "false", None)]}
    assert rows_for({**alive, "deceasedBoolean": False}, "deceased") == {"idx_token": [("deceased", None, "false", None)]}
    assert rows_for({**alive, "deceasedBoolean": True}, "deceased") == {"idx_token": [("deceased", None, "true", None)]}


def test_string_rows_from_human_name_and_address() -> None:
    names = rows_for(PATIENT, "name")["idx_string"]
    assert [exact for _, _, exact in names] == ["Brontë", "Zoë", "Anne", "Mrs", "MBE", "Mrs Zoë Anne Brontë MBE", "Zo"]
    assert names[0] == ("name", "bronte", "Brontë")
    assert rows_for(PATIENT, "family") == {"idx_string": [("family", "bronte", "Brontë")]}
    assert [n for _, n, _ in rows_for(PATIENT, "given")["idx_string"]] == ["zoe", "anne", "zo"]
    assert [e for _, _, e in rows_for(PATIENT, "address")["idx_string"]] == [
        "1 Trevelyan Square", "Boar Lane", "Leeds", "West Yorkshire", "England", "LS1 6AE", "GBR"]
    assert rows_for(PATIENT, "address-postalcode") == {"idx_string": [("address-postalcode", "ls1 6ae", "LS1 6AE")]}
    assert [e for _, _, e in rows_for(ORGANIZATION, "name")["idx_string"]] == ["Leeds GP Practice", "Trevelyan Surgery"]


def test_normalize() -> None:
    assert normalize("Zoë Brontë") == "zoe bronte"
    assert normalize("ÅNGSTRÖM") == "angstrom"
    assert normalize("ﬁne") == "fine"  # NFKD folds the ligature
    assert len(normalize("x" * 5000)) == 512


def test_reference_rows() -> None:
    assert rows_for(CAREPLAN, "subject") == {"idx_reference": [("subject", "Patient", "pat-1", None)]}
    assert rows_for(CAREPLAN, "patient") == {"idx_reference": [("patient", "Patient", "pat-1", None)]}
    assert rows_for(CAREPLAN, "instantiates-canonical") == {
        "idx_reference": [("instantiates-canonical", None, None, "https://example.org/PlanDefinition/ipc|1.0")]}
    # Reference.identifier is searchable with :identifier, as a token row
    assert rows_for(PATIENT, "general-practitioner:identifier") == {
        "idx_token": [("general-practitioner:identifier", ODS, "Y12345", None)]}
    assert rows_for(PATIENT, "general-practitioner")["idx_reference"] == [
        ("general-practitioner", "Organization", "Y12345", None), ("general-practitioner", "Practitioner", "pr-1", None)]
    # where(resolve() is Type) keeps only references to that type
    assert rows_for(ENCOUNTER, "practitioner") == {"idx_reference": [("practitioner", "Practitioner", "pr-1", None)]}
    assert rows_for(ENCOUNTER, "participant")["idx_reference"] == [
        ("participant", "Practitioner", "pr-1", None), ("participant", "RelatedPerson", "rp-1", None)]
    assert rows_for(PROVENANCE, "patient") == {"idx_reference": [("patient", "Patient", "pat-1", None)]}
    assert rows_for(AUDIT_EVENT, "patient") == {"idx_reference": [("patient", "Patient", "pat-1", None)]}


@pytest.mark.parametrize(("ref", "expected"), [
    ("Patient/123", ("Patient", "123", None)),
    ("Patient/123/_history/4", ("Patient", "123", None)),
    ("http://hub.example/fhir/Patient/123", ("Patient", "123", "http://hub.example/fhir/Patient/123")),
    ("https://x.org/fhir/Patient/a.b-c/_history/2", ("Patient", "a.b-c", "https://x.org/fhir/Patient/a.b-c/_history/2")),
    ("urn:uuid:2b9d5e2f-4ea3-4b50-8b0c-86a4b4b50b07", (None, None, "urn:uuid:2b9d5e2f-4ea3-4b50-8b0c-86a4b4b50b07")),
    ("Patient?identifier=x|1", (None, None, "Patient?identifier=x|1")),
    ("#contained-1", None),
    ("", None),
])
def test_parse_reference(ref: str, expected: tuple | None) -> None:
    assert parse_reference(ref) == expected


def test_contained_and_urn_references() -> None:
    resource = {"resourceType": "CarePlan", "id": "x",
                "subject": {"reference": "#p"}, "goal": [{"reference": "urn:uuid:1234"}]}
    assert rows_for(resource, "subject") == {}
    assert rows_for(resource, "goal") == {"idx_reference": [("goal", None, None, "urn:uuid:1234")]}
    assert rows_for(resource, "patient") == {}  # neither resolves to a Patient
    typed = {"resourceType": "CarePlan", "id": "y", "subject": {"reference": "urn:uuid:1", "type": "Patient"}}
    assert rows_for(typed, "patient") == {"idx_reference": [("patient", None, None, "urn:uuid:1")]}


def test_reference_type() -> None:
    assert reference_type({"reference": "Patient/1"}) == "Patient"
    assert reference_type({"reference": "http://x/fhir/Group/1/_history/2"}) == "Group"
    assert reference_type({"reference": "urn:uuid:1", "type": "Patient"}) == "Patient"
    assert reference_type({"identifier": {"value": "1"}}) is None
    assert reference_type("Patient/1") is None


@pytest.mark.parametrize(("text", "low", "high"), [
    ("2020", utc(2020, 1, 1), utc(2021, 1, 1)),
    ("2020-12", utc(2020, 12, 1), utc(2021, 1, 1)),
    ("2020-02-28", utc(2020, 2, 28), utc(2020, 2, 29)),
    ("2020-05-01T10:00:00Z", utc(2020, 5, 1, 10), utc(2020, 5, 1, 10, 0, 1)),
    ("2020-05-01T10:00:00+01:00", utc(2020, 5, 1, 9), utc(2020, 5, 1, 9, 0, 1)),
    ("2020-05-01T10:00:00", utc(2020, 5, 1, 10), utc(2020, 5, 1, 10, 0, 1)),  # no zone: UTC
    ("2020-05-01T10:00", utc(2020, 5, 1, 10), utc(2020, 5, 1, 10, 1)),
    ("2020-05-01T10:00:00.5Z", datetime(2020, 5, 1, 10, 0, 0, 500000, tzinfo=UTC),
     datetime(2020, 5, 1, 10, 0, 0, 600000, tzinfo=UTC)),
    ("2020-05-01T10:00:00.123456789Z", datetime(2020, 5, 1, 10, 0, 0, 123456, tzinfo=UTC),
     datetime(2020, 5, 1, 10, 0, 0, 123457, tzinfo=UTC)),
    ("9999", utc(9999, 1, 1), DATE_MAX),
    ("9999-12-31", utc(9999, 12, 31), DATE_MAX),
])
def test_date_range(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize("text", ["", "20", "2020-13", "2020-02-30", "10:00:00", "yesterday", "2020-05-01T25:00:00Z"])
def test_not_a_date(text: str) -> None:
    assert date_range(text) is None


def test_date_rows() -> None:
    assert rows_for(PATIENT, "birthdate") == {"idx_date": [("birthdate", utc(1968, 3, 21), utc(1968, 3, 22))]}
    assert rows_for(PATIENT, "death-date") == {"idx_date": [("death-date", utc(2024, 6, 1, 11), utc(2024, 6, 1, 11, 0, 1))]}
    assert rows_for(CAREPLAN, "date") == {"idx_date": [("date", utc(2024, 2, 1), utc(2025, 2, 1))]}
    # Period, Timing (outer limits of its events); a scheduledString is no date
    assert rows_for(CAREPLAN, "activity-date") == {"idx_date": [
        ("activity-date", utc(2024, 3, 1, 9), utc(2024, 3, 1, 10, 0, 1)),
        ("activity-date", utc(2024, 4, 1, 9), utc(2024, 5, 1, 9, 0, 1)),
    ]}
    assert rows_for(CARE_TEAM, "date") == {"idx_date": [("date", utc(2024, 1, 1), DATE_MAX)]}
    assert rows_for({"resourceType": "CareTeam", "id": "x", "period": {"end": "2020"}}, "date") == {
        "idx_date": [("date", DATE_MIN, utc(2021, 1, 1))]}
    assert rows_for(GOAL, "target-date") == {"idx_date": [("target-date", utc(2024, 6, 30), utc(2024, 7, 1))]}
    assert rows_for(GOAL, "start-date") == {"idx_date": [("start-date", utc(2024, 2, 1), utc(2024, 2, 2))]}
    timing = {"resourceType": "CarePlan", "id": "t", "activity": [{"detail": {"scheduledTiming": {
        "repeat": {"boundsPeriod": {"start": "2024-01-01", "end": "2024-01-31"}, "frequency": 1, "period": 1,
                   "periodUnit": "d"}}}}]}
    assert rows_for(timing, "activity-date") == {"idx_date": [("activity-date", utc(2024, 1, 1), utc(2024, 2, 1))]}


def test_lastupdated_and_id_are_not_indexed() -> None:
    assert rows_for(PATIENT, "_lastUpdated") == {} and rows_for(PATIENT, "_id") == {}


@pytest.mark.parametrize(("number", "low", "high"), [
    ("1.5", "1.45", "1.55"),
    ("100", "99.5", "100.5"),
    ("100.00", "99.995", "100.005"),
    ("1e2", "50", "150"),
    ("0.25", "0.245", "0.255"),
    ("-3", "-3.5", "-2.5"),
])
def test_precision_range(number: str, low: str, high: str) -> None:
    assert precision_range(Decimal(number)) == (Decimal(low), Decimal(high))


def test_quantity_and_number_rows() -> None:
    assert rows_for(ENCOUNTER, "length") == {"idx_quantity": [
        ("length", Decimal("29.5"), Decimal("30.5"), "http://unitsofmeasure.org", "min", "min")]}
    observation = {"resourceType": "Observation", "id": "o", "valueQuantity": {"value": 72.5, "unit": "kg", "comparator": "<"}}
    assert rows_for(observation, "value-quantity") == {"idx_quantity": [
        ("value-quantity", NUMBER_MIN, Decimal("72.55"), None, None, "kg")]}
    condition = {"resourceType": "Condition", "id": "c", "onsetRange": {"low": {"value": 5, "unit": "a"}}}
    assert rows_for(condition, "onset-age") == {"idx_quantity": [("onset-age", Decimal(5), NUMBER_MAX, None, None, "a")]}
    risk = {"resourceType": "RiskAssessment", "id": "r", "prediction": [
        {"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 0.1}, "high": {"value": 0.2}}}]}
    assert rows_for(risk, "probability") == {"idx_number": [
        ("probability", Decimal("0.245"), Decimal("0.255")), ("probability", Decimal("0.1"), Decimal("0.2"))]}
    invoice = {"resourceType": "Invoice", "id": "i", "totalGross": {"value": 10.5, "currency": "GBP"}}
    assert rows_for(invoice, "totalgross") == {"idx_quantity": [
        ("totalgross", Decimal("10.45"), Decimal("10.55"), "urn:iso:std:iso:4217", "GBP", None)]}


def test_uri_rows() -> None:
    assert rows_for(PATIENT, "_profile") == {"idx_uri": [("_profile", "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient")]}
    assert rows_for(PATIENT, "_source") == {"idx_uri": [("_source", "urn:ipc:connector:gp")]}
    assert rows_for(AUDIT_EVENT, "policy") == {"idx_uri": [("policy", "https://example.org/policy/ipc")]}


def test_duplicate_rows_are_dropped() -> None:
    patient = {"resourceType": "Patient", "id": "d", "name": [{"given": ["Al"]}, {"given": ["Al"]}]}
    assert rows_for(patient, "given") == {"idx_string": [("given", "al", "Al")]}


def test_unknown_type_and_empty_resource() -> None:
    assert index_rows({"resourceType": "NotAType", "id": "x"}) == IndexRows()
    assert index_rows({}) == IndexRows()


def test_index_rows_does_not_modify_the_resource() -> None:
    before = copy.deepcopy(CAREPLAN)
    index_rows(CAREPLAN)
    assert CAREPLAN == before


def test_choice_elements_by_name_and_by_type() -> None:
    walk = compile_path("Observation.value")
    assert walk([{"resourceType": "Observation", "valueString": "x"}]) == ["x"]
    assert compile_path("(Observation.value as Quantity)")([{"resourceType": "Observation", "valueString": "x"}]) == []
    assert compile_path("Observation.value.ofType(string)")([{"resourceType": "Observation", "valueString": "x"}]) == ["x"]
    # a name that merely starts like a choice element is not one
    assert compile_path("Questionnaire.subject")([{"resourceType": "Questionnaire", "subjectType": ["Patient"]}]) == []


def test_walker_subset() -> None:
    patient = {"resourceType": "Patient", "extension": [
        {"url": "http://a", "valueString": "A"}, {"url": "http://b", "valueCode": "B"}],
        "name": [{"given": ["x", "y"]}, {"given": ["z"]}]}
    assert compile_path("Patient.extension('http://b').value")([patient]) == ["B"]
    assert compile_path("Patient.extension.where(url = 'http://a').value")([patient]) == ["A"]
    assert compile_path("Patient.name.given.first()")([patient]) == ["x"]
    assert compile_path("Patient.name[1].given")([patient]) == ["z"]
    assert compile_path("Patient.name.exists()")([patient]) == [True]
    assert compile_path("Patient.telecom.empty()")([patient]) == [True]
    assert compile_path("Patient.name.where(given = 'z' or given = 'q').given")([patient]) == ["z"]
    assert compile_path("Observation.code")([patient]) == []  # another type's path finds nothing
    with pytest.raises(UnsupportedExpression):
        compile_path("Patient.name.select(given)")
    with pytest.raises(UnsupportedExpression):
        compile_path("Patient.name.given + 'x'")


def test_unsupported_expression_falls_back_to_fhirpathpy() -> None:
    param = SearchParam("given-count", "string", "Patient", "Patient.name.select(given.first())", "urn:x")
    evaluate = compile_param(param)
    rows = IndexRows()
    EMITTERS["string"]("given-count", evaluate([PATIENT]), rows)
    assert rows.strings == [("given-count", "zoe", "Zoë"), ("given-count", "zo", "Zo")]


# --------------------------------------------------------------------------------------------
# Agreement with fhirpathpy


def _fhirpathpy_resolve(references: list[Any]) -> list[Any]:
    """resolve() for fhirpathpy, which has none: a stub resource of the referenced type, so
    `resolve() is Patient` can be evaluated without a server."""
    from fhirpathpy.engine.nodes import ResourceNode

    return [ResourceNode.create_node({"resourceType": t}, t) for t in map(reference_type, references) if t]


def _fhirpathpy_values(expression: str, res_type: str, resource: dict[str, Any]) -> list[Any]:
    from fhirpathpy import evaluate
    from fhirpathpy.models import models

    # fhirpathpy does not treat `Resource.` as matching a concrete type, and (rightly, by the
    # FHIRPath spec) refuses `as` on a collection: `(Goal.target.due as date)` with two targets.
    # Indexing wants every item's value, which is what ofType() gives.
    expression = expression.replace("Resource.", f"{res_type}.")
    expression = re.sub(r"\(([\w.]+) as (\w+)\)", r"\1.ofType(\2)", expression)
    options = {"userInvocationTable": {"resolve": {"fn": _fhirpathpy_resolve, "arity": {0: []}}}}
    return evaluate(copy.deepcopy(resource), expression, {}, models["r4"], options)


def _emitted(param: SearchParam, values: list[Any]) -> IndexRows:
    rows = IndexRows()
    EMITTERS[param.type](param.code, values, rows)
    rows.dedupe()
    return rows


def _ukcore_resources() -> list[dict[str, Any]]:
    """UK Core examples of the IPC types, Bundle entries included (needs hub.fhir.xml)."""
    xml = pytest.importorskip("hub.fhir.xml")
    found = []
    for path in sorted(UKCORE_EXAMPLES.glob("UKCore-*.xml")):
        try:
            resource = xml.xml_to_json(path.read_bytes())
        except Exception:  # a converter gap is that module's tests' business
            continue
        found.append(resource)
        found += [e["resource"] for e in resource.get("entry", []) if isinstance(e.get("resource"), dict)]
    return [r for r in found if r.get("resourceType") in IPC_TYPES]


def test_compiled_extractor_agrees_with_fhirpathpy() -> None:
    pytest.importorskip("fhirpathpy")
    corpus = SAMPLES + _ukcore_resources()
    compared: set[tuple[str, str]] = set()
    mismatches = []
    for resource in corpus:
        res_type = resource["resourceType"]
        for param in supported_params(res_type).values():
            if param.code in ("_id", "_lastUpdated"):
                continue
            expected = _fhirpathpy_values(param.expression, res_type, resource)
            if not expected:
                continue
            native = compile_path(param.expression)([resource])
            if _emitted(param, native) != _emitted(param, expected):
                mismatches.append((res_type, param.code, resource.get("id"), native, expected))
            compared.add((res_type, param.code))
    assert not mismatches, mismatches[:5]
    # Every parameter of the hand-made resources had a value to compare...
    missing = {(s["resourceType"], code) for s in SAMPLES for code in supported_params(s["resourceType"])
               if code not in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")} - compared
    assert not missing, sorted(missing)


def test_fhirpathpy_evaluator_matches_native_on_samples() -> None:
    pytest.importorskip("fhirpathpy")
    evaluate = fhirpathpy_evaluator("Patient.name.given")
    assert evaluate([PATIENT]) == compile_path("Patient.name.given")([PATIENT])
