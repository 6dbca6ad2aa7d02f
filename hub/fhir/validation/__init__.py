"""Validation against the IPC implementation guide in `profiles/`.

Which profiles a resource is checked against:
- every profile it claims in `meta.profile`. A claimed IPC profile is checked in full; a claimed
  UK Core or FHIR core profile (the bases the guide builds on) is accepted with the structural
  check alone; any other claimed profile is refused as unknown;
- every IPC profile whose scope it falls in, claimed or not. Each profile states its scope in the
  `profile-scope` extension of its StructureDefinition: a system (and code) at a named element,
  e.g. a CarePlan with category `care-support-plan`, a RelatedPerson whose relationship is the UK
  Core `Carer`, any Patient with an NHS number.

`validate` returns the issues (errors and warnings); `check_profiles` is the step every write
takes through `hub.fhir.resources.check_structure`, after the base specification's own rules
(`core`, the R4 core definitions) and the structural check. The guide's CodeSystems and ValueSets
are a `hub.fhir.terminology.Terminology` (with the core behind it), so the profiles' required
bindings are enforced as the core's are, and $expand and $validate-code answer for both.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hub.fhir import terminology as tx
from hub.fhir.errors import Issue
from hub.fhir.validation.guide import CANONICAL_BASE, Guide, load_guide
from hub.fhir.validation.rules import CompiledProfile, Compiler

__all__ = ["CANONICAL_BASE", "check_profiles", "load_guide", "profiles_for", "terminology", "validate",
           "validator"]

SCOPE_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/profile-scope"
_BASE_PROFILE_PREFIXES = ("https://fhir.hl7.org.uk/StructureDefinition/UKCore-",
                          "http://hl7.org/fhir/StructureDefinition/")


@dataclass(frozen=True)
class Scope:
    """A resource is in a profile's scope when a Coding or Identifier at `path` has `system`
    (and `code`, when given)."""
    path: tuple[str, ...]
    system: str
    code: str | None

    def matches(self, resource: dict[str, Any]) -> bool:
        nodes: list[Any] = [resource]
        for name in self.path:
            found: list[Any] = []
            for node in nodes:
                value = node.get(name) if isinstance(node, dict) else None
                if isinstance(value, list):
                    found.extend(value)
                elif value is not None:
                    found.append(value)
            nodes = found
        return any(isinstance(n, dict) and n.get("system") == self.system
                   and (self.code is None or n.get("code") == self.code) for n in nodes)


class Validator:
    """The guide compiled for checking: profiles by url and scopes by resource type."""

    def __init__(self, guide: Guide) -> None:
        self.guide = guide
        # The guide's own terminology, without the core behind it: its bindings name only its own
        # ValueSets, and the core's 20,000 concepts would cost every process ~35 MB for nothing.
        own = tx.Terminology([*guide.code_systems.values(), *guide.value_sets.values()])
        self.compiler = Compiler(guide.structure_definitions, own)
        self.scopes: dict[str, list[tuple[Scope, str]]] = {}
        for sd in guide.profiles():
            for scope in _scopes_of(sd):
                self.scopes.setdefault(sd["type"], []).append((scope, sd["url"]))
        for sd in guide.structure_definitions.values():   # compile everything now, not on a request
            self.compiler.profile(sd["url"])

    def profiles_in_scope(self, resource: dict[str, Any]) -> list[str]:
        return [url for scope, url in self.scopes.get(resource.get("resourceType"), ()) if scope.matches(resource)]

    def validate(self, resource: dict[str, Any], profile: str | None = None) -> list[Issue]:
        """Issues for the resource against `profile` only, or else against every profile it
        claims and every profile whose scope it is in."""
        res_type = resource.get("resourceType", "")
        issues: list[Issue] = []
        if profile is not None:
            urls = [profile]
        else:
            claimed = (resource.get("meta") or {}).get("profile") or []
            urls = [u for u in claimed if isinstance(u, str)]
            urls += [u for u in self.profiles_in_scope(resource) if u not in urls]
        for url in urls:
            compiled = self.compiler.profile(url)
            if compiled is None:
                if not _is_base_profile(url, res_type):
                    issues.append(Issue("business-rule", f"{res_type}.meta.profile: profile {url} is not known "
                                        f"to the hub (IPC profiles are under {CANONICAL_BASE})", f"{res_type}.meta.profile"))
            elif compiled.type != res_type or self.guide.structure_definitions[url]["kind"] != "resource":
                issues.append(Issue("business-rule", f"profile {url} is for {compiled.type}, not {res_type}",
                                    f"{res_type}.meta.profile"))
            else:
                _run(compiled, resource, issues)
        return issues


def _run(compiled: CompiledProfile, resource: dict[str, Any], issues: list[Issue]) -> None:
    found: list[Issue] = []
    compiled.run(resource, resource["resourceType"], found)
    name = compiled.url.rsplit("/", 1)[-1]
    for issue in found:
        issue.diagnostics = f"[{name}] {issue.diagnostics}"
    issues.extend(found)


# Profiles of other guides whose rules the hub checks in code where the resource is written:
# the Subscriptions R5 Backport's Subscription (hub.subscriptions.requests).
_CHECKED_IN_CODE = {
    ("Subscription", "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"),
}


def _is_base_profile(url: str, res_type: str) -> bool:
    """UK Core profiles and FHIR core types: the bases the guide derives from. The hub checks a
    resource claiming one against its base type (the structural check), not in full. And the
    profiles whose rules are checked in code (_CHECKED_IN_CODE)."""
    return url.startswith(_BASE_PROFILE_PREFIXES[0]) or url == _BASE_PROFILE_PREFIXES[1] + res_type \
        or (res_type, url) in _CHECKED_IN_CODE


def _scopes_of(sd: dict[str, Any]) -> list[Scope]:
    scopes = []
    for ext in sd.get("extension", []):
        if ext.get("url") == SCOPE_EXTENSION:
            parts = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}
            scopes.append(Scope(tuple(parts["element"].split(".")), parts["system"], parts.get("code")))
    return scopes


@lru_cache(maxsize=1)
def validator() -> Validator:
    """The process's validator, built once from `profiles/`."""
    return Validator(load_guide())


def validate(resource: dict[str, Any], profile: str | None = None) -> list[Issue]:
    return validator().validate(resource, profile)


def check_profiles(resource: dict[str, Any], *, profile: str | None = None, warnings: bool = False) -> list[Issue]:
    """The issues with the profiles a resource claims or is in scope of (only `profile`, when one
    is named): errors, and warnings when asked. Any error refuses a write (422)."""
    v = validator()
    if profile is None and not v.scopes.get(resource.get("resourceType")) \
            and not (resource.get("meta") or {}).get("profile"):
        return []
    issues = v.validate(resource, profile)
    return issues if warnings else [i for i in issues if i.severity == "error"]


@lru_cache(maxsize=1)
def terminology() -> tx.Terminology:
    """The guide's CodeSystems and ValueSets with the R4 core behind them, for the terminology
    operations (the core loads on the first question that needs it)."""
    guide = load_guide()
    return tx.Terminology([*guide.code_systems.values(), *guide.value_sets.values()], fallback=tx.core)


def profiles_for(res_type: str) -> list[str]:
    """The IPC profiles of one resource type (for the CapabilityStatement)."""
    return sorted(sd["url"] for sd in load_guide().profiles() if sd["type"] == res_type)
