"""MOD transition handover document → FHIR R4 transaction Bundle, pure.

One document becomes the start of the person's shared record: the Patient (service number,
NHS number, Armed Forces service) with its flags, the Service-attributable Conditions, an IPC4V
referral, the draft personalised care and support plan at the preparation stage coordinated by
the Veterans Welfare Manager, the steering group as a CareTeam, the goals of the plans already
made (each plan or assessment kept as a DocumentReference), the person's consent to share, and
the handover Task to the receiving GP practice and commissioners, due by the date a GP
registration is expected (see `hub.pipeline.handover` for how it is completed).

Every id is `source_id(source, type, key)` with keys built from the service number (a corrected
resend of the document lands on the same resources; the recorder skips unchanged content) or,
for organisations and staff, from their own codes. The document is trusted to follow the schema
the connector checked it against (`connectors/mod/schema`); a document that does not still gets
a FhirError naming what is missing, never a half-built Bundle."""
from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from hub.fhir.builders import coding, concept
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import (
    CANONICAL_BASE,
    CHARITY_NUMBER,
    MOD_SERVICE_NUMBER,
    NHS_NUMBER,
    ODS_ORGANIZATION_CODE,
    UNVERIFIED_NHS_NUMBER,
    is_issuable_nhs_number,
)
from hub.fhir.ids import source_id

CS = f"{CANONICAL_BASE}/CodeSystem"
SD = f"{CANONICAL_BASE}/StructureDefinition"
TRANSITION = f"{CS}/ipc-transition"
HANDOVER_ID = f"{CANONICAL_BASE}/Id/mod-handover"
MOD_DOCUMENT_ID = f"{CANONICAL_BASE}/Id/mod-document"
WELFARE_MANAGER_ID = f"{CANONICAL_BASE}/Id/veterans-uk-staff"
# How long after discharge a GP registration is expected when the document names no due date.
DEFAULT_DUE_DAYS = 28
FORMAL_PLAN_KINDS = frozenset({"recovery-plan", "social-care-plan", "ehc-plan", "chc-care-plan"})
PARTNER_DISPLAY = {"nhs": "NHS services", "local-authority": "Local authority", "lead-charity": "Lead charity",
                   "charity": "Other charities", "defence": "Ministry of Defence", "education": "Education provider"}
_PRIORITY = {"high-priority": "High Priority", "medium-priority": "Medium Priority", "low-priority": "Low Priority"}


def map_handover(payload: bytes, source: str) -> dict[str, Any]:
    """The envelope's handover document → its transaction Bundle, ids keyed by `source`."""
    try:
        document = json.loads(payload)
        return Handover(document, source).bundle()
    except (ValueError, UnicodeDecodeError):
        raise FhirError("structure", "MOD handover: the payload is not UTF-8 JSON") from None
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise FhirError("required", f"MOD handover: the document lacks or misshapes {exc}") from None


