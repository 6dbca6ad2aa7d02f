"""A council's person as every council feed records them (the adult extract, mappings/la, and the
children's, mappings/children): the council as a logical reference by its ONS code, the Patient
id a council person id always gets, and the IPC Patient built from the person columns both
extracts carry. One place, so a child's record and the same person's adult record from the
council are the same Patient."""
from __future__ import annotations

from typing import Any

from hub.fhir.errors import FhirError
from hub.fhir.identifiers import (
    CANONICAL_BASE,
    LOCAL_AUTHORITY_PERSON_ID,
    NHS_NUMBER,
    UNVERIFIED_NHS_NUMBER,
    is_issuable_nhs_number,
    is_valid_nhs_number,
)
from hub.fhir.ids import source_id

ONS_LA_CODE = f"{CANONICAL_BASE}/Id/ons-local-authority-code"
PATIENT_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/ipc-patient"


def patient_id(source: str, la_person_id: str) -> str:
    """The id a council's person has in its own records: the same from every file and extract."""
    return source_id(source, "Patient", la_person_id)


def council(la_code: str) -> dict[str, Any]:
    """The council as a logical reference (its ONS code)."""
    return {"identifier": {"system": ONS_LA_CODE, "value": la_code}, "display": f"Local authority {la_code}"}


def nhs_number_identifier(nhs: str) -> dict[str, Any]:
    """A council's NHS number: refused if it fails Modulus 11; a placeholder no one person holds
    (0000000000, …) is kept under a system that is never matched on."""
    if not is_valid_nhs_number(nhs):
        raise FhirError("value", "LA extract: NHS_Number fails the Modulus 11 check")
    if is_issuable_nhs_number(nhs):
        return {"system": NHS_NUMBER, "value": nhs}
    return {"system": UNVERIFIED_NHS_NUMBER, "value": nhs,
            "type": {"text": "NHS number that no one person holds (a placeholder)"}}


def council_patient(source: str, la_code: str, la_person_id: str, *, nhs: str, given: str, family: str,
                    born: str, gender: str, postcode: str) -> dict[str, Any]:
    """The council's Patient: NHS number (when given), the council's person id, name, and the
    details given (`gender` already an administrative-gender code; empty strings are not known)."""
    identifiers = [nhs_number_identifier(nhs)] if nhs else []
    identifiers.append({"system": LOCAL_AUTHORITY_PERSON_ID, "value": la_person_id, "assigner": council(la_code)})
    name: dict[str, Any] = {"use": "official", "family": family}
    if given:
        name["given"] = given.split()
    patient: dict[str, Any] = {"resourceType": "Patient", "id": patient_id(source, la_person_id),
                               "meta": {"profile": [PATIENT_PROFILE]}, "identifier": identifiers, "name": [name]}
    if gender:
        patient["gender"] = gender
    if born:
        patient["birthDate"] = born
    if postcode:
        patient["address"] = [{"use": "home", "postalCode": postcode}]
    return patient
