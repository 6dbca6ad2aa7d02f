"""A cohort's members as a FHIR Group (profile `ipc-cohort`), and the offer each new member gets.
Pure functions: given who the definition finds now, the next Group and the Tasks to write.

Every member entry keeps when the person entered (`period.start`) and which criteria they met;
when they stop meeting the definition the entry is closed (`period.end`, `inactive`) with the
reason, and a later return opens a new entry, so the Group is the cohort's whole story.

The Group sits outside every person's record but says who has which conditions, so it is held in
the record part `health` (meta.tag): only partners that see health by default read it."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.cohorts.definitions import COHORT_PROFILE, DEFINED_BY, MEMBERSHIP, CohortDefinition
from hub.consent.parts import HEALTH, PART_SYSTEM
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.ids import derived_id

TASK_CODE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/task-code"
OFFER_CODE = "offer-ipc"
CONTACT_PREFERENCE = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-ContactPreference"


def cohort_id(definition_id: str) -> str:
    return f"cohort-{definition_id}"[:64]


@dataclass(slots=True)
class Change:
    group: dict[str, Any]
    entered: dict[str, list[str]] = field(default_factory=dict)  # patient → criteria met
    left: dict[str, str] = field(default_factory=dict)  # patient → why

    @property
    def any(self) -> bool:
        return bool(self.entered or self.left)


def active_members(group: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The open member entries, by patient id."""
    found: dict[str, dict[str, Any]] = {}
    for member in (group or {}).get("member") or []:
        ref = (member.get("entity") or {}).get("reference", "")
        if ref.startswith("Patient/") and not member.get("inactive") and not (member.get("period") or {}).get("end"):
            found[ref[8:]] = member
    return found


def next_group(definition: CohortDefinition, current: dict[str, Any] | None, found: dict[str, list[str]],
               excluded_by: dict[str, list[str]], scope: set[str] | None, now: datetime) -> Change:
    """The member Group after an evaluation. `found`: who meets the definition now, with the
    inclusion criteria each meets; `excluded_by`: who an exclusion removed, and which; `scope`:
    the people evaluated (None: everyone), so people outside it keep their entries as they are."""
    moment = _instant(now)
    group = dict(current) if current else _empty(definition)
    members = [dict(m) for m in group.get("member") or []]
    active = active_members({"member": members})
    change = Change(group)
    for patient_id, member in active.items():
        if (scope is not None and patient_id not in scope) or patient_id in found:
            continue
        why = (f"excluded: {'; '.join(excluded_by[patient_id])}" if patient_id in excluded_by
               else "no longer meets the definition")
        member["inactive"] = True
        member["period"] = {**member.get("period", {}), "end": moment}
        _membership(member)["extension"].append({"url": "left", "valueString": why})
        change.left[patient_id] = why
    for patient_id in sorted(found):
        if patient_id in active:
            continue
        members.append({
            "extension": [{"url": MEMBERSHIP, "extension": [
                {"url": "entered", "valueString": "meets: " + "; ".join(found[patient_id])}]}],
            "entity": {"reference": f"Patient/{patient_id}"},
            "period": {"start": moment},
            "inactive": False,
        })
        change.entered[patient_id] = found[patient_id]
    group["member"] = members
    group["quantity"] = sum(1 for m in members if not m.get("inactive"))
    group["extension"] = [{"url": DEFINED_BY, "valueReference": {"reference": definition.reference,
                                                                  "display": f"{definition.name} {definition.label}"}}]
    if not members:
        del group["member"]
    return change


def _membership(member: dict[str, Any]) -> dict[str, Any]:
    for extension in member.setdefault("extension", []):
        if extension.get("url") == MEMBERSHIP:
            extension.setdefault("extension", [])
            return extension
    found = {"url": MEMBERSHIP, "extension": []}
    member["extension"].append(found)
    return found


def _empty(definition: CohortDefinition) -> dict[str, Any]:
    return {
        "resourceType": "Group", "id": cohort_id(definition.id),
        "meta": {"profile": [COHORT_PROFILE], "tag": [{"system": PART_SYSTEM, "code": HEALTH}]},
        "active": True, "type": "person", "actual": True,
        "name": definition.name,
    }


def offer_task(definition: CohortDefinition, patient: dict[str, Any], met: list[str], now: datetime) -> dict[str, Any]:
    """The Task asking the person's care team to offer personalised care: who, why, and how to
    reach them — their preferred language and written format where the record knows them."""
    patient_id = patient["id"]
    moment = _instant(now)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": derived_id("cohort-offer", definition.id, patient_id, moment),
        "status": "requested",
        "intent": "proposal",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": OFFER_CODE,
                             "display": "Offer personalised care (IPC)"}]},
        "description": f"Offer personalised care and support planning: meets '{definition.name}'.",
        "focus": {"reference": f"Group/{cohort_id(definition.id)}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": moment,
        "lastModified": moment,
        "reasonCode": {"text": "; ".join(met)},
    }
    if definition.offer_owner:
        task["owner"] = definition.offer_owner
    inputs, words = _preferences(patient)
    if inputs:
        task["input"] = inputs
    task["note"] = [{"text": "Offer the information " + (", ".join(words) if words else
                                                          "in the usual way (no preferred language or format recorded)") + "."}]
    return task


def _preferences(patient: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    inputs: list[dict[str, Any]] = []
    words: list[str] = []
    languages = patient.get("communication") or []
    chosen = next((c for c in languages if c.get("preferred")), languages[0] if languages else None)
    if chosen and chosen.get("language"):
        inputs.append({"type": {"text": "preferred language"}, "valueCodeableConcept": chosen["language"]})
        words.append("in " + _text(chosen["language"]))
    for extension in patient.get("extension") or []:
        if extension.get("url") != CONTACT_PREFERENCE:
            continue
        for part in extension.get("extension") or []:
            value = part.get("valueCodeableConcept")
            if part.get("url") == "PreferredWrittenCommunicationFormat" and value:
                inputs.append({"type": {"text": "preferred written format"}, "valueCodeableConcept": value})
                words.append("as " + _text(value).lower())
            elif part.get("url") == "PreferredContactMethod" and value:
                inputs.append({"type": {"text": "preferred contact method"}, "valueCodeableConcept": value})
                words.append("by " + _text(value).lower())
    return inputs, words


def withdrawn_offer(task: dict[str, Any], why: str, now: datetime) -> dict[str, Any]:
    """An offer not yet made, withdrawn because the person no longer meets the definition."""
    return {**task, "status": "cancelled", "lastModified": _instant(now),
            "statusReason": {"text": f"No longer in the cohort before the offer was made ({why})."}}


def _text(concept: dict[str, Any]) -> str:
    if concept.get("text"):
        return concept["text"]
    for coding in concept.get("coding") or []:
        if coding.get("display"):
            return coding["display"]
        if coding.get("code"):
            return coding["code"]
    return "the recorded preference"


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
