"""ADT message → FHIR R4 transaction Bundle, after the HL7 v2-to-FHIR segment maps:
PID → Patient, PD1 → registered GP (Patient.generalPractitioner, Organization, Practitioner),
NK1 → RelatedPerson, PV1 → Encounter, MRG → merge (A40) or identifier change (A47).

Ids are uuid5 of (source system, resource type, source identifier), and every entry is a PUT to
that id: replaying a message writes the same resources with the same content, so it changes
nothing. A PUT (rather than a conditional create on the identifier) keeps the mapping pure and
lets the recorder, which owns identity, decide how a source's Patient links to the shared person.

Pure: bytes in, dict out; no I/O and nothing imported from the hub but `hub.fhir` (not needed
here at all: resources are plain dicts, checked by the tests with `check_structure`)."""
from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from hub.fhir import conceptmap
from hub.fhir.ids import seal
from hub.fhir.identifiers import (
    NHS_NUMBER,
    ODS_ORGANIZATION_CODE,
    UNVERIFIED_NHS_NUMBER,
    is_issuable_nhs_number,
    is_valid_nhs_number,
)
from mappings.hl7v2 import nhs
from mappings.hl7v2.datatypes import (
    LOCAL_ID_BASE,
    address,
    contact_point,
    human_name,
    identifier,
    identifier_system,
    period,
    to_date,
    to_datetime,
)
from mappings.hl7v2.er7 import Message, Repetition, Segment, component, parse

ID_NAMESPACE = uuid.UUID("6f1c5d0e-3f8e-5b8a-9a43-6a1f1f6c2b75")
DATA_QUALITY_SYSTEM = "https://ipc-hub.example.org/fhir/CodeSystem/data-quality"
FAILED_MOD11 = {"system": DATA_QUALITY_SYSTEM, "code": "nhs-number-failed-modulus-11",
                "display": "An NHS number sent by the source failed the Modulus 11 check"}
MESSAGE_TAG_SYSTEM = "https://ipc-hub.example.org/fhir/CodeSystem/hl7v2-event"
VERIFICATION_URL = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"
VERIFICATION_SYSTEM = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
VERIFICATION_DISPLAY = {
    "01": "Number present and verified", "02": "Number present but not traced",
    "03": "Trace required", "04": "Trace attempted - No match or multiple match found",
    "05": "Trace needs to be resolved - (NHS number or patient detail conflict)",
    "06": "Trace in progress", "07": "Number not present and trace not required",
    "08": "Trace postponed (baby under six weeks old)",
}
GMP_SYSTEM = "https://fhir.hl7.org.uk/Id/gmp-number"
GMC_SYSTEM = "https://fhir.hl7.org.uk/Id/gmc-number"
_CONCEPT_MAPS = Path(__file__).parent / "conceptmaps"


def translate(name: str, code: str) -> dict[str, str] | None:
    """The target coding for a v2 code through ConceptMap `name` (beside this module: data, so a
    terminology change is a reviewed data change), or None when the map has no entry: callers
    then keep the code as sent rather than guess."""
    found = conceptmap.load(_CONCEPT_MAPS / f"{name}.json", ignore_case=True).first(code)
    return found.to_fhir() if found else None


_ODS = re.compile(r"^[A-Z]\d{5}$|^[A-Z0-9]{3,5}$")
ENCOUNTER_STATUS = {"A01": "in-progress", "A02": "in-progress", "A03": "finished", "A04": "arrived",
                    "A05": "planned", "A06": "in-progress", "A07": "in-progress", "A08": None,
                    "A11": "cancelled", "A13": "in-progress", "A14": "planned", "A27": "cancelled",
                    "A38": "cancelled"}


