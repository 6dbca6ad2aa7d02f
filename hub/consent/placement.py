"""Whose record a resource about to be written belongs to, whichever way it points at them.

Consent is applied per person and record part, so a resource about someone must land in that
person's record, or it would be readable by anyone with the type's scope. A resource can point
at a person in many ways besides a literal `subject: Patient/1`: a logical reference by NHS
number, a contained Patient, a Group member, the entries of a List or a Composition, the
resources inside a stored Bundle, a Provenance's targets. This module reads all of them from the
resource (pure: `pointers`), and decides the place once the store has said who the identifiers
name and where the entries sit (`decide`):

- exactly one person, and nothing that points at a person the hub cannot name → that person's
  record, in the resource's part (the most protected of its own and its entries' parts);
- no person at all → no one's record (an Organization, a Questionnaire): scopes alone decide;
- anything else — two people, a person named by an identifier nobody the writer may see holds,
  an absolute reference to a Patient elsewhere, a contained Patient with no identifier the hub
  matches on, entries in parts that cannot be told apart — cannot be placed, and is visible only
  to the organisation that wrote it (`owner`).

A person is found through an identifier only if the writer may see them: a writer pointing at
someone it may not see is answered exactly as one pointing at someone unknown (the data stays
its own), so no write can test whether a person is in the hub.

Which elements point at a person: the R4 Patient CompartmentDefinition's parameters per type
(`COMPARTMENT`); of those, `patient`, `subject` and `beneficiary` name the person the resource
is about (`PRIMARY`) and win over the others (an Observation about one person performed by
another is the first one's)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hub.consent.parts import CONSENT, PROTECTION, record_part, tagged_part, type_default
from hub.fhir.identifiers import (
    CHARITY_REFERENCE,
    LOCAL_AUTHORITY_PERSON_ID,
    MOD_SERVICE_NUMBER,
    NHS_NUMBER,
    UNVERIFIED_NHS_NUMBER,
    is_issuable_nhs_number,
)
from hub.fhir.references import local_reference
from hub.search.extract import IDENTIFIER_SUFFIX, IndexRows, index_rows

PRIMARY = ("patient", "subject", "beneficiary")
# The R4 (4.0.1) Patient CompartmentDefinition: for each type, the search parameters whose
# Patient references put a resource in a patient's compartment.
COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Account": ("subject",), "AdverseEvent": ("subject",),
    "AllergyIntolerance": ("patient", "recorder", "asserter"), "Appointment": ("actor",),
    "AppointmentResponse": ("actor",), "AuditEvent": ("patient",), "Basic": ("patient", "author"),
    "BodyStructure": ("patient",), "CarePlan": ("patient", "performer"),
    "CareTeam": ("patient", "participant"), "ChargeItem": ("subject",), "Claim": ("patient", "payee"),
    "ClaimResponse": ("patient",), "ClinicalImpression": ("subject",),
    "Communication": ("subject", "sender", "recipient"),
    "CommunicationRequest": ("subject", "sender", "recipient", "requester"),
    "Composition": ("subject", "author", "attester"), "Condition": ("patient", "asserter"),
    "Consent": ("patient",), "Coverage": ("policy-holder", "subscriber", "beneficiary", "payor"),
    "CoverageEligibilityRequest": ("patient",), "CoverageEligibilityResponse": ("patient",),
    "DetectedIssue": ("patient",), "DeviceRequest": ("subject", "performer"),
    "DeviceUseStatement": ("subject",), "DiagnosticReport": ("subject",),
    "DocumentManifest": ("subject", "author", "recipient"), "DocumentReference": ("subject", "author"),
    "Encounter": ("subject",), "EnrollmentRequest": ("subject",), "EpisodeOfCare": ("patient",),
    "ExplanationOfBenefit": ("patient", "payee"), "FamilyMemberHistory": ("patient",),
    "Flag": ("patient",), "Goal": ("patient",), "Group": ("member",), "ImagingStudy": ("patient",),
    "Immunization": ("patient",), "ImmunizationEvaluation": ("patient",),
    "ImmunizationRecommendation": ("patient",), "Invoice": ("subject", "patient", "recipient"),
    "List": ("subject", "source"), "MeasureReport": ("patient",), "Media": ("subject",),
    "MedicationAdministration": ("patient", "performer", "subject"),
    "MedicationDispense": ("subject", "patient", "receiver"), "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",), "MolecularSequence": ("patient",),
    "NutritionOrder": ("patient",), "Observation": ("subject", "performer"), "Patient": ("link",),
    "Person": ("patient",), "Procedure": ("patient", "performer"), "Provenance": ("patient",),
    "QuestionnaireResponse": ("subject", "author"), "RelatedPerson": ("patient",),
    "RequestGroup": ("subject", "participant"), "ResearchSubject": ("individual",),
    "RiskAssessment": ("subject",), "Schedule": ("actor",), "ServiceRequest": ("subject", "performer"),
    "Specimen": ("subject",), "SupplyDelivery": ("patient",), "SupplyRequest": ("subject",),
    "Task": ("patient", "focus"), "VisionPrescription": ("patient",),
}
# Identifiers that each name one person, which the hub can find a person by (an NHS number only
# if a person could hold it); and those that name a person the hub never matches on.
MATCHED = (NHS_NUMBER, MOD_SERVICE_NUMBER, LOCAL_AUTHORITY_PERSON_ID)
UNMATCHED = (UNVERIFIED_NHS_NUMBER, CHARITY_REFERENCE)

Key = tuple[str, str]  # (type, id)
Identifier = tuple[str, str]  # (system, value)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a resource sits: a person's record and part, no one's (both None), or apart with
    its writer's organisation (`owner`; `part` still says what it holds)."""

    patient_id: str | None
    part: str | None
    owner: str | None = None


