"""What the hub accepts as a FHIR R4 resource: the supported types and the structural check
every write passes before it is stored.

Structure is checked with the fhir.resources R4B models, whose resources share R4 4.0.1's
structure (the version UK Core uses). The hub stores the JSON the client sent, not the model's
re-serialisation, so decimals, extensions and element order reach readers unchanged."""
from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from hub.fhir.errors import FhirError, Issue
from hub.fhir.validation import check_profiles

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# R4 types that fhir.resources' R4B package no longer models; the hub cannot check them.
_NOT_IN_R4B = frozenset({
    "EffectEvidenceSynthesis", "MedicinalProduct", "MedicinalProductAuthorization",
    "MedicinalProductContraindication", "MedicinalProductIndication",
    "MedicinalProductInteraction", "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect", "RiskEvidenceSynthesis", "SubstanceSpecification",
})

def _r4_resource_types() -> set[str]:
    """Every resource type R4 defines, read from the R4 search parameter definitions (each
    type is the base of at least one parameter)."""
    text = (resources.files("hub.search") / "search-parameters-r4.json").read_text()
    return {base for p in json.loads(text)["parameters"] for base in p.get("base", [])}


# Types the REST API serves: every R4 resource type the models can check, less those that are
# only meaningful inside an interaction (a stored OperationOutcome or Parameters is no record).
SUPPORTED_TYPES: frozenset[str] = frozenset(
    t for t in _r4_resource_types()
    if t not in _NOT_IN_R4B and t not in {"Resource", "DomainResource", "Parameters", "OperationOutcome"}
)


def is_supported(res_type: str) -> bool:
    return res_type in SUPPORTED_TYPES


def require_supported(res_type: str) -> None:
    if res_type not in SUPPORTED_TYPES:
        raise FhirError("not-supported", f"resource type '{res_type}' is not supported by this server",
                        status=404)


def require_valid_id(res_id: str) -> None:
    if not ID_PATTERN.match(res_id):
        raise FhirError("value", f"'{res_id[:80]}' is not a valid FHIR id "
                        "(1 to 64 letters, digits, '-' or '.')")


@cache
def _model(res_type: str):
    return get_fhir_model_class(res_type)


def check_structure(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Refuse anything that is not a structurally valid resource of the expected type.

    Then the IPC profiles (hub.fhir.validation): those the resource claims and those whose scope it
    is in; a breach is refused with 422 before anything is stored.

    Returns the resource (unchanged) so callers can chain; raises FhirError naming each problem
    with its FHIRPath location.
    """
    if not isinstance(resource, dict):
        raise FhirError("structure", "the body must be a JSON object holding one FHIR resource")
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str):
        raise FhirError("structure", "the resource has no resourceType", expression="resourceType")
    if expected_type is not None and res_type != expected_type:
        raise FhirError("invalid", f"resourceType '{res_type}' does not match the endpoint's type "
                        f"'{expected_type}'", expression="resourceType")
    require_supported(res_type)
    res_id = resource.get("id")
    if res_id is not None and (not isinstance(res_id, str) or not ID_PATTERN.match(res_id)):
        raise FhirError("value", f"'{str(res_id)[:80]}' is not a valid FHIR id", expression=f"{res_type}.id")
    try:
        _model(res_type).model_validate(resource)
    except ValidationError as exc:
        raise FhirError("structure", f"{res_type} is not valid FHIR R4",
                        issues=_issues_from(res_type, exc)) from None
    broken = list(_periods_ending_before_start(resource, res_type))
    if broken:
        raise FhirError("invariant", "a period ends before it starts (FHIR invariant per-1)",
                        issues=[Issue("invariant", f"{where}: end {end} is before start {start} "
                                      "(FHIR invariant per-1)", where) for where, start, end in broken])
    check_profiles(resource)
    return resource


def _periods_ending_before_start(node: Any, path: str):
    """Every {start, end} pair (Period, and the start/end of e.g. Appointment) whose end is
    earlier than its start: a date entered the wrong way round makes a plan look expired."""
    if isinstance(node, dict):
        start, end = node.get("start"), node.get("end")
        if isinstance(start, str) and isinstance(end, str) and _before(end, start):
            yield path, start, end
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                yield from _periods_ending_before_start(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _periods_ending_before_start(item, f"{path}[{index}]")


def _before(end: str, start: str) -> bool:
    """True only when `end` is certainly earlier than `start` (partial dates compare by the
    precision both share)."""
    try:
        return datetime.fromisoformat(end.replace("Z", "+00:00")) < datetime.fromisoformat(
            start.replace("Z", "+00:00"))
    except (ValueError, TypeError):
        shared = min(len(end), len(start), 10)
        return shared >= 4 and end[:shared] < start[:shared]


def _issues_from(res_type: str, exc: ValidationError) -> list[Issue]:
    issues = []
    for error in exc.errors(include_url=False)[:50]:
        location = _fhirpath(res_type, error.get("loc", ()))
        message = error.get("msg", "invalid").removeprefix("Value error, ")
        if "but got multiple" in message:
            message = "more than one type is given for a choice element (value[x])"
        elif error.get("type") == "extra_forbidden":
            message = "unknown element"
        elif error.get("type") == "missing":
            message = "required element is missing"
        bad = error.get("input")
        shown = f" (value {str(bad)[:60]!r})" if isinstance(bad, (str, int, float, bool)) else ""
        issues.append(Issue("structure", f"{location}: {message}{shown}", location))
    return issues


def _fhirpath(res_type: str, loc: tuple) -> str:
    path = res_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.endswith("__ext"):
            path += "._" + part[: -len("__ext")]
        else:
            path += "." + part
    return path