class MappingError(ValueError):
    """A message that parses but cannot become a Bundle. `code` is from HL7 table 0357."""

    def __init__(self, message: str, code: int = 101, location: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.location = location


def resource_id(source: str, res_type: str, key: str) -> str:
    """The deterministic id of a resource from one source: same input, same id, forever, and
    keyed with the hub's secret (hub.fhir.ids.seal) so no one outside can compute it."""
    return seal(uuid.uuid5(ID_NAMESPACE, f"{source}|{res_type}|{key}"))


def source_system(msg: Message) -> str:
    """The sending system as MSH-3 (application) and MSH-4 (facility), e.g. 'PAS|RXX01'."""
    app = msg.msh.value(3) or msg.msh.value(3, 1, 2)
    facility = msg.msh.value(4) or msg.msh.value(4, 1, 2)
    return f"{app}|{facility}" if facility else app or "unknown"


def map_message(data: bytes | str | Message, *, source: str | None = None) -> dict[str, Any]:
    """Map one ADT message to a transaction Bundle (a dict). Raises Er7Error or MappingError,
    each carrying an HL7 0357 code, for input that cannot be mapped."""
    msg = data if isinstance(data, Message) else parse(data)
    if msg.message_code != "ADT":
        raise MappingError(f"message type {msg.message_code or '(none)'} is not ADT", 200, "MSH^1^9^1")
    pid = msg.first("PID")
    if pid is None:
        raise MappingError("the message has no PID segment", 100, "PID")
    src = source or source_system(msg)
    event = msg.trigger_event
    entries: list[dict[str, Any]] = []
    patient = map_patient(msg, pid, src)
    mrg = msg.first("MRG")
    if event == "A47" and mrg is not None:
        patient = _change_identifier(patient, mrg, src)
    patient_ref = f"Patient/{patient['id']}"
    gp_resources = map_registered_gp(msg.first("PD1"), src)
    if gp_resources:
        patient["generalPractitioner"] = [{"reference": f"{r['resourceType']}/{r['id']}"} for r in gp_resources]
    patient.setdefault("meta", {}).setdefault("tag", []).append(
        {"system": MESSAGE_TAG_SYSTEM, "code": f"ADT^{event}" if event else "ADT"})
    entries.append(_entry(patient))
    entries.extend(_entry(r) for r in gp_resources)
    if event == "A40" and mrg is not None:
        entries.append(_entry(map_merged_patient(mrg, patient_ref, src)))
        patient.setdefault("link", []).append(
            {"other": {"reference": entries[-1]["request"]["url"]}, "type": "replaces"})
    for nk1 in msg.all("NK1"):
        if (person := map_related_person(nk1, patient_ref, src, patient["id"])) is not None:
            entries.append(_entry(person))
    pv1 = msg.first("PV1")
    if pv1 is not None and (encounter := map_encounter(pv1, event, patient_ref, src, msg)) is not None:
        entries.append(_entry(encounter))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


# --- Patient -------------------------------------------------------------------------------

def patient_identifiers(pid: Segment) -> tuple[list[dict[str, Any]], bool]:
    """PID-2, PID-3 and PID-4 (then PID-19 and PID-20) as Identifiers; an NHS number first.
    Returns the identifiers and whether any NHS number failed Modulus 11."""
    status = pid.value(32)
    found: list[dict[str, Any]] = []
    failed = False
    for field in (2, 3, 4):
        for rep in pid.reps(field):
            ident, bad = cx_identifier(rep, status)
            failed |= bad
            if ident is not None and ident not in found:
                found.append(ident)
    if ssn := pid.value(19):
        found.append({"value": ssn, "system": "http://hl7.org/fhir/sid/us-ssn", "type": _id_type("SB")})
    if licence := pid.value(20):
        ident = {"value": licence, "type": _id_type("DL")}
        if end := to_date(pid.value(20, 1, 3)):
            ident["period"] = {"end": end}
        found.append(ident)
    found.sort(key=lambda i: i.get("system") != NHS_NUMBER)
    return found, failed


def cx_identifier(rep: Repetition, trace_status: str = "") -> tuple[dict[str, Any] | None, bool]:
    """One CX; an NHS number (by type or authority) is normalised and checked: valid ones get the
    NHS system (and the PID-32 trace status), failing ones stay local and are flagged."""
    type_code, authority = component(rep, 5), component(rep, 4)
    value = component(rep, 1)
    if not value:
        return None, False
    if nhs.is_nhs_identifier(type_code, authority):
        number = nhs.normalise(value)
        if is_issuable_nhs_number(number):
            ident: dict[str, Any] = {"system": NHS_NUMBER, "value": number}
            if trace_status in VERIFICATION_DISPLAY:
                ident["extension"] = [{"url": VERIFICATION_URL, "valueCodeableConcept": {"coding": [{
                    "system": VERIFICATION_SYSTEM, "code": trace_status,
                    "display": VERIFICATION_DISPLAY[trace_status]}]}}]
            return ident, False
        why = ("NHS number that no one person holds (a placeholder, or outside the issued ranges)"
               if is_valid_nhs_number(number) else "NHS number that failed the Modulus 11 check")
        return {"system": UNVERIFIED_NHS_NUMBER, "value": value, "type": {"text": why}}, True
    return identifier(rep), False


def _id_type(code: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]}