NOWHERE = Place(None, None)


@dataclass(slots=True)
class Pointers:
    """Every way one resource (and what it carries inside) points at people and at other
    resources whose place decides its own, read from its content."""

    part: str  # its own record part
    # Whether its own part says anything: not when it only carries or lists other resources and
    # its part is merely its type's (a Provenance, List or Bundle is as private as its contents).
    own_counts: bool = True
    primary: set[str] = field(default_factory=set)  # Patient ids, literal, in the primary elements
    secondary: set[str] = field(default_factory=set)  # in the other compartment elements
    primary_ids: set[Identifier] = field(default_factory=set)  # person identifiers to resolve
    secondary_ids: set[Identifier] = field(default_factory=set)
    foreign: bool = False  # points at a person the hub cannot name (see module docstring)
    entries: set[Key] = field(default_factory=set)  # List/Composition entries, Provenance targets
    # What a Provenance used (its entities): they say whose record it is about, not which part
    # (the targets say that: an indicative budget's Provenance sits with the budget although it
    # names the assessment it was worked out from).
    used: set[Key] = field(default_factory=set)
    parts: set[str] = field(default_factory=set)  # the parts of what it carries inside (a Bundle)
    self_patient: str | None = None  # a Patient is its own record

    @property
    def identifiers(self) -> set[Identifier]:
        return self.primary_ids | self.secondary_ids

    def needs_store(self) -> bool:
        """Whether deciding the place needs the store (identifiers, entries, a person's owner)."""
        return bool(self.primary or self.secondary or self.identifiers or self.entries or self.used
                    or self.self_patient)


def pointers(res_type: str, res_id: str, resource: dict[str, Any], rows: IndexRows) -> Pointers:
    """How `resource` (about to be stored as `res_type/res_id`, with its index rows) points at
    people. Pure; raises the FhirError hub.consent.parts raises for a tag that would make it
    less protected than its content."""
    found = Pointers(part=record_part(resource))
    if res_type == "Patient":
        found.self_patient = res_id
        return found
    params = COMPARTMENT.get(res_type, ())
    for param, target_type, target_id, url in rows.references:
        if param not in params or target_type != "Patient":
            continue
        if url is not None or not target_id:
            found.foreign = True  # a Patient on another server, or one the hub cannot read
        elif param in PRIMARY:
            found.primary.add(target_id)
        else:
            found.secondary.add(target_id)
    for param, system, code, _ in rows.tokens:
        if not param.endswith(IDENTIFIER_SUFFIX) or param[:-len(IDENTIFIER_SUFFIX)] not in params:
            continue
        _identifier(found, system, code, primary=param[:-len(IDENTIFIER_SUFFIX)] in PRIMARY)
    for contained in _contained_patients(resource):
        named = [(i.get("system"), i.get("value")) for i in contained.get("identifier") or ()
                 if isinstance(i, dict)]
        resolvable = [(s, v) for s, v in named if _resolvable(s, v)]
        if not resolvable:
            found.foreign = True
        found.primary_ids.update(resolvable)
    if res_type == "Provenance":
        for target in resource.get("target") or ():
            found.entries.update(_local(target))
        for entity in resource.get("entity") or ():
            if isinstance(entity, dict):
                found.used.update(_local(entity.get("what")))
    elif res_type in ("List", "Composition"):
        found.entries.update(_entries(resource))
    for inner in _carried(resource):
        _merge(found, pointers(inner.get("resourceType", ""), str(inner.get("id") or ""), inner,
                               index_rows(inner)))
    if (found.entries or found.used or found.parts) and found.part == type_default(res_type) and tagged_part(resource) is None:
        found.own_counts = False
    return found


