"""What an operation is to the core: its name, its OperationDefinition, where it may be invoked,
whether it changes anything, and the function that runs it. Plus the parameter reading every
operation shares (URL parameters, a form, or a Parameters body)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hub.fhir.errors import FhirError
from hub.interactions.context import Context, FhirRequest, Outcome

Run = Callable[[Context, FhirRequest, "str | None", "str | None"], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # without the `$`
    definition: str  # canonical URL of its OperationDefinition
    levels: frozenset[str]  # "system", "type", "instance"
    run: Run  # (context, request, resource type or None, id or None) → Outcome
    # The resource types it applies to at type and instance level; None: every supported type.
    types: frozenset[str] | None = None
    # False: it changes nothing, so it answers GET as well as POST (FHIR: affectsState).
    affects_state: bool = False
    documentation: str = ""
    # Where one name has a different OperationDefinition per type ($validate-code on CodeSystem
    # and on ValueSet): (type, canonical URL) pairs that override `definition` for that type.
    definitions: tuple[tuple[str, str], ...] = ()
    # Where the types differ by level ($export: Patient at type level, Group at instance level):
    # (level, types) pairs that override `types` at that level.
    types_by_level: tuple[tuple[str, frozenset[str]], ...] = ()

    def types_at(self, level: str) -> frozenset[str] | None:
        """The resource types it applies to at `level` (None: every supported type)."""
        return dict(self.types_by_level).get(level, self.types)

    def offered(self, level: str, res_type: str | None) -> bool:
        """Whether it may be invoked at `level` on `res_type` (None at system level)."""
        if level not in self.levels:
            return False
        types = self.types_at(level)
        return res_type is None or types is None or res_type in types

    @property
    def methods(self) -> tuple[str, ...]:
        return ("POST",) if self.affects_state else ("GET", "POST")

    def capability(self, res_type: str | None = None) -> dict[str, Any]:
        """The CapabilityStatement's entry for it (on `res_type`'s entry, if given)."""
        definition = dict(self.definitions).get(res_type or "", self.definition)
        entry: dict[str, Any] = {"name": self.name, "definition": definition}
        if self.documentation:
            entry["documentation"] = self.documentation
        return entry


_VALUE_KEYS = ("valueString", "valueCode", "valueUri", "valueCanonical", "valueId", "valueInteger",
               "valueBoolean", "valueDate", "valueDateTime", "valueInstant", "valueDecimal",
               "valuePositiveInt", "valueUnsignedInt")


def parameters(request: FhirRequest) -> tuple[list[tuple[str, str]], dict[str, dict[str, Any]]]:
    """An operation's parameters: (name, value) pairs from the URL (and a POSTed form, which the
    HTTP layer adds to the query), and from a Parameters body its primitive parameters too; and
    the resources a Parameters body carries, by parameter name."""
    pairs = list(request.query)
    carried: dict[str, dict[str, Any]] = {}
    body = request.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for param in body.get("parameter") or []:
            if not isinstance(param, dict) or not isinstance(param.get("name"), str):
                raise FhirError("invalid", "each Parameters.parameter needs a name", expression="Parameters.parameter")
            if isinstance(param.get("resource"), dict):
                carried[param["name"]] = param["resource"]
                continue
            for key in _VALUE_KEYS:
                if key in param:
                    value = param[key]
                    pairs.append((param["name"], str(value).lower() if isinstance(value, bool) else str(value)))
                    break
    return pairs, carried


def first(pairs: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in pairs if k == name), None)
