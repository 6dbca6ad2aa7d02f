"""A cohort definition, read from its FHIR form (profile `ipc-cohort-definition`): a definitional
Group whose characteristics each carry one declarative criterion over the record, reviewed and
versioned as data a clinician signs off — never code.

A criterion is either the hub's search syntax on one type (`application/x-fhir-query`:
`Condition?code=http://snomed.info/sct|13645005&clinical-status=active`) or FHIRPath starting
with the type (`text/fhirpath`: `Encounter.where(class.code = 'EMER')`). Each resource of that
type in a person's record that matches counts; the person has the characteristic when at least
`minimum` (default 1) do. Inclusion characteristics combine `all-of` (FHIR's own reading of
Group.characteristic) or `any-of`; a characteristic with `exclude: true` removes whoever has it.

Everything is checked when read: an unknown search parameter, a bad value, FHIRPath that does not
parse, a type the hub does not hold — each is an error naming the characteristic, so a wrong
definition never silently finds the wrong people."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy

from hub.fhir.errors import FhirError
from hub.fhir.fhirpath import Env, EvaluationError, FhirPathError, compile_expression, truth
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.resources import SUPPORTED_TYPES
from hub.search.parse import SearchRequest, parse_criteria

SD = f"{CANONICAL_BASE}/StructureDefinition/"
# The hub's FHIRPath compiler says so when a construct is beyond it (rather than wrong): only
# then is fhirpathpy, whose parser recovers from syntax errors rather than refusing them, used.
_UNSUPPORTED = re.compile(r"not supported|cannot compile|cannot invoke|takes \d")
DEFINITION_PROFILE = SD + "ipc-cohort-definition"
COHORT_PROFILE = SD + "ipc-cohort"
CRITERION = SD + "cohort-criterion"
COMBINATION = SD + "cohort-combination"
REVIEW = SD + "cohort-review"
OFFER_OWNER = SD + "cohort-offer-owner"
DEFINED_BY = SD + "cohort-definition"
MEMBERSHIP = SD + "cohort-membership"
QUERY = "application/x-fhir-query"
FHIRPATH = "text/fhirpath"


@dataclass(slots=True)
class Criterion:
    name: str  # the characteristic's words, as the clinician wrote them
    res_type: str
    language: str  # QUERY or FHIRPATH
    expression: str
    minimum: int = 1
    exclude: bool = False
    search: SearchRequest | None = None  # QUERY: parsed
    matches: Callable[[dict[str, Any]], bool] | None = None  # FHIRPATH: compiled


@dataclass(slots=True)
class CohortDefinition:
    id: str
    version: int  # the stored version of the definition Group
    label: str  # the definition's own version, as reviewed
    name: str
    status: str  # draft, approved, retired
    combination: str  # all-of, any-of
    criteria: list[Criterion] = field(default_factory=list)
    offer_owner: dict[str, Any] | None = None  # a Reference

    @property
    def reference(self) -> str:
        return f"Group/{self.id}/_history/{self.version}"

    @property
    def evaluated(self) -> bool:
        return self.status == "approved"

    @property
    def inclusions(self) -> list[Criterion]:
        return [c for c in self.criteria if not c.exclude]

    @property
    def exclusions(self) -> list[Criterion]:
        return [c for c in self.criteria if c.exclude]


def is_definition(group: dict[str, Any]) -> bool:
    return DEFINITION_PROFILE in ((group.get("meta") or {}).get("profile") or ())


def _extension(element: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in element.get("extension") or () if e.get("url") == url), None)


def _part(extension: dict[str, Any] | None, name: str, key: str) -> Any:
    if extension is None:
        return None
    found = next((e for e in extension.get("extension") or () if e.get("url") == name), None)
    return found.get(key) if found else None


def read_definition(group: dict[str, Any], version: int) -> CohortDefinition:
    """The definition a stored Group holds; FhirError (422) naming what is wrong."""
    gid = group.get("id", "")
    if group.get("resourceType") != "Group" or group.get("actual") is not False:
        raise _bad(gid, "a cohort definition is a Group with actual = false")
    review = _extension(group, REVIEW)
    status = _part(review, "status", "valueCode") or "draft"
    if group.get("active") is False:
        status = "retired"
    combination = (_extension(group, COMBINATION) or {}).get("valueCode", "all-of")
    if combination not in ("all-of", "any-of"):
        raise _bad(gid, f"combination '{combination}' is neither all-of nor any-of")
    definition = CohortDefinition(
        id=gid, version=version, label=str(_part(review, "version", "valueString") or version),
        name=group.get("name") or gid, status=status, combination=combination,
        offer_owner=(_extension(group, OFFER_OWNER) or {}).get("valueReference"))
    for n, characteristic in enumerate(group.get("characteristic") or []):
        definition.criteria.append(_criterion(gid, n, characteristic))
    if not definition.inclusions:
        raise _bad(gid, "a cohort definition needs at least one characteristic that is not an exclusion")
    return definition


def _criterion(gid: str, n: int, characteristic: dict[str, Any]) -> Criterion:
    code = characteristic.get("code") or {}
    name = code.get("text") or next((c.get("display") for c in code.get("coding") or () if c.get("display")),
                                    f"characteristic {n + 1}")
    where = f"characteristic {n + 1} ('{name}')"
    extension = _extension(characteristic, CRITERION)
    expression = _part(extension, "expression", "valueExpression")
    if not isinstance(expression, dict) or not isinstance(expression.get("expression"), str):
        raise _bad(gid, f"{where} has no criterion expression")
    if characteristic.get("valueBoolean") is False:
        raise _bad(gid, f"{where}: say 'exclude: true' to exclude, not a value of false")
    minimum = _part(extension, "minimum", "valuePositiveInt") or 1
    text = expression["expression"].strip()
    language = expression.get("language")
    criterion = Criterion(name, "", language or "", text, int(minimum), bool(characteristic.get("exclude")))
    try:
        if language == QUERY:
            res_type, _, query = text.partition("?")
            criterion.res_type = _known_type(res_type)
            criterion.search = parse_criteria(res_type, query, where="the criterion")
        elif language == FHIRPATH:
            res_type = text.split(".", 1)[0].split("(", 1)[0].strip()
            criterion.res_type = _known_type(res_type)
            criterion.matches = _fhirpath(text)
        else:
            raise FhirError("invalid", f"language '{language}' is neither {QUERY} nor {FHIRPATH}")
    except FhirError as exc:
        raise _bad(gid, f"{where}: {exc.issues[0].diagnostics}") from None
    return criterion


def _known_type(res_type: str) -> str:
    if res_type not in SUPPORTED_TYPES:
        raise FhirError("invalid", f"'{res_type[:60]}' is not a resource type the hub holds")
    return res_type


def _fhirpath(text: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate on one resource: true when the expression gives a non-empty result that is
    not false. The hub's compiled FHIRPath where it can; fhirpathpy for the rest (dates relative
    to today, for instance)."""
    try:
        compiled = compile_expression(text)

        def fast(resource: dict[str, Any]) -> bool:
            try:
                result = compiled([resource], Env(resource, {"resource": [resource]}))
                return bool(result) and truth(result) is not False
            except EvaluationError as exc:  # e.g. a singleton expected: fails the definition, loudly
                raise FhirError("processing", f"the FHIRPath criterion could not be evaluated ({exc})"[:200],
                                status=422) from None

        return fast
    except FhirPathError as exc:
        if not _UNSUPPORTED.search(str(exc)):  # a syntax error: refused, never guessed at
            raise FhirError("invalid", f"not FHIRPath: {str(exc)[:80]}") from None
    try:
        slow = fhirpathpy.compile(text)
    except Exception as exc:  # noqa: BLE001 - fhirpathpy raises its parser's own errors
        raise FhirError("invalid", f"not FHIRPath: {type(exc).__name__}") from None

    def fallback(resource: dict[str, Any]) -> bool:
        try:
            result = slow(resource)
        except Exception as exc:  # noqa: BLE001 - an evaluation error fails the definition, loudly
            raise FhirError("processing", f"the FHIRPath criterion could not be evaluated ({type(exc).__name__})",
                            status=422) from None
        return bool(result) and result != [False]

    return fallback


def _bad(gid: str, words: str) -> FhirError:
    return FhirError("invalid", f"cohort definition Group/{gid}: {words}", status=422)
