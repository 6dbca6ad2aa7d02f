"""What the hub accepts as a FHIR R4 resource: the supported types and the check every write
passes before it is stored (`check_structure`, and `examine` for $validate).

Structure is checked with the fhir.resources R4B models, whose resources share R4 4.0.1's
structure (the version UK Core uses). The hub stores the JSON the client sent, not the model's
re-serialisation, so decimals, extensions and element order reach readers unchanged."""
from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from hub.fhir.errors import FhirError, Issue
from hub.fhir.validation import check_profiles, core, core_rules, validator

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


def prepare() -> None:
    """Compile every rule the check uses (the R4 core and the IPC guide: about a second) now, at a
    process's start, so that no request or message waits for it and the compiled rules are in
    the heap settle_heap freezes."""
    core_rules.rules()
    validator()


def check_structure(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Refuse anything the hub must not store, before anything is stored; every write path calls
    this (REST create and update, transaction and batch entries, the recorder).

    Returns the resource (unchanged) so callers can chain; raises FhirError naming each problem
    with its FHIRPath location: 400 for what is not FHIR (syntax, structure), 422 for a rule it
    breaks (a required binding, an invariant, an IPC profile). `examine` gives the same verdict
    with warnings besides, for $validate.
    """
    issues, status = examine(resource, expected_type)
    if status is not None:
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        raise FhirError(errors[0].code, errors[0].diagnostics, status=status, issues=errors)
    return resource


def examine(resource: Any, expected_type: str | None = None, *, warnings: bool = False,
            profile: str | None = None) -> tuple[list[Issue], int | None]:
    """Every issue with a resource and the status a write of it would be refused with (None: it
    would be accepted). In order, each stage stopping the next when it finds an error:

    1. the envelope: a JSON object of a supported type with a valid id;
    2. the base specification (hub.fhir.validation.core): JSON syntax, NUL characters, nesting,
       ele-1 (400); required bindings and invariants (422, reported after the structure);
    3. the structure (fhir.resources R4B models): elements, types, cardinality, formats (400);
    4. the IPC profiles (hub.fhir.validation): those claimed and those in scope (422), or only
       `profile` when one is named ($validate's parameter).
    """
    try:
        res_type = _envelope(resource, expected_type)
    except FhirError as exc:
        return exc.issues, exc.status
    found = core.check(resource, warnings=warnings)
    errors = [i for i in found if i.severity == "error"]
    if any(_STATUS_OF.get(i.code, 400) == 400 for i in errors):
        return found, 400
    try:
        _model(res_type).model_validate(resource)
    except ValidationError as exc:
        return _issues_from(res_type, exc), 400
    except RecursionError:
        return [Issue("structure", f"{res_type}: the resource is nested too deeply", res_type)], 400
    if errors:
        return found, 422
    checked = check_profiles(resource, profile=profile, warnings=warnings)
    found += checked
    if any(i.severity == "error" for i in checked):
        return found, 422
    return found, None


_STATUS_OF = {"code-invalid": 422, "invariant": 422}


def _envelope(resource: Any, expected_type: str | None) -> str:
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
    return res_type


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
