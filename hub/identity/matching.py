"""Identity resolution for records arriving from sources.

Order of evidence: a source record already linked stays linked; a valid NHS number (Modulus 11)
finds the person; then a MOD service number or another identifier with a system; otherwise the
record becomes a new person. A demographic score (names, birth date, postcode) never merges on
its own: a probable match raises a review Task for a person to decide."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.identifiers import (
    MOD_SERVICE_NUMBER,
    NEVER_MATCHED,
    NHS_NUMBER,
    is_issuable_nhs_number,
)
from hub.fhir.ids import derived_id
from hub.store import people

# Score at or above which two people are probably one (out of 1.0): a review, never a merge.
PROBABLE_MATCH = 0.8


@dataclass(slots=True)
class Resolution:
    patient_id: str
    method: str  # linked, nhs-number, identifier, new-unreviewed


def _identifiers(patient: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["system"], i["value"]) for i in patient.get("identifier") or []
            if isinstance(i, dict) and i.get("system") and i.get("value")]


def nhs_number(patient: dict[str, Any]) -> str | None:
    """The Patient's NHS number, if it carries one a person can hold (placeholders such as
    0000000000 pass Modulus 11 but name no one: never matched on)."""
    for system, value in _identifiers(patient):
        if system == NHS_NUMBER and is_issuable_nhs_number(value.replace(" ", "")):
            return value.replace(" ", "")
    return None


async def resolve(conn: AsyncConnection, source: str, patient: dict[str, Any]) -> Resolution:
    """The shared-record Patient id for a source's Patient (whose id is already the
    source-derived one), and any people a reviewer should compare it with."""
    source_patient_id = patient["id"]
    linked = await people.linked_patient(conn, source, source_patient_id)
    if linked is not None:
        return Resolution(linked, "linked")
    return await resolve_unlinked(conn, source, patient)


async def resolve_unlinked(conn: AsyncConnection, source: str, patient: dict[str, Any],
                           pending: dict[tuple[str, str], set[str]] | None = None) -> Resolution:
    """resolve() for a source Patient known to be unlinked. `pending` maps (system, value) to
    the Patients that writes not yet flushed (the recorder's batch) will give that identifier."""
    source_patient_id = patient["id"]
    await people.lock_identity(conn, [f"identifier:{s}|{v}" for s, v in _identifiers(patient)])
    resolution = await _find(conn, patient, pending or {})
    if resolution is None:
        # Scored later, by review_new_people, once every concurrent writer has committed.
        resolution = Resolution(source_patient_id, "new-unreviewed")
    await people.link_patient(conn, source, source_patient_id, resolution.patient_id, resolution.method)
    return resolution


def identifiers(patient: dict[str, Any]) -> list[tuple[str, str]]:
    """(system, value) of each identifier carrying both."""
    return _identifiers(patient)


async def _with_identifier(conn: AsyncConnection, system: str, value: str,
                           pending: dict[tuple[str, str], set[str]]) -> list[str]:
    found = await people.patients_with_identifier(conn, system, value)
    extra = pending.get((system, value))
    # A recorder batch only ever adds identifiers to a Patient, so the union is exact.
    return sorted(set(found) | extra) if extra else found


async def _find(conn: AsyncConnection, patient: dict[str, Any],
                pending: dict[tuple[str, str], set[str]]) -> Resolution | None:
    number = nhs_number(patient)
    if number is not None:
        found = await _with_identifier(conn, NHS_NUMBER, number, pending)
        if found:
            return Resolution(found[0], "nhs-number")
    ordered = sorted(_identifiers(patient), key=lambda sv: sv[0] != MOD_SERVICE_NUMBER)
    for system, value in ordered:
        if system == NHS_NUMBER or system in NEVER_MATCHED:
            continue
        found = await _with_identifier(conn, system, value, pending)
        if found:
            return Resolution(found[0], "identifier")
    return None


# Sources of people an API client created (hub.identity.duplicates.queue_review), and of the
# Patients held apart because they duplicate someone their writer may not see.
API_SOURCE = "api:"
HELD_APART_SOURCE = "held-apart:"


async def review_new_people(conn: AsyncConnection) -> list[tuple[str, str, str]]:
    """Score each new person against everyone already recorded: (source, person the review Task
    is for, the other person) for each probable match, and one for each Patient held apart.
    Runs after the batches that created them committed, so two similar people recorded at the
    same moment still see each other.

    A person a feed sent is the Task's subject. A person an API client created is not: the Task
    goes in the record of the person already there, so the client, who may not see that person,
    is never shown that someone like them exists; the same for a Patient held apart."""
    found = []
    for source, patient_id, text in await people.unreviewed_people(conn):
        patient = jsontext.loads(text)
        candidates = await probable_matches(conn, patient, patient_id)
        # A look-alike not yet scored (recorded later) raises the pair itself when its turn
        # comes: one Task a pair, in the record of whichever of them was there first.
        later = await people.still_unreviewed(conn, candidates)
        for candidate in candidates:
            if candidate in later:
                continue
            found.append((source, candidate, patient_id) if source.startswith(API_SOURCE)
                         else (source, patient_id, candidate))
        await people.mark_reviewed(conn, patient_id)
    for patient_id, existing, owner in await people.held_apart_unreviewed(conn):
        found.append((f"{HELD_APART_SOURCE}{owner}", existing, patient_id))
    return found


async def probable_matches(conn: AsyncConnection, patient: dict[str, Any], exclude: str) -> list[str]:
    birth_date = patient.get("birthDate")
    if not isinstance(birth_date, str) or len(birth_date) != 10:
        return []
    mine = nhs_number(patient)
    matches = []
    families, _ = _names(patient)
    if not families:
        return []
    for candidate_id, text in await people.candidates_for_review(conn, birth_date, sorted(families), exclude):
        candidate = jsontext.loads(text)
        theirs = nhs_number(candidate)
        if mine and theirs and mine != theirs:
            continue  # two different valid NHS numbers: two people, however alike
        if demographic_score(patient, candidate) >= PROBABLE_MATCH:
            matches.append(candidate_id)
    return sorted(matches)


def _norm(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isalnum()).lower()


def _names(patient: dict[str, Any]) -> tuple[set[str], set[str]]:
    families, givens = set(), set()
    for name in patient.get("name") or []:
        if name.get("family"):
            families.add(_norm(name["family"]))
        givens.update(_norm(g) for g in name.get("given") or [])
    return families, givens


def _postcodes(patient: dict[str, Any]) -> set[str]:
    return {_norm(a["postalCode"]) for a in patient.get("address") or [] if a.get("postalCode")}


def demographic_score(a: dict[str, Any], b: dict[str, Any]) -> float:
    """0..1: birth date 0.3, family name 0.3, a given name 0.2, postcode 0.1, gender 0.1."""
    score = 0.0
    if a.get("birthDate") and a.get("birthDate") == b.get("birthDate"):
        score += 0.3
    fa, ga = _names(a)
    fb, gb = _names(b)
    if fa & fb:
        score += 0.3
    if ga & gb:
        score += 0.2
    if _postcodes(a) & _postcodes(b):
        score += 0.1
    if a.get("gender") and a.get("gender") == b.get("gender"):
        score += 0.1
    return round(score, 6)


def review_task(patient_id: str, candidate_id: str, source: str) -> dict[str, Any]:
    """A FHIR Task asking a person to decide whether two Patients are one (never decided here)."""
    if source.startswith(HELD_APART_SOURCE):
        description = ("An organisation that may not see this person recorded someone with the same NHS number, "
                       "service number or council id; it was kept apart as that organisation's own record. "
                       "Reconcile only as the person's consent allows.")
        raised = f"Raised by the hub for a record held apart for {source[len(HELD_APART_SOURCE):]}."
    else:
        description = "Demographics suggest these records may be one person. Merge only after checking."
        raised = f"Raised by the hub for a record from {source}."
    return {
        "resourceType": "Task",
        "id": derived_id("review", *sorted((patient_id, candidate_id))),
        "status": "requested",
        "intent": "proposal",
        "priority": "routine",
        "code": {"coding": [{"system": "https://ipc-hub.example.org/fhir/CodeSystem/task-code",
                             "code": "review-possible-duplicate",
                             "display": "Review a possible duplicate person"}]},
        "description": description,
        "focus": {"reference": f"Patient/{patient_id}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "input": [{"type": {"text": "possible duplicate"},
                   "valueReference": {"reference": f"Patient/{candidate_id}"}}],
        "note": [{"text": raised}],
    }