def _identifier(found: Pointers, system: str | None, value: str | None, *, primary: bool) -> None:
    if system in MATCHED:
        if _resolvable(system, value):
            (found.primary_ids if primary else found.secondary_ids).add((system, value))  # type: ignore[arg-type]
        else:
            found.foreign = True
    elif system in UNMATCHED:
        found.foreign = True


def _resolvable(system: Any, value: Any) -> bool:
    if system not in MATCHED or not isinstance(value, str) or not value:
        return False
    return system != NHS_NUMBER or is_issuable_nhs_number(value.replace(" ", ""))


def _contained_patients(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for inner in resource.get("contained") or ():
        if isinstance(inner, dict) and inner.get("resourceType") == "Patient":
            yield inner


def _carried(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Whole resources carried inside this one, whose people and parts it takes on: a stored
    Bundle's entries, a Parameters' resources."""
    if resource.get("resourceType") == "Bundle":
        for entry in resource.get("entry") or ():
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"]
    elif resource.get("resourceType") == "Parameters":
        yield from _parameter_resources(resource.get("parameter") or ())


def _parameter_resources(parameters: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for parameter in parameters:
        if isinstance(parameter, dict):
            if isinstance(parameter.get("resource"), dict):
                yield parameter["resource"]
            yield from _parameter_resources(parameter.get("part") or ())


def _entries(resource: dict[str, Any]) -> Iterator[Key]:
    """The items of a List, the entries of a Composition's sections (at any depth)."""
    for entry in resource.get("entry") or ():
        if isinstance(entry, dict):
            yield from _local(entry.get("item"))
    stack = list(resource.get("section") or ())
    while stack:
        section = stack.pop()
        if isinstance(section, dict):
            for ref in section.get("entry") or ():
                yield from _local(ref)
            stack.extend(section.get("section") or ())


def _local(reference: Any) -> Iterator[Key]:
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        local = local_reference(reference["reference"])
        if local is not None:
            yield local.res_type, local.res_id


def _merge(into: Pointers, inner: Pointers) -> None:
    """A carried resource's people and parts become the carrier's."""
    into.primary |= inner.primary | ({inner.self_patient} if inner.self_patient else set())
    into.secondary |= inner.secondary
    into.primary_ids |= inner.primary_ids
    into.secondary_ids |= inner.secondary_ids
    into.foreign |= inner.foreign
    into.entries |= inner.entries
    into.used |= inner.used
    into.parts |= {inner.part} | inner.parts


def decide(found: Pointers, *, people: dict[Identifier, str | None], entry_places: dict[Key, Place],
           owners: dict[str, str | None], writer: str) -> Place:
    """The place of a resource from its pointers and what the store found: `people` maps each
    identifier to the one person the writer may see who holds it (None: nobody, or several),
    `entry_places` each entry to its place (absent: it sits in no record), `owners` each person
    to the owner of their record (None: the shared record), `writer` is the writing
    organisation (`Access.owner_key`)."""
    if found.self_patient is not None:
        return Place(found.self_patient, found.part, owners.get(found.self_patient))
    foreign = found.foreign or any(people.get(i) is None for i in found.identifiers)
    persons = found.primary | {people[i] for i in found.primary_ids if people.get(i)}
    if not persons:
        persons = found.secondary | {people[i] for i in found.secondary_ids if people.get(i)}
    parts = ({found.part} if found.own_counts else set()) | found.parts
    owned = set()
    # A person's own Patient among the entries says whose record, not which part (a Provenance
    # of a Task and of the Patient it rests on is as private as the Task).
    patient_parts = set()
    for key in found.used:
        place = entry_places.get(key)
        if place is not None and place.owner is not None:
            owned.add(place.owner)
        if place is not None and place.patient_id is not None:
            persons.add(place.patient_id)
    for key in found.entries:
        place = entry_places.get(key)
        if place is None:
            continue
        if place.owner is not None:
            owned.add(place.owner)
        if place.patient_id is not None:
            persons.add(place.patient_id)
        if place.part is not None:
            (patient_parts if key[0] == "Patient" else parts).add(place.part)
    if not persons and not foreign and not owned:
        return NOWHERE
    part = _combined(parts or patient_parts or {found.part}, own=found.part)
    owner = {owners.get(p) for p in persons}
    if foreign or len(persons) != 1 or part is None or len(owner | owned) > 1:
        return Place(None, part or found.part, writer)
    (patient_id,) = persons
    return Place(patient_id, part, next(iter(owner | owned)))


def _combined(parts: set[str], *, own: str) -> str | None:
    """The one part a resource holding these parts sits in: the most protected, when that is
    one of the protected ones; else the only one there is; else None (it cannot be placed)."""
    if own == CONSENT:
        return own if parts == {CONSENT} else None
    best = max(parts, key=lambda p: PROTECTION.get(p, 1))
    if PROTECTION.get(best, 1) > 1:
        return best
    return best if len(parts) == 1 else None
