"""The code systems of the local authority extracts and their translations to FHIR and IPC
codes, kept as ConceptMaps in `conceptmaps/` (data an informatician can review)."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from hub.fhir.conceptmap import ConceptMap
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE

_FOLDER = Path(__file__).parent / "conceptmaps"

# The CLD values as codes, one system per CLD column (CLD publishes lists, not FHIR CodeSystems).
GENDER = f"{CANONICAL_BASE}/CodeSystem/cld-gender"
DELIVERY_MECHANISM = f"{CANONICAL_BASE}/CodeSystem/cld-delivery-mechanism"
SERVICE_COMPONENT = f"{CANONICAL_BASE}/CodeSystem/cld-service-component"
SERVICE_TYPE = f"{CANONICAL_BASE}/CodeSystem/cld-service-type"
EVENT_TYPE = f"{CANONICAL_BASE}/CodeSystem/cld-event-type"
EVENT_OUTCOME = f"{CANONICAL_BASE}/CodeSystem/cld-event-outcome"
RELATIONSHIP = f"{CANONICAL_BASE}/CodeSystem/la-carer-relationship"

# Identifier systems: the council's own ids for its events (councils by ONS code: hub.fhir.councils).
EVENT_REFERENCE = f"{CANONICAL_BASE}/Id/local-authority-event-reference"

# IPC code systems (profiles/CodeSystem).
PLAN_CATEGORY = f"{CANONICAL_BASE}/CodeSystem/ipc-plan-category"
STAGE = f"{CANONICAL_BASE}/CodeSystem/ipc-stage"
BUDGET_TYPE = f"{CANONICAL_BASE}/CodeSystem/ipc-budget-type"
FUNDING_SOURCE = f"{CANONICAL_BASE}/CodeSystem/ipc-funding-source"
MANAGEMENT_OPTION = f"{CANONICAL_BASE}/CodeSystem/ipc-management-option"
AGREEMENT_ROLE = f"{CANONICAL_BASE}/CodeSystem/ipc-agreement-role"
CARER_TYPE = f"{CANONICAL_BASE}/CodeSystem/ipc-carer-type"
UKCORE_RELATIONSHIP = "https://fhir.hl7.org.uk/CodeSystem/UKCore-AdditionalPersonRelationshipRole"


@cache
def concept_map(name: str) -> ConceptMap:
    return ConceptMap(json.loads((_FOLDER / f"{name}.json").read_text(encoding="utf-8")))


def translate(name: str, system: str, code: str, column: str) -> dict[str, Any]:
    """The first target coding of `code`; an unknown code is refused (code-invalid) naming the
    column, rather than guessed."""
    found = concept_map(name).translate(system, code)
    if not found:
        raise FhirError("code-invalid", f"LA extract: {column} {code!r} has no mapping in {name}")
    return found[0].to_fhir()


def translate_optional(name: str, system: str, code: str) -> dict[str, Any] | None:
    """For codes a map deliberately leaves without a target (kept as sent)."""
    found = concept_map(name).translate(system, code)
    return found[0].to_fhir() if found else None
