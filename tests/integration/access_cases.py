"""A person's record for the access tests: one resource in each of several record parts, two
organisations with identifiers (an ICB by ODS code, a lead charity by charity number), and
helpers to give or withdraw their record-sharing consent. Ids are fresh per call, so tests
sharing the session's database never see each other's people."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import httpx

from hub.auth.organisations import CHARITY_NUMBER
from hub.fhir.identifiers import ODS_ORGANIZATION_CODE
from hub.fhir.jsontext import dumps

JSON = {"Content-Type": "application/fhir+json"}
IPC = "https://ipc-hub.example.org/fhir/"
PART = IPC + "CodeSystem/ipc-record-part"
PARTNER = IPC + "CodeSystem/ipc-consent-partner"


@dataclass
class Person:
    patient: str
    icb_code: str
    charity_number: str
    icb: str = ""
    charity: str = ""
    ids: dict[str, str] = field(default_factory=dict)  # kind → "Type/id"
    consent: str | None = None


def _put(fhir: httpx.Client, resource: dict) -> dict:
    r = fhir.put(f"/{resource['resourceType']}/{resource['id']}", content=dumps(resource), headers=JSON)
    assert r.status_code in (200, 201), r.text
    return r.json()


def make_person(fhir: httpx.Client) -> Person:
    """Stored by `fhir` (NHS, full access): the Patient, a Goal (plan), a Condition (health), a
    safeguarding Flag, a mental-health Observation and a RelatedPerson (carers)."""
    tag = uuid.uuid4().hex[:10]
    person = Person(patient=f"acc-{tag}", icb_code=f"Q{tag[:5].upper()}", charity_number=f"9{int(tag[:6], 16) % 10**6:06d}")
    person.icb, person.charity = f"icb-{tag}", f"charity-{tag}"
    subject = {"reference": f"Patient/{person.patient}"}
    resources = [
        {"resourceType": "Organization", "id": person.icb, "name": "Test ICB",
         "identifier": [{"system": ODS_ORGANIZATION_CODE, "value": person.icb_code}]},
        {"resourceType": "Organization", "id": person.charity, "name": "Test charity",
         "identifier": [{"system": CHARITY_NUMBER, "value": person.charity_number}]},
        {"resourceType": "Patient", "id": person.patient, "name": [{"family": "Access", "given": [tag]}]},
        {"resourceType": "Goal", "id": f"goal-{tag}", "lifecycleStatus": "active",
         "description": {"text": "Back to work"}, "subject": subject},
        {"resourceType": "Condition", "id": f"cond-{tag}", "subject": subject, "code": {"text": "Asthma"}},
        {"resourceType": "Flag", "id": f"flag-{tag}", "status": "active", "subject": subject,
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                   "code": "safety"}]}], "code": {"text": "Safeguarding concern"}},
        {"resourceType": "Observation", "id": f"obs-{tag}", "status": "final", "subject": subject,
         "category": [{"text": "Mental health assessment"}], "code": {"text": "PHQ-9"}},
        {"resourceType": "RelatedPerson", "id": f"carer-{tag}", "patient": subject, "name": [{"family": "Carer"}]},
    ]
    for resource in resources:
        _put(fhir, resource)
    person.ids = {"goal": f"Goal/goal-{tag}", "condition": f"Condition/cond-{tag}",
                  "flag": f"Flag/flag-{tag}", "observation": f"Observation/obs-{tag}",
                  "carer": f"RelatedPerson/carer-{tag}", "patient": f"Patient/{person.patient}"}
    return person


OPT_IN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]}


def permit(role: str, parts: list[str], organisation: str | None = None, kind: str = "permit") -> dict:
    # FHIR R4 requires actor.reference: a display-only Reference names the whole class.
    actor: dict = {"role": {"coding": [{"system": PARTNER, "code": role}]},
                   "reference": {"reference": f"Organization/{organisation}"} if organisation
                   else {"display": f"every {role} partner"}}
    return {"type": kind, "actor": [actor], "code": [{"coding": [{"system": PART, "code": p}]} for p in parts]}


def give_consent(fhir: httpx.Client, person: Person, provisions: list[dict], status: str = "active") -> str:
    """Store (or replace) the person's IPC record-sharing Consent, as a coordinator records it
    after talking with them (`fhir`: the `recorder` fixture; hub/consent/authority.py)."""
    person.consent = person.consent or f"consent-{person.patient}"
    _put(fhir, {
        "resourceType": "Consent", "id": person.consent, "status": status,
        "meta": {"profile": [IPC + "StructureDefinition/ipc-consent"]},
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "record-sharing"}]}],
        "patient": {"reference": f"Patient/{person.patient}"}, "dateTime": "2026-01-15T10:00:00Z",
        "policyRule": OPT_IN,                 # FHIR: a Consent names its policy (invariant ppc-1)
        "verification": [verified_with(person.patient)],
        "provision": {"type": "deny", "provision": provisions},
    })
    return person.consent


def verified_with(patient: str) -> dict:
    """Consent.verification: the conversation with the person a coordinator's recording rests on."""
    return {"verified": True, "verifiedWith": {"reference": f"Patient/{patient}"},
            "verificationDate": "2026-01-15T10:00:00Z"}


def lead_charity_consent(fhir: httpx.Client, person: Person, status: str = "active") -> str:
    """The lead charity may see who the person is and their plan; the ICB the plan and health."""
    return give_consent(fhir, person, [
        permit("lead-charity", ["demographics", "care-support-plan"], person.charity),
        permit("nhs", ["demographics", "care-support-plan", "health"], person.icb),
    ], status)


def ids_in(bundle: dict) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") != "outcome" and "resource" in e}