def patient_key(identifiers: list[dict[str, Any]]) -> str:
    """The source identifier the Patient id derives from: the first local identifier (a PAS's
    own MRN never changes owner), else the NHS number."""
    for ident in identifiers:
        system = ident.get("system", "")
        if system not in (NHS_NUMBER, UNVERIFIED_NHS_NUMBER):
            return f"{system}|{ident['value']}"
    if identifiers:
        return f"{identifiers[0].get('system', '')}|{identifiers[0]['value']}"
    raise MappingError("PID-3 holds no patient identifier", 101, "PID^1^3")


def map_patient(msg: Message, pid: Segment, src: str) -> dict[str, Any]:
    identifiers, failed = patient_identifiers(pid)
    if not any(component(rep, 1) for rep in pid.reps(3)):
        raise MappingError("PID-3 holds no patient identifier", 101, "PID^1^3")
    patient: dict[str, Any] = {"resourceType": "Patient",
                               "id": resource_id(src, "Patient", patient_key(identifiers)),
                               "identifier": identifiers}
    if failed:
        patient["meta"] = {"tag": [dict(FAILED_MOD11)]}
    names = [n for field in (5, 9) for rep in pid.reps(field) if (n := human_name(rep))]
    if names:
        patient["name"] = names
    telecoms = [t for field, use in ((13, "home"), (14, "work"), (40, None))
                for rep in pid.reps(field) if (t := contact_point(rep, use))]
    if telecoms:
        patient["telecom"] = telecoms
    if gender := translate("hl7v2-0001-to-administrative-gender", pid.value(8)):
        patient["gender"] = gender["code"]
    _birth(patient, pid.value(7))
    if deceased := to_datetime(pid.value(29)):
        patient["deceasedDateTime"] = deceased
    elif (flag := pid.value(30).strip().upper()) in ("Y", "YES", "N", "NO"):
        patient["deceasedBoolean"] = flag.startswith("Y")
    addresses = [a for rep in pid.reps(11) if (a := address(rep))]
    if addresses:
        patient["address"] = addresses
    if marital := _marital_status(pid.reps(16)):
        patient["maritalStatus"] = marital
    if language := _language(pid.reps(15)):
        patient["communication"] = [{"language": language, "preferred": True}]
    return patient


def _birth(patient: dict[str, Any], value: str) -> None:
    if not (date := to_date(value)):
        return
    patient["birthDate"] = date
    moment = to_datetime(value)
    if moment and "T" in moment:
        patient["_birthDate"] = {"extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": moment}]}


def _marital_status(reps: list[Repetition]) -> dict[str, Any] | None:
    if not reps:
        return None
    code, text = component(reps[0], 1), component(reps[0], 2)
    if found := translate("hl7v2-0002-to-marital-status", code):
        return {"coding": [found]}
    return {"coding": [{"code": code or text, "display": text or code}]}


def _language(reps: list[Repetition]) -> dict[str, Any] | None:
    """CWE language (ISO 639 in HL7 0296) with its alternate coding, as BCP 47 where known."""
    if not reps:
        return None
    rep = reps[0]
    codings = []
    for code_comp, text_comp, version_comp in ((1, 2, 7), (4, 5, 8)):
        code = component(rep, code_comp)
        if not code:
            continue
        found = translate("iso639-to-bcp47", code) or {"code": code, "display": component(rep, text_comp) or code}
        if version := component(rep, version_comp):
            found["version"] = version
        codings.append(found)
    if not codings:
        return None
    concept: dict[str, Any] = {"coding": codings}
    if text := component(rep, 9):
        concept["text"] = text
    return concept


