"""AuditEvent (FHIR R4) resources rendered from stored audit records, with the standard codes:
type `rest`, subtype the RESTful interaction, action C/R/U/D/E, outcome 0/4/8/12; the client
as requesting agent (its identifier, partner class, purpose of use and network address) beside
the organisation it acts for; the hub as source; the patients and resources touched as
entities, and the query of a search."""
from __future__ import annotations

import base64
from datetime import UTC
from typing import Any

from hub.audit.record import AuditRecord
from hub.fhir.identifiers import CANONICAL_BASE, SOURCE_SYSTEM
from hub.fhir.identifiers import CLIENT_ID as CLIENT_ID_SYSTEM

PARTNER_CLASS_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/ipc-consent-partner"
HUB_ID_SYSTEM = SOURCE_SYSTEM
HUB_NAME = "ipc-hub"

_EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
               "display": "RESTful Operation"}
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_SOURCE_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                "display": "Application Server"}
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_ENTITY_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_DICOM = "http://dicom.nema.org/resources/ontology/DCM"
_SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
_OUTCOME_DESC = {0: None, 4: "refused or invalid request", 8: "server failure", 12: "no response sent"}


def audit_event(record: AuditRecord, *, site: str) -> dict[str, Any]:
    """The AuditEvent for one record. `site` is the hub's public FHIR base."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": record.id,
        "type": _EVENT_TYPE,
        "subtype": [{"system": _INTERACTION, "code": record.interaction}],
        "action": record.action,
        "recorded": _instant(record),
        "outcome": str(record.outcome),
        "agent": _agents(record),
        "source": {"site": site, "observer": {"identifier": {"system": HUB_ID_SYSTEM, "value": HUB_NAME},
                                              "display": "IPC Hub"},
                   "type": [_SOURCE_TYPE]},
    }
    description = _OUTCOME_DESC.get(record.outcome)
    if description:
        event["outcomeDesc"] = f"{description} (HTTP {record.status})" if record.status else description
    entities = _entities(record)
    if entities:
        event["entity"] = entities
    return event


def _instant(record: AuditRecord) -> str:
    return record.recorded.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _agents(record: AuditRecord) -> list[dict[str, Any]]:
    client: dict[str, Any] = {
        "type": {"coding": [{"system": _DICOM, "code": "110153", "display": "Source Role ID"}]},
        "requestor": True,
    }
    if record.client_id:
        client["who"] = {"identifier": {"system": CLIENT_ID_SYSTEM, "value": record.client_id},
                         "type": "Device", "display": f"API client {record.client_id}"}
    else:
        client["who"] = {"display": "unauthenticated caller"}
    if record.partner_class:
        client["role"] = [{"coding": [{"system": PARTNER_CLASS_SYSTEM, "code": record.partner_class}]}]
    if record.purpose_of_use:
        client["purposeOfUse"] = [{"coding": [{"system": _PURPOSE, "code": record.purpose_of_use}]}]
    if record.address:
        client["network"] = {"address": record.address, "type": "2"}  # 2: IP address
    agents = [client]
    if record.policy:
        client["policy"] = [record.policy]  # a consent change: the authority it was made on
    if record.user_ref:
        # The person the app acted for: the requestor, as the app only carried their request.
        client["requestor"] = False
        agents.insert(0, {
            "type": {"coding": [{"system": _SECURITY_ROLE, "code": "humanuser", "display": "human user"}]},
            "who": {"reference": record.user_ref, "type": record.user_ref.split("/", 1)[0]},
            "requestor": True,
        })
        if record.policy:
            agents[0]["policy"] = [record.policy]
    if record.organisation:
        organisation: dict[str, Any] = {
            "type": {"coding": [{"system": _DICOM, "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": record.organisation_system, "value": record.organisation},
                    "type": "Organization"},
            "requestor": False,
        }
        if record.partner_class:
            organisation["role"] = client["role"]
        agents.append(organisation)
    return agents


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = [
        {"what": {"reference": f"Patient/{patient}"},
         "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
         "role": {"system": _ENTITY_ROLE, "code": "1", "display": "Patient"}}
        for patient in record.patients
    ]
    patient_refs = {f"Patient/{p}" for p in record.patients}
    entities += [
        {"what": {"reference": reference},
         "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"}}
        for reference in record.entities if reference not in patient_refs
    ]
    if record.action == "E" and record.query:
        entities.append({
            "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": _ENTITY_ROLE, "code": "24", "display": "Query"},
            "description": f"{record.method} {record.path}",
            "query": base64.b64encode(record.query.encode()).decode(),
        })
    return entities
