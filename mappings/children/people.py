"""Children and their social care episodes → the child's IPC Patient (as a council's adult
extract would make it) and EpisodeOfCare."""
from __future__ import annotations

from typing import Any

from hub.fhir.builders import concept, transaction
from hub.fhir.builders import put_entry as entry
from hub.fhir.councils import council, council_patient, patient_id
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.ids import source_id
from hub.fhir.rows import read_rows
from mappings.children.rows import CHILD_COLUMNS, EPISODE_COLUMNS

EPISODE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/ipc-children-episode"
_SEX = {"M": "male", "F": "female", "U": "unknown"}   # SEN2 / CIN sex → FHIR administrative gender
# The displays say which part of the record an episode belongs to (hub.consent.parts reads them):
# children's social care, or safeguarding for a child protection plan.
_EPISODES = {"CIN": ("cin", "Child in need (children's social care)"), "CPP": ("cpp", "Child protection plan"),
             "CLA": ("cla", "Looked after child (children's social care)")}
_NEEDS = {"N1": "Abuse or neglect", "N2": "Child's disability or illness", "N3": "Parental disability or illness",
          "N4": "Family in acute stress", "N5": "Family dysfunction", "N6": "Socially unacceptable behaviour",
          "N7": "Low income", "N8": "Absent parenting", "N9": "Cases other than children in need"}
UPN = f"{CANONICAL_BASE}/Id/unique-pupil-number"
FLAG_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/ipc-flag"
FLAG_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/ipc-flag"
CONTINUING_CARE = "childrens-continuing-care"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
WHAT = "children's extract"


def map_child(payload: bytes, source: str) -> dict[str, Any]:
    """`children-person`: one child → their Patient, with the unique pupil number beside the
    council's id and the NHS number; a child in children's continuing care (`Continuing_Care_From`)
    also gets the Flag that makes the plan worker raise their continuing care to NHS Continuing
    Healthcare check (hub.plans.growing_up)."""
    row = read_rows(payload, CHILD_COLUMNS, WHAT)[0]
    patient = council_patient(source, row["LA_Code"], row["Child_Id"], nhs=row["NHS_Number"], given=row["Forename"],
                              family=row["Surname"], born=row["Date_of_Birth"], gender=_SEX.get(row["Sex"], ""),
                              postcode=row["Postcode"])
    if row["UPN"]:
        patient["identifier"].append({"system": UPN, "value": row["UPN"], "assigner": council(row["LA_Code"])})
    entries = [entry(patient)]
    if row["Continuing_Care_From"]:
        entries.append(entry(continuing_care_flag(source, row, patient["id"])))
    return transaction(entries)


def continuing_care_flag(source: str, row: dict[str, str], patient: str) -> dict[str, Any]:
    """The child receives children's continuing care (complex health needs), from the day given.
    An empty column later does not end it: whoever knows it ended (the ICB, the council) sets the
    Flag inactive through the API, and a re-import keeps that (hub.plans.council_owned)."""
    return {
        "resourceType": "Flag", "id": source_id(source, "Flag", f"continuing-care:{row['Child_Id']}"),
        "meta": {"profile": [FLAG_PROFILE]}, "status": "active",
        "category": [concept(FLAG_CATEGORY, "clinical", "Clinical")],
        "code": concept(FLAG_SYSTEM, CONTINUING_CARE, "Receives children's continuing care"),
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": row["Continuing_Care_From"]},
        "author": council(row["LA_Code"]),
    }


def map_episode(payload: bytes, source: str) -> dict[str, Any]:
    """`children-episode`: a child in need, child protection or looked-after episode → an
    EpisodeOfCare managed by the council, its kind and the CIN primary need as its types."""
    row = read_rows(payload, EPISODE_COLUMNS, WHAT)[0]
    kind = _EPISODES[row["Episode_Type"]]
    episode: dict[str, Any] = {
        "resourceType": "EpisodeOfCare", "id": source_id(source, "EpisodeOfCare", f"episode:{row['Episode_Id']}"),
        "identifier": [{"system": f"{CANONICAL_BASE}/Id/children-episode", "value": row["Episode_Id"],
                        "assigner": council(row["LA_Code"])}],
        "status": "finished" if row["End_Date"] else "active",
        "type": [concept(EPISODE_SYSTEM, *kind),
                 concept(EPISODE_SYSTEM, row["Primary_Need"], _NEEDS[row["Primary_Need"]])],
        "patient": {"reference": f"Patient/{patient_id(source, row['Child_Id'])}"},
        "managingOrganization": council(row["LA_Code"]),
        "period": {"start": row["Start_Date"], **({"end": row["End_Date"]} if row["End_Date"] else {})},
    }
    return transaction([entry(episode)])