def ref(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def human_name(name: dict[str, Any], use: str) -> dict[str, Any]:
    out: dict[str, Any] = {"use": use, "family": name["family"], "given": list(name["given"])}
    if name.get("prefix"):
        out["prefix"] = [name["prefix"]]
    return out


def address(value: dict[str, Any], use: str) -> dict[str, Any]:
    out: dict[str, Any] = {"use": use, "line": list(value["lines"]), "postalCode": value["postcode"]}
    for key, field in (("city", "city"), ("district", "district")):
        if value.get(key):
            out[field] = value[key]
    return out


def telecom(contact: dict[str, Any] | None) -> list[dict[str, Any]]:
    contact = contact or {}
    found = [{"system": "phone", "value": phone} for phone in contact.get("phone") or []]
    if contact.get("email"):
        found.append({"system": "email", "value": contact["email"]})
    return found


def due_date(document: dict[str, Any]) -> str:
    """When the GP registration is due: as the document says, else DEFAULT_DUE_DAYS after discharge."""
    stated = document["destination"].get("gpRegistrationDueDate")
    if stated:
        return stated
    service = document["service"]
    discharge = date.fromisoformat(service.get("actualDischargeDate") or service["plannedDischargeDate"])
    return (discharge + timedelta(days=DEFAULT_DUE_DAYS)).isoformat()


class Handover:
    """One document being mapped: collects resources as it goes, each once, in dependency order."""

    def __init__(self, document: dict[str, Any], source: str) -> None:
        self.doc = document
        self.source = source
        self.person_key = document["person"]["serviceNumber"]
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}

    def _id(self, res_type: str, key: str) -> str:
        return source_id(self.source, res_type, key)

    def _own_id(self, res_type: str, part: str) -> str:
        """An id for a resource that belongs to this person's handover."""
        return self._id(res_type, f"service-number|{self.person_key}|{part}")

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.setdefault((resource["resourceType"], resource["id"]), resource)
        return self.resources[(resource["resourceType"], resource["id"])]

    def bundle(self) -> dict[str, Any]:
        patient = self.patient()
        conditions = [self.condition(c, patient) for c in self.doc.get("conditions") or []]
        self.add_service(patient, conditions)
        self.flags(patient)
        manager = self.welfare_manager()
        documents, goals = self.documents(patient)
        team = self.care_team(patient, manager)
        referral = self.referral(patient, conditions, documents)
        self.care_plan(patient, manager, team, goals, conditions, documents)
        self.consent(patient)
        self.handover_task(patient, referral)
        entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                   for r in self.resources.values()]
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    # --- the person ---------------------------------------------------------------------

    def patient(self) -> dict[str, Any]:
        person = self.doc["person"]
        identifiers = [{"system": MOD_SERVICE_NUMBER, "value": person["serviceNumber"]}]
        if person.get("nhsNumber"):
            number = person["nhsNumber"]
            identifiers.insert(0, {"system": NHS_NUMBER, "value": number} if is_issuable_nhs_number(number) else
                               {"system": UNVERIFIED_NHS_NUMBER, "value": number,  # a placeholder: never matched
                                "type": {"text": "NHS number that no one person holds (a placeholder)"}})
        patient: dict[str, Any] = {
            "resourceType": "Patient", "id": self._id("Patient", f"service-number|{self.person_key}"),
            "meta": {"profile": [f"{SD}/ipc-patient"]},
            "identifier": identifiers,
            "name": [human_name(person["name"], "official"),
                     *(human_name(n, "usual") for n in person.get("otherNames") or [])],
            "birthDate": person["birthDate"],
        }
        if person.get("gender"):
            patient["gender"] = person["gender"]
        if found := telecom(person.get("contact")):
            patient["telecom"] = found
        addresses = []
        destination = self.doc["destination"]
        home = address(destination["address"], "home")
        if destination.get("moveDate"):
            home["period"] = {"start": destination["moveDate"]}
        addresses.append(home)
        if (person.get("contact") or {}).get("address"):
            addresses.append(address(person["contact"]["address"], "temp"))
        patient["address"] = addresses
        return self.add(patient)

    def add_service(self, patient: dict[str, Any], conditions: list[dict[str, Any]]) -> None:
        """The Armed Forces service extension: branch, dates, Service-attributable conditions, and
        the Defence Recovery Pathway status."""
        service = self.doc["service"]
        parts: list[dict[str, Any]] = [
            {"url": "branch", "valueCodeableConcept": concept(f"{CS}/ipc-service-branch", service["branch"])}]
        if service.get("enlistedDate"):
            parts.append({"url": "enlisted", "valueDate": service["enlistedDate"]})
        if service.get("actualDischargeDate"):
            parts.append({"url": "discharged", "valueDate": service["actualDischargeDate"]})
        parts += [{"url": "serviceAttributableCondition", "valueReference": ref(c)} for c in conditions]
        parts.append({"url": "recoveryPathwayStatus", "valueCodeableConcept": concept(
            f"{CS}/ipc-recovery-pathway-status", service["recoveryPathwayStatus"])})
        patient["extension"] = [{"url": f"{SD}/armed-forces-service", "extension": parts}]

    def flags(self, patient: dict[str, Any]) -> None:
        """Service leaver in transition (from the document's issue until discharge) and, once
        discharged, Armed Forces veteran."""
        service = self.doc["service"]
        discharged = service.get("actualDischargeDate")
        leaver_period = {"start": self.doc["issued"][:10]}
        if discharged and discharged >= leaver_period["start"]:
            leaver_period["end"] = discharged
        self.add(self._flag(patient, "service-leaver", "Service leaver in transition", leaver_period))
        if discharged:
            self.add(self._flag(patient, "armed-forces-veteran", "Armed Forces veteran", {"start": discharged}))

    def _flag(self, patient: dict[str, Any], code: str, display: str, period: dict[str, str]) -> dict[str, Any]:
        return {"resourceType": "Flag", "id": self._own_id("Flag", code), "meta": {"profile": [f"{SD}/ipc-flag"]},
                "status": "active",
                "category": [concept("http://terminology.hl7.org/CodeSystem/flag-category", "admin", "Administrative")],
                "code": concept(f"{CS}/ipc-flag", code, display), "subject": ref(patient), "period": period}

    def condition(self, item: dict[str, Any], patient: dict[str, Any]) -> dict[str, Any]:
        condition: dict[str, Any] = {
            "resourceType": "Condition", "id": self._own_id("Condition", f"snomed|{item['snomedCode']}"),
            "meta": {"profile": [f"{SD}/ipc-service-condition"]},
            "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
            "category": [
                concept("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item",
                        "Problem List Item"),
                concept(TRANSITION, "service-attributable", "Service-attributable")],
            "code": {"coding": [coding("http://snomed.info/sct", item["snomedCode"], item["display"])],
                     "text": item["display"]},
            "subject": ref(patient),
        }
        if item.get("onsetDate"):
            condition["onsetDateTime"] = item["onsetDate"]
        if item.get("note"):
            condition["note"] = [{"text": item["note"]}]
        return self.add(condition)

    # --- the people and organisations around the person -----------------------------------

    def welfare_manager(self) -> dict[str, Any]:
        manager = self.doc["welfareManager"]
        practitioner: dict[str, Any] = {
            "resourceType": "Practitioner", "id": self._id("Practitioner", f"veterans-uk|{manager['id']}"),
            "identifier": [{"system": WELFARE_MANAGER_ID, "value": manager["id"]}],
            "name": [human_name(manager["name"], "official")],
            "qualification": [{"code": {"text": "Veterans Welfare Manager, Veterans UK"}}],
        }
        contact = {"phone": [manager["phone"]] if manager.get("phone") else [], "email": manager.get("email")}
        if found := telecom(contact):
            practitioner["telecom"] = found
        return self.add(practitioner)

    def organisation(self, kind: str, name: str | None, ods: str | None = None,
                     charity_number: str | None = None) -> dict[str, Any]:
        """An Organization keyed by its ODS code or charity number when it has one, else its name."""
        if ods:
            key, identifier = f"ods|{ods}", {"system": ODS_ORGANIZATION_CODE, "value": ods}
        elif charity_number:
            key, identifier = f"charity|{charity_number}", {"system": CHARITY_NUMBER, "value": charity_number}
        else:
            key, identifier = f"name|{kind}|{name}", None
        org: dict[str, Any] = {"resourceType": "Organization", "id": self._id("Organization", key),
                               "active": True, "type": [{"text": kind}]}
        if identifier:
            org["identifier"] = [identifier]
        if name:
            org["name"] = name
        return self.add(org)

    def mod(self) -> dict[str, Any]:
        return self.organisation("Defence Recovery Pathway", "Ministry of Defence, Defence Recovery Pathway")

    def gp_practice(self) -> dict[str, Any] | None:
        gp = self.doc["destination"].get("gpPractice")
        return self.organisation("Receiving GP practice", gp.get("name"), gp["odsCode"]) if gp else None

    def commissioners(self) -> list[dict[str, Any]]:
        return [self.organisation("NHS commissioner", c.get("name"), c["odsCode"])
                for c in self.doc["destination"].get("commissioners") or []]

    def local_authority(self) -> dict[str, Any] | None:
        la = self.doc["destination"].get("localAuthority")
        return self.organisation("Local authority", la["name"], la.get("odsCode")) if la else None

    def lead_charity(self) -> dict[str, Any] | None:
        charity = self.doc.get("leadCharity")
        if not charity:
            return None
        org = self.organisation("Lead charity", charity["name"], charity_number=charity["charityNumber"])
        if found := telecom(charity.get("contact")):
            org["telecom"] = found
        return org

    def care_team(self, patient: dict[str, Any], manager: dict[str, Any]) -> dict[str, Any]:
        """The steering group: the welfare manager coordinating, the lead charity, the receiving GP
        practice, commissioners and council, and the recovery units involved (with when)."""
        def member(resource: dict[str, Any], role: str, display: str, period: dict | None = None) -> dict[str, Any]:
            found = {"role": [concept(f"{CS}/ipc-care-team-role", role, display)], "member": ref(resource)}
            if period:
                found["period"] = period
            return found

        participants = [member(manager, "care-coordinator", "Care coordinator")]
        if charity := self.lead_charity():
            participants.append(member(charity, "lead-charity", "Lead charity"))
        if gp := self.gp_practice():
            participants.append(member(gp, "gp", "GP"))
        for org in [*self.commissioners(), *filter(None, [self.local_authority()])]:
            participants.append(member(org, "steering-group-member", "Steering group member"))
        service = self.doc["service"]
        for key, default in (("personnelRecoveryUnit", "Personnel Recovery Unit"),
                             ("dmrc", "Defence Medical Rehabilitation Centre")):
            involvement = service.get(key) or {}
            if involvement.get("involved"):
                unit = self.organisation(default, involvement.get("unit") or default)
                period = {k: involvement[w] for k, w in (("start", "from"), ("end", "to")) if involvement.get(w)}
                participants.append(member(unit, "steering-group-member", "Steering group member", period or None))
        return self.add({
            "resourceType": "CareTeam", "id": self._own_id("CareTeam", "steering-group"),
            "meta": {"profile": [f"{SD}/ipc-care-team"]}, "status": "active",
            "category": [concept(f"{CS}/ipc-plan-category", "care-team", "IPC care team")],
            "name": "Transition steering group", "subject": ref(patient), "participant": participants,
            "managingOrganization": [ref(self.mod())],
        })

    # --- what is already known and planned -------------------------------------------------

    def documents(self, patient: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        references, goals = [], []
        for item in self.doc.get("documents") or []:
            doc_goals = [self.goal(item, g, patient) for g in item.get("goals") or []]
            goals += doc_goals
            references.append(self.document_reference(item, patient, doc_goals))
        return references, goals

    def goal(self, document: dict[str, Any], item: dict[str, Any], patient: dict[str, Any]) -> dict[str, Any]:
        goal: dict[str, Any] = {
            "resourceType": "Goal", "id": self._own_id("Goal", f"document|{document['id']}|goal|{item['id']}"),
            "meta": {"profile": [f"{SD}/ipc-goal"]}, "lifecycleStatus": "active",
            "category": [concept(f"{CS}/ipc-life-area", item["lifeArea"])],
            "description": {"text": item["description"]}, "subject": ref(patient),
        }
        if item.get("priority"):
            goal["priority"] = concept("http://terminology.hl7.org/CodeSystem/goal-priority", item["priority"],
                                       _PRIORITY[item["priority"]])
        if item.get("startDate"):
            goal["startDate"] = item["startDate"]
        if item.get("targetDate"):
            goal["target"] = [{"dueDate": item["targetDate"]}]
        goal["note"] = [{"text": f"From {document['title']} ({document['id']}, {document['date']})"}]
        return self.add(goal)

    def document_reference(self, item: dict[str, Any], patient: dict[str, Any],
                           goals: list[dict[str, Any]]) -> dict[str, Any]:
        attachment: dict[str, Any] = {"contentType": item["contentType"], "title": item["title"],
                                      "creation": item["date"]}
        if item.get("data"):
            attachment["data"] = item["data"]
        else:
            attachment["url"] = item["url"]
        reference: dict[str, Any] = {
            "resourceType": "DocumentReference", "id": self._own_id("DocumentReference", f"document|{item['id']}"),
            "masterIdentifier": {"system": MOD_DOCUMENT_ID, "value": item["id"]},
            "status": "current",
            "type": {"text": "Assessment" if item["kind"] == "assessment" else "Plan"},
            "subject": ref(patient), "date": f"{item['date']}T00:00:00Z", "description": item["title"],
            "content": [{"attachment": attachment}],
        }
        if item["kind"] in FORMAL_PLAN_KINDS:
            reference["category"] = [concept(f"{CS}/ipc-formal-plan-type", item["kind"])]
        if item.get("author"):
            reference["author"] = [ref(self.organisation("Author of a handover document", item["author"]))]
        if goals:
            reference["context"] = {"related": [ref(g) for g in goals]}
        return self.add(reference)

    # --- what happens next -----------------------------------------------------------------

    def referral(self, patient: dict[str, Any], conditions: list[dict[str, Any]],
                 documents: list[dict[str, Any]]) -> dict[str, Any]:
        """The IPC4V referral: to the receiving commissioners (and council), from the MOD, for
        support from the planned discharge date."""
        performers = [*self.commissioners(), *filter(None, [self.local_authority()])]
        referral: dict[str, Any] = {
            "resourceType": "ServiceRequest", "id": self._own_id("ServiceRequest", "ipc4v-referral"),
            "meta": {"profile": [f"{SD}/ipc-referral"]},
            "identifier": [{"system": HANDOVER_ID, "value": self.doc["handoverId"]}],
            "status": "active", "intent": "order",
            "category": [concept(TRANSITION, "ipc4v-referral", "IPC for Veterans referral")],
            "code": {"text": "Integrated Personal Commissioning for Veterans"},
            "subject": ref(patient), "authoredOn": self.doc["issued"], "requester": ref(self.mod()),
            "occurrencePeriod": {"start": self.doc["service"]["plannedDischargeDate"]},
        }
        if performers:
            referral["performer"] = [ref(o) for o in performers]
        if conditions:
            referral["reasonReference"] = [ref(c) for c in conditions]
        if documents:
            referral["supportingInfo"] = [ref(d) for d in documents]
        return self.add(referral)

    def care_plan(self, patient: dict[str, Any], manager: dict[str, Any], team: dict[str, Any],
                  goals: list[dict[str, Any]], conditions: list[dict[str, Any]],
                  documents: list[dict[str, Any]]) -> dict[str, Any]:
        """The MOD's contribution to the person's one plan: a draft at the preparation stage
        (the recorder merges it into the open plan, if there is one)."""
        extensions: list[dict[str, Any]] = [
            {"url": f"{SD}/ipc-stage", "valueCodeableConcept": concept(f"{CS}/ipc-stage", "preparation", "Preparation")},
            {"url": f"{SD}/care-coordinator", "valueReference": ref(manager)},
        ]
        for item in self.doc.get("documents") or []:
            if item["kind"] in FORMAL_PLAN_KINDS:
                extensions.append({"url": f"{SD}/linked-plan", "extension": [
                    {"url": "type", "valueCodeableConcept": concept(f"{CS}/ipc-formal-plan-type", item["kind"])},
                    {"url": "identifier", "valueIdentifier": {"system": MOD_DOCUMENT_ID, "value": item["id"]}}]})
        given = self.doc["person"]["name"]["given"][0]
        plan: dict[str, Any] = {
            "resourceType": "CarePlan", "id": self._own_id("CarePlan", "care-support-plan"),
            "meta": {"profile": [f"{SD}/ipc-care-plan"]}, "extension": extensions,
            "status": "draft", "intent": "plan",
            "category": [concept(f"{CS}/ipc-plan-category", "care-support-plan", "Personalised care and support plan")],
            "title": f"{given}'s personalised care and support plan",
            "description": "Draft started from the MOD transition handover; the person's own words come "
                           "with the planning conversation.",
            "subject": ref(patient), "period": {"start": self.doc["issued"][:10]}, "created": self.doc["issued"][:10],
            "author": ref(manager), "careTeam": [ref(team)],
        }
        if goals:
            plan["goal"] = [ref(g) for g in goals]
        if conditions:
            plan["addresses"] = [ref(c) for c in conditions]
        if documents:
            plan["supportingInfo"] = [ref(d) for d in documents]
        return self.add(plan)

    def consent(self, patient: dict[str, Any]) -> dict[str, Any]:
        consent = self.doc["consentToShare"]
        provisions = []
        for share in consent["share"]:
            partner = share["partner"]
            provisions.append({"type": consent["decision"], "actor": [{
                "role": concept(f"{CS}/ipc-consent-partner", partner, PARTNER_DISPLAY[partner]),
                "reference": ref(self._partner_organisation(share))}],
                "code": [concept(f"{CS}/ipc-record-part", part) for part in share["parts"]]})
        return self.add({
            "resourceType": "Consent", "id": self._own_id("Consent", "record-sharing"),
            "meta": {"profile": [f"{SD}/ipc-consent"]}, "status": "active",
            "scope": concept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent"),
            "category": [concept(f"{CS}/ipc-plan-category", "record-sharing", "Record sharing agreement")],
            "patient": ref(patient), "dateTime": consent["date"],
            "policyRule": concept("http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                  *(("OPTIN", "opt-in") if consent["decision"] == "permit" else ("OPTOUT", "opt-out"))),
            "provision": {"type": "deny", "provision": provisions},
        })

    def _partner_organisation(self, share: dict[str, Any]) -> dict[str, Any]:
        """The organisation a consent provision names: the one given, else the one the document
        names for that partner, else the partner class itself as an organisation."""
        partner = share["partner"]
        if share.get("organisation"):
            org = share["organisation"]
            return self.organisation(PARTNER_DISPLAY[partner], org["name"], org.get("odsCode"))
        named = {"nhs": (self.commissioners() or [None])[0] or self.gp_practice(),
                 "local-authority": self.local_authority(), "lead-charity": self.lead_charity(),
                 "defence": self.mod()}.get(partner)
        return named or self.organisation(PARTNER_DISPLAY[partner], PARTNER_DISPLAY[partner])

    def handover_task(self, patient: dict[str, Any], referral: dict[str, Any]) -> dict[str, Any]:
        """The handover to the receiving GP practice and commissioners. Its due date is both
        `restriction.period.end` (FHIR's place for it) and `executionPeriod.end`, which the
        standard `period` search parameter reaches: `Task?code=…|gp-registration-handover
        &status=requested&period=eb<today>` lists the overdue handovers."""
        due = due_date(self.doc)
        recipients = [*filter(None, [self.gp_practice()]), *self.commissioners()]
        task: dict[str, Any] = {
            "resourceType": "Task", "id": self._own_id("Task", "gp-registration-handover"),
            "meta": {"profile": [f"{SD}/ipc-handover-task"]},
            "identifier": [{"system": HANDOVER_ID, "value": self.doc["handoverId"]}],
            "status": "requested", "intent": "order", "priority": "routine",
            "code": concept(TRANSITION, "gp-registration-handover", "GP registration handover"),
            "description": "Register the service leaver with a GP practice and take over their care from "
                           "Defence Medical Services.",
            "focus": ref(referral), "for": ref(patient), "authoredOn": self.doc["issued"],
            "lastModified": self.doc["issued"], "requester": ref(self.mod()),
            "executionPeriod": {"start": self.doc["issued"][:10], "end": due},
            "restriction": {"period": {"end": due}},
        }
        if recipients:
            task["owner"] = ref(recipients[0])
            task["restriction"]["recipient"] = [ref(r) for r in recipients]
        return self.add(task)
