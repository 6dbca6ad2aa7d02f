"""The FHIR R4 search parameters the hub knows, one `SearchParam` per (resource type, code).

The official definitions (search-parameters-r4.json) are shared between types: a parameter
such as `clinical-patient` has forty bases and one expression `AllergyIntolerance.patient |
CarePlan.subject.where(resolve() is Patient) | ...`. The hub indexes and searches one type at a
time, so each type gets a `SearchParam` whose expression holds only its own part(s); that keeps
the per-type extractor small and stops one type's path from being walked on another's data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

# The parameter types the hub indexes and searches. `composite` and `special` are defined by
# R4 but not implemented, so they are known (a search naming one gets a specific error) but
# never advertised.
SUPPORTED_TYPES = frozenset({"number", "date", "string", "token", "reference", "quantity", "uri"})

# Resource-level parameters without a FHIRPath expression: `_text`/`_content` need full-text
# search and `_query` names a named query; none of them can be served from the index tables.
_UNSUPPORTED_CODES = frozenset({"_text", "_content", "_query", "_list", "_has", "_type", "_filter"})

# The abstract bases every resource type inherits parameters from.
_ABSTRACT_BASES = ("Resource", "DomainResource")

# R4 resource types that no definition names as a base: they have only the inherited ones.
_TYPES_WITHOUT_OWN_PARAMS = (
    "Binary", "BiologicallyDerivedProduct", "CatalogEntry", "ObservationDefinition",
    "OperationOutcome", "Parameters",
)


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter as it applies to one resource type.

    `expression` is the FHIRPath for `base` only (the other types' parts removed); it is ''
    for parameters the definitions give no expression (`_text`, `_content`, `_query`).
    `targets` lists the resource types a reference parameter may point to.
    """

    code: str
    type: str
    base: str
    expression: str
    url: str
    targets: tuple[str, ...] = ()


def is_supported(param: SearchParam) -> bool:
    """True when the hub indexes and searches `param` (what the CapabilityStatement lists)."""
    return param.type in SUPPORTED_TYPES and bool(param.expression) and param.code not in _UNSUPPORTED_CODES


def params_for(res_type: str) -> dict[str, SearchParam]:
    """Every R4 search parameter of `res_type` by code, Resource and DomainResource ones included
    (supported or not: filter with `is_supported`). Empty for a type R4 does not define."""
    return _by_type().get(res_type, {})


def supported_params(res_type: str) -> dict[str, SearchParam]:
    """The parameters of `res_type` the hub can search on, by code."""
    return {code: p for code, p in params_for(res_type).items() if is_supported(p)}


def resource_types() -> frozenset[str]:
    """Every concrete resource type named as a base by the R4 definitions."""
    return frozenset(t for t in _by_type() if t not in _ABSTRACT_BASES)


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level `|` operators (not those inside brackets or
    string literals), returning the stripped parts."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    while i < len(expression):
        ch = expression[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == "'":
                quoted = False
        elif ch == "'":
            quoted = True
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
        i += 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def leading_type(part: str) -> str | None:
    """The type name a FHIRPath part starts from (`(RiskAssessment.occurrence as dateTime)` →
    `RiskAssessment`), or None when it starts from a child name (`name | alias`) or a function."""
    text = part.lstrip("( ")
    end = 0
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    name = text[:end]
    if name and name[0].isupper() and end < len(text) and text[end] == ".":
        return name
    return None


def expression_for(expression: str, res_type: str) -> str:
    """The parts of a shared `expression` that apply to `res_type`.

    Parts starting with another type are dropped; parts starting from `Resource`,
    `DomainResource` or from no type at all (only seen in single-base definitions) are kept.
    """
    kept = []
    for part in split_union(expression):
        start = leading_type(part)
        if start is None or start == res_type or start in _ABSTRACT_BASES:
            kept.append(part)
    return " | ".join(kept)


@cache
def _by_type() -> dict[str, dict[str, SearchParam]]:
    """Load the definitions once and index them by type, abstract-base parameters copied into
    every concrete type (a concrete type's own definition wins on a code clash)."""
    by_type: dict[str, dict[str, SearchParam]] = {}
    for raw in _load_definitions():
        bases: list[str] = raw.get("base", [])
        for base in bases:
            by_type.setdefault(base, {})[raw["code"]] = _param_for_base(raw, base, bases)
    for res_type in _TYPES_WITHOUT_OWN_PARAMS:
        by_type.setdefault(res_type, {})
    inherited = {**by_type.get("Resource", {}), **by_type.get("DomainResource", {})}
    for res_type, params in by_type.items():
        if res_type in _ABSTRACT_BASES:
            continue
        for code, param in inherited.items():
            if code not in params:
                params[code] = SearchParam(code, param.type, res_type, param.expression, param.url, param.targets)
    # Keep a stable order (inherited first, then the type's own, alphabetical) for listings.
    return {
        t: dict(sorted(ps.items(), key=lambda kv: (not kv[0].startswith("_"), kv[0])))
        for t, ps in by_type.items()
    }


def _param_for_base(raw: dict[str, Any], base: str, bases: list[str]) -> SearchParam:
    expression = raw.get("expression") or ""
    if expression and len(bases) > 1:
        expression = expression_for(expression, base)
    return SearchParam(
        code=raw["code"],
        type=raw["type"],
        base=base,
        expression=expression,
        url=raw["url"],
        targets=tuple(raw.get("target") or ()),
    )


def _load_definitions() -> list[dict[str, Any]]:
    """R4's definitions, then the IPC guide's own (profiles/SearchParameter), which add codes."""
    from hub.fhir.validation.guide import load_guide  # the guide is data read once, like R4's

    text = (resources.files("hub.search") / "search-parameters-r4.json").read_text(encoding="utf-8")
    return [*json.loads(text)["parameters"], *load_guide().search_parameters.values()]