# --- Registered GP (PD1) -------------------------------------------------------------------

def map_registered_gp(pd1: Segment | None, src: str) -> list[dict[str, Any]]:
    """PD1-3 (the GP practice, an ODS code in XON.10 or XON.3) and PD1-4 (the GP, a GMP or GMC
    code in XCN.1) as an Organization and a Practitioner."""
    if pd1 is None:
        return []
    out: list[dict[str, Any]] = []
    for rep in pd1.reps(3)[:1]:
        name, code = component(rep, 1), component(rep, 10) or component(rep, 3)
        if not (name or code):
            continue
        org: dict[str, Any] = {"resourceType": "Organization",
                               "id": resource_id(src, "Organization", code or name)}
        if code:
            system = ODS_ORGANIZATION_CODE if _ODS.match(code) else identifier_system(rep, 6) or LOCAL_ID_BASE + "organization"
            org["identifier"] = [{"system": system, "value": code}]
        if name:
            org["name"] = name
        out.append(org)
    for rep in pd1.reps(4)[:1]:
        code = component(rep, 1)
        name = human_name(rep[1:]) if len(rep) > 1 else None
        if not (code or name):
            continue
        practitioner: dict[str, Any] = {"resourceType": "Practitioner",
                                        "id": resource_id(src, "Practitioner", code or str(name))}
        if code:
            system = GMP_SYSTEM if re.fullmatch(r"G\d{7}", code) else (
                GMC_SYSTEM if re.fullmatch(r"C?\d{7}", code) else LOCAL_ID_BASE + "practitioner")
            practitioner["identifier"] = [{"system": system, "value": code}]
        if name:
            name.pop("use", None)
            name.pop("period", None)
            practitioner["name"] = [name]
        out.append(practitioner)
    return out


# --- RelatedPerson (NK1) -------------------------------------------------------------------

def map_related_person(nk1: Segment, patient_ref: str, src: str, patient_id: str) -> dict[str, Any] | None:
    """NK1 → RelatedPerson: NK1-3 relationship (carers as UK Core `Carer`), NK1-7 contact role
    (next of kin, emergency contact), names from NK1-2 and NK1-30, and so on."""
    names = [n for field in (2, 30) for rep in nk1.reps(field) if (n := human_name(rep))]
    relationships = _relationships(nk1)
    if not names and not relationships:
        return None
    set_id = nk1.value(1) or str(nk1.index)
    person: dict[str, Any] = {"resourceType": "RelatedPerson",
                              "id": resource_id(src, "RelatedPerson", f"{patient_id}|NK1|{set_id}"),
                              "patient": {"reference": patient_ref}}
    identifiers = [i for field in (12, 33) for rep in nk1.reps(field) if (i := identifier(rep))]
    if ssn := nk1.value(37):
        identifiers.append({"value": ssn, "system": "http://hl7.org/fhir/sid/us-ssn"})
    if identifiers:
        person["identifier"] = identifiers
    if relationships:
        person["relationship"] = relationships
    if names:
        person["name"] = names
    telecoms = [t for field, use in ((5, None), (6, "work"), (31, None), (40, None), (41, None))
                for rep in nk1.reps(field) if (t := contact_point(rep, use))]
    if telecoms:
        person["telecom"] = telecoms
    addresses = [a for field in (4, 32) for rep in nk1.reps(field) if (a := address(rep))]
    if addresses:
        person["address"] = addresses
    if gender := translate("hl7v2-0001-to-administrative-gender", nk1.value(15)):
        person["gender"] = gender["code"]
    if birth := to_date(nk1.value(16)):
        person["birthDate"] = birth
    if p := period(nk1.value(8), nk1.value(9)):
        person["period"] = p
    if language := _language(nk1.reps(20)):
        person["communication"] = [{"language": language}]
    return person


