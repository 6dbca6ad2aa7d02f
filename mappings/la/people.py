"""People and carers from a council's extract → IPC Patient, and carer RelatedPerson with, for
an assessed carer, the carer's own Patient and their own plan."""
from __future__ import annotations

from datetime import date
from typing import Any

from hub.fhir.builders import coding, concept, transaction
from hub.fhir.builders import put_entry as entry
from hub.fhir.councils import council, council_patient, patient_id
from hub.fhir.identifiers import CANONICAL_BASE, LOCAL_AUTHORITY_PERSON_ID
from hub.fhir.ids import source_id
from hub.fhir.rows import read_rows
from mappings.la import codes
from mappings.la.rows import CARER_COLUMNS, PERSON_COLUMNS

CARER_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/ipc-carer"
PLAN_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/ipc-care-plan"


def map_person(payload: bytes, source: str) -> dict[str, Any]:
    """`la-cld-person`: one row of the people file → the council's Patient."""
    row = read_rows(payload, PERSON_COLUMNS)[0]
    patient = person_resource(source, row["LA_Code"], row["LA_Person_Unique_Identifier"], row)
    if row["Date_of_Death"]:
        patient["deceasedDateTime"] = row["Date_of_Death"]
    return transaction([entry(patient)])


def person_resource(source: str, la_code: str, la_person_id: str, row: dict[str, str]) -> dict[str, Any]:
    """A Patient from the person columns people and carers files share (CLD gender translated by
    the ConceptMap)."""
    return council_patient(source, la_code, la_person_id, nhs=row["NHS_Number"], given=row["Given_Name"],
                           family=row["Family_Name"], born=row["Date_of_Birth"], gender=_gender(row["Gender"]),
                           postcode=row["Postcode"])


def _gender(cld: str) -> str:
    return codes.translate("cld-gender-to-administrative-gender", codes.GENDER, cld, "Gender")["code"] if cld else ""


def human_name(row: dict[str, str]) -> dict[str, Any]:
    name: dict[str, Any] = {"use": "official", "family": row["Family_Name"]}
    if row["Given_Name"]:
        name["given"] = row["Given_Name"].split()
    return name


def _details(resource: dict[str, Any], row: dict[str, str]) -> None:
    if row["Gender"]:
        resource["gender"] = _gender(row["Gender"])
    if row["Date_of_Birth"]:
        resource["birthDate"] = row["Date_of_Birth"]
    if row["Postcode"]:
        resource["address"] = [{"use": "home", "postalCode": row["Postcode"]}]


def map_carer(payload: bytes, source: str) -> dict[str, Any]:
    """`la-cld-carer`: one row of the carers file → the carer (RelatedPerson of the person cared
    for) and, when the council assessed the carer, their own Patient and their own plan."""
    row = read_rows(payload, CARER_COLUMNS)[0]
    la_code, carer, cared_for = row["LA_Code"], row["Carer_LA_Person_Unique_Identifier"], row["Cared_For_LA_Person_Unique_Identifier"]
    related: dict[str, Any] = {
        "resourceType": "RelatedPerson", "id": source_id(source, "RelatedPerson", f"{carer}>{cared_for}"),
        "meta": {"profile": [CARER_PROFILE]},
        "identifier": [{"system": LOCAL_AUTHORITY_PERSON_ID, "value": carer, "assigner": council(la_code)}],
        "patient": {"reference": f"Patient/{patient_id(source, cared_for)}"},
        "relationship": [concept(codes.UKCORE_RELATIONSHIP, "Carer", "Carer of patient"),
                         _relationship(row["Relationship_To_Cared_For"])],
        "name": [human_name(row)],
    }
    _details(related, row)
    extensions = []
    if carer_type := _carer_type(row["Date_of_Birth"], row["Carer_Assessment_Date"]):
        extensions.append({"url": f"{CANONICAL_BASE}/StructureDefinition/carer-type",
                           "valueCodeableConcept": concept(codes.CARER_TYPE, *carer_type)})
    entries = []
    if row["Carer_Assessed"] == "Y":
        own = person_resource(source, la_code, carer, row)
        plan = carer_plan(source, own["id"], carer, row)
        extensions.append({"url": f"{CANONICAL_BASE}/StructureDefinition/carer-own-record", "extension": [
            {"url": "person", "valueReference": {"reference": f"Patient/{own['id']}"}},
            {"url": "plan", "valueReference": {"reference": f"CarePlan/{plan['id']}"}},
        ]})
        entries += [entry(own), entry(plan)]
    if extensions:
        related["extension"] = extensions
    return transaction([entry(related), *entries])


def _relationship(code: str) -> dict[str, Any]:
    codings = [coding(codes.RELATIONSHIP, code, code)]
    if target := codes.translate_optional("la-carer-relationship-to-v3-rolecode", codes.RELATIONSHIP, code):
        codings.append(target)
    return {"coding": codings, "text": code}


def _carer_type(born: str, assessed: str) -> tuple[str, str] | None:
    """Young (under 18) or young adult (18 to 24) carer at the assessment, else an adult carer;
    unknown without both dates (no guessing from today's date: replays must map the same)."""
    if not born or not assessed:
        return None
    b, a = date.fromisoformat(born), date.fromisoformat(assessed)
    age = a.year - b.year - ((a.month, a.day) < (b.month, b.day))
    if age < 18:
        return "young-carer", "Young carer"
    if age < 25:
        return "young-adult-carer", "Young adult carer"
    return "adult-carer", "Adult carer"


def carer_plan(source: str, carer_patient: str, carer: str, row: dict[str, str]) -> dict[str, Any]:
    """The carer's own care and support plan, begun by the carer's assessment: the council's
    contribution, merged by the recorder into the carer's open plan."""
    assessed = row["Carer_Assessment_Date"]
    return {
        "resourceType": "CarePlan", "id": source_id(source, "CarePlan", f"carer-plan:{carer}"),
        "meta": {"profile": [PLAN_PROFILE]},
        "extension": [{"url": f"{CANONICAL_BASE}/StructureDefinition/ipc-stage",
                       "valueCodeableConcept": concept(codes.STAGE, "conversation", "Conversation")}],
        "status": "draft", "intent": "plan",
        "category": [concept(codes.PLAN_CATEGORY, "care-support-plan", "Personalised care and support plan")],
        "title": "Carer's own care and support plan",
        "description": (f"Begun with the carer's assessment by local authority {row['LA_Code']} on {assessed}: "
                        "the carer's own needs, in their own right."),
        "subject": {"reference": f"Patient/{carer_patient}"},
        "period": {"start": assessed},
        "author": council(row["LA_Code"]),
    }
