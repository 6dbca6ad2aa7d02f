"""`_summary` and `_elements`: a resource cut down to the elements a client asked for, marked
with the SUBSETTED tag so no one takes it for the whole resource (and writes it back).

Which elements are summary ones, and which are mandatory, is read from the fhir.resources R4B
models (`summary_element_property`, `element_required`: R4's isSummary and min ≥ 1 at the top
level of each resource)."""
from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from hub.fhir.errors import FhirError

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
SUMMARY_MODES = frozenset({"true", "text", "data", "count", "false"})
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _elements_of(res_type: str) -> tuple[frozenset[str], frozenset[str], dict[str, str]]:
    """(summary element names, mandatory element names, choice name → its [x] base) of a type."""
    summary, mandatory, choices = set(), set(), {}
    for name, info in get_fhir_model_class(res_type).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            continue
        json_name = info.alias or name
        if extra.get("summary_element_property"):
            summary.add(json_name)
        if extra.get("element_required") or info.is_required():
            mandatory.add(json_name)
        if extra.get("one_of_many"):
            choices[json_name] = extra["one_of_many"]
    return frozenset(summary), frozenset(mandatory), choices


def check_summary(value: str | None) -> str | None:
    if value is not None and value not in SUMMARY_MODES:
        raise FhirError("invalid", f"'_summary={value[:40]}' must be one of {', '.join(sorted(SUMMARY_MODES))}",
                        expression="_summary")
    return value


def parse_elements(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [e.strip() for e in value.split(",") if e.strip()] or None


def is_subsetting(summary: str | None, elements: list[str] | None) -> bool:
    return bool(elements) or summary in ("true", "text", "data")


def subset(resource: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """The resource as `_summary` (true, text, data) or `_elements` asks, tagged SUBSETTED;
    unchanged for `_summary=false` or neither. Elements named in `_elements` may be given by
    their JSON name or, for a choice, its base (`deceased` for deceasedBoolean)."""
    if not is_subsetting(summary, elements):
        return resource
    res_type = resource.get("resourceType", "")
    summary_names, mandatory, choices = _elements_of(res_type)
    if summary == "data":
        kept = {k: v for k, v in resource.items() if k != "text"}
    else:
        if summary == "text":
            wanted = {"text"} | mandatory
        elif summary == "true":
            wanted = set(summary_names) | mandatory
        else:
            named = {e.split(".")[0] for e in elements or ()}
            wanted = named | mandatory
        kept = {}
        for key, value in resource.items():
            base = key[1:] if key.startswith("_") else key
            if key in _ALWAYS or base in wanted or choices.get(base) in wanted:
                kept[key] = value
    meta = dict(kept.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("code") == "SUBSETTED")]
    meta["tag"] = [*tags, SUBSETTED]
    kept["meta"] = meta
    return kept