def _relationships(nk1: Segment) -> list[dict[str, Any]]:
    out = []
    for rep in nk1.reps(3):
        codings = []
        for code_comp, text_comp in ((1, 2), (4, 5)):
            code = component(rep, code_comp)
            if code:
                codings.append(translate("hl7v2-0063-to-ukcore-relationship", code)
                               or {"code": code, "display": component(rep, text_comp) or code})
        if codings:
            out.append({"coding": codings})
    for rep in nk1.reps(7):
        code = component(rep, 1)
        if code:
            out.append({"coding": [translate("hl7v2-0131-contact-role", code)
                                   or {"code": code, "display": component(rep, 2) or code}]})
    return out


# --- Encounter (PV1) -----------------------------------------------------------------------

# HL7 table 0007 admission type → v3 ActPriority (accident and emergency admissions are emergencies,
# a labour admission urgent, an elective one elective, routine and newborn routine).
ADMISSION_PRIORITY = {"A": ("EM", "emergency"), "E": ("EM", "emergency"), "U": ("UR", "urgent"),
                      "L": ("UR", "urgent"), "C": ("EL", "elective"), "R": ("R", "routine"), "N": ("R", "routine")}


def map_encounter(pv1: Segment, event: str, patient_ref: str, src: str, msg: Message) -> dict[str, Any] | None:
    """PV1 → Encounter, keyed by the visit number (PV1-19), else by the message control id.
    Person-level events (A28, A31, A40, A47) and class N carry no encounter."""
    patient_class = pv1.value(2).upper()
    if event in ("A28", "A29", "A31", "A40", "A47") or patient_class in ("", "N"):
        return None
    visit = pv1.value(19)
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": resource_id(src, "Encounter", f"visit|{visit}" if visit else f"message|{msg.control_id}"),
        "status": ENCOUNTER_STATUS.get(event) or ("finished" if pv1.value(45) else "in-progress"),
        "class": translate("hl7v2-0004-to-encounter-class", patient_class) or {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "subject": {"reference": patient_ref},
    }
    if visit:
        encounter["identifier"] = [{"value": visit, "system": identifier_system(pv1.reps(19)[0])
                                    or LOCAL_ID_BASE + "visit-number", "type": _id_type("VN")}]
    if p := period(pv1.value(44), pv1.value(45)):
        encounter["period"] = p
    if priority := ADMISSION_PRIORITY.get(pv1.value(4).upper()):
        # PV1-4 admission type: whether a spell was planned decides its price (hub/money/tariff.py).
        encounter["priority"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority",
                                             "code": priority[0], "display": priority[1]}]}
    location = " ".join(v for v in (pv1.value(3, 1, 1), pv1.value(3, 1, 2), pv1.value(3, 1, 3)) if v)
    if location:
        encounter["location"] = [{"location": {"display": location}}]
    return encounter


# --- MRG: merge (A40) and identifier change (A47) ------------------------------------------

def _mrg_identifiers(mrg: Segment) -> list[dict[str, Any]]:
    found = [i for rep in mrg.reps(1) if (i := cx_identifier(rep)[0])]
    if not found:
        raise MappingError("MRG-1 holds no prior patient identifier", 101, "MRG^1^1")
    return found


def map_merged_patient(mrg: Segment, surviving_ref: str, src: str) -> dict[str, Any]:
    """The non-surviving Patient of an A40: inactive, `replaced-by` the survivor. The recorder
    reads this link as the merge instruction and moves the record's references."""
    identifiers = _mrg_identifiers(mrg)
    for ident in identifiers:
        ident["use"] = "old"
    return {"resourceType": "Patient", "id": resource_id(src, "Patient", patient_key(identifiers)),
            "active": False, "identifier": identifiers,
            "link": [{"other": {"reference": surviving_ref}, "type": "replaced-by"}]}


def _change_identifier(patient: dict[str, Any], mrg: Segment, src: str) -> dict[str, Any]:
    """A47: the same Patient (id from the prior identifier, so it is the resource the source
    created before) now carries the corrected identifier; the prior one is kept as `old`."""
    prior = _mrg_identifiers(mrg)
    patient["id"] = resource_id(src, "Patient", patient_key(prior))
    current = {(i.get("system"), i["value"]) for i in patient["identifier"]}
    for ident in prior:
        if (ident.get("system"), ident["value"]) not in current:
            ident["use"] = "old"
            patient["identifier"].append(ident)
    return patient


__all__ = ["MappingError", "map_message", "resource_id", "source_system"]
