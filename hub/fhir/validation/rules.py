"""A StructureDefinition's differential compiled into plain checks, once: cardinality, fixed and
pattern values, required bindings to local ValueSets, slices (by pattern or extension url),
choice types, reference targets, extensions (checked against their own definitions) and FHIRPath
invariants (fhirpathpy, each expression compiled once).

A check walks the resource by element id (`Patient.identifier:nhsNumber.value`) and appends an
Issue naming the rule, the FHIRPath location and the bad value."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

from hub.fhir.errors import Issue
from hub.fhir.validation.guide import CANONICAL_BASE
from hub.fhir.validation.invariants import NATIVE
from hub.fhir.terminology import Expansion, NotExpandable, Terminology, UnknownValueSet

Node = tuple[str, Any]                        # (FHIRPath location, JSON value)
Filter = Callable[[Any], bool]
Step = tuple[str, Filter | None, bool]        # (element name, slice filter, is a choice [x])
Check = Callable[["Walk", list[Issue]], None]
_R4 = models["r4"]
_CORE = "http://hl7.org/fhir/StructureDefinition/"


class Walk:
    """One resource being checked: resolves element ids to nodes, each id once."""

    __slots__ = ("root", "_memo")

    def __init__(self, root: Node) -> None:
        self.root = root
        self._memo: dict[tuple, Any] = {(): [root]}

    def nodes(self, steps: tuple[Step, ...]) -> list[Node]:
        found = self._memo.get(steps)
        if found is None:
            name, keep, choice = steps[-1]
            if keep is None:
                found = _children(self.nodes(steps[:-1]), steps[-1])
            elif type(keep) is UrlSlice:   # an extension slice: the element's nodes grouped by url, once
                whole = steps[:-1] + ((name, None, choice),)
                groups = self._memo.get(("by-url", whole))
                if groups is None:
                    groups = {}
                    for node in self.nodes(whole):
                        if isinstance(node[1], dict):
                            groups.setdefault(node[1].get("url"), []).append(node)
                    self._memo[("by-url", whole)] = groups
                found = groups.get(keep.url, [])
            else:   # a slice by pattern: filter the element's nodes, found once for all its slices
                found = [n for n in self.nodes(steps[:-1] + ((name, None, choice),)) if keep(n[1])]
            self._memo[steps] = found
        return found


def _children(parents: list[Node], step: Step) -> list[Node]:
    name, keep, choice = step
    out: list[Node] = []
    for location, node in parents:
        if not isinstance(node, dict):
            continue
        value = _value_of(node, name, choice)
        if value is None:
            continue
        if isinstance(value, list):
            out.extend((f"{location}.{name}[{i}]", item) for i, item in enumerate(value)
                       if keep is None or keep(item))
        elif keep is None or keep(value):
            out.append((f"{location}.{name}", value))
    return out


class UrlSlice:
    """The slice of an element (extension) whose items have one url."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, item: Any) -> bool:
        return isinstance(item, dict) and item.get("url") == self.url


def _count(node: dict, step: Step) -> int:
    """How many values a node has for one step (what cardinality checks), building no locations."""
    name, keep, choice = step
    value = _value_of(node, name, choice)
    if value is None:
        return 0
    if not isinstance(value, list):
        return 1 if keep is None or keep(value) else 0
    if keep is None:
        return len(value)
    if type(keep) is UrlSlice:
        url = keep.url
        return sum(1 for item in value if isinstance(item, dict) and item.get("url") == url)
    return sum(1 for item in value if keep(item))


def _value_of(node: dict, name: str, choice: bool) -> Any:
    """The JSON value of element `name` (of `name[x]`, whichever type it takes, for a choice)."""
    if choice:
        key = _choice_key(node, name)
        return node[key] if key else None
    return node.get(name)


def _choice_key(node: dict, name: str) -> str | None:
    for key in node:
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            return key
    return None


def contains(node: Any, pattern: Any) -> bool:
    """FHIR pattern matching: every element of the pattern is present in the node (lists: each
    pattern item matches some item)."""
    if isinstance(pattern, dict):
        return isinstance(node, dict) and all(k in node and contains(node[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(node, list) and all(any(contains(n, p) for n in node) for p in pattern)
    return node == pattern


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


class CompiledProfile:
    """The checks of one StructureDefinition, runnable on a resource (or an extension)."""

    def __init__(self, sd: dict[str, Any], compiler: "Compiler") -> None:
        self.url: str = sd["url"]
        self.type: str = sd["type"]
        self.checks: list[Check] = []
        self._elements = {e["id"]: e for e in sd["differential"]["element"]}
        self._compiler = compiler
        for element in sd["differential"]["element"]:
            self._compile(element)

    def run(self, node: Any, location: str, issues: list[Issue]) -> None:
        walk = Walk((location, node))
        for check in self.checks:
            check(walk, issues)

    # --- compiling --------------------------------------------------------------------------

    def _steps(self, element_id: str) -> tuple[Step, ...]:
        parts = element_id.split(".")
        steps: list[Step] = []
        for i, part in enumerate(parts[1:], start=1):
            name, _, slice_name = part.partition(":")
            choice = name.endswith("[x]")
            name = name.removesuffix("[x]")
            keep = self._slice_filter(".".join(parts[:i + 1])) if slice_name else None
            steps.append((name, keep, choice))
        return tuple(steps)

    def _slice_filter(self, slice_id: str) -> Filter:
        element = self._elements[slice_id]
        for key, value in element.items():
            if key.startswith("pattern"):
                return lambda item, p=value: contains(item, p)
        profiles = [p for t in element.get("type", []) for p in t.get("profile", [])]
        url = profiles[0] if profiles else self._elements.get(f"{slice_id}.url", {}).get(
            "fixedUri", element["sliceName"])
        return UrlSlice(url)

    def _compile(self, element: dict[str, Any]) -> None:
        element_id = element["id"]
        if "." not in element_id:
            self._add_constraints(element, ())
            return
        steps = self._steps(element_id)
        rule = element_id
        minimum, maximum = element.get("min", 0), element.get("max", "*")
        if minimum > 0 or maximum != "*":
            self.checks.append(_cardinality(rule, steps, minimum, maximum))
        for key, value in element.items():
            if key.startswith("fixed"):
                self.checks.append(_fixed(rule, steps, value))
            elif key.startswith("pattern") and "sliceName" not in element:
                self.checks.append(_pattern(rule, steps, value))
        binding = element.get("binding", {})
        expansion = self._compiler.expansion(binding.get("valueSet", "")) \
            if binding.get("strength") == "required" else None
        if expansion is not None:
            self.checks.append(_binding(rule, steps, binding["valueSet"], expansion))
        types = element.get("type", [])
        if steps[-1][2] and types:
            self.checks.append(_choice_types(rule, steps, [t["code"] for t in types]))
        targets = [p for t in types if t["code"] == "Reference" for p in t.get("targetProfile", [])]
        if targets:
            self.checks.append(_reference_targets(rule, steps, {self._compiler.type_of(p) for p in targets}))
        for t in types:
            for profile in t.get("profile", []) if t["code"] == "Extension" else []:
                self.checks.append(_extension(steps, profile, self._compiler))
        self._add_constraints(element, steps)

    def _add_constraints(self, element: dict[str, Any], steps: tuple[Step, ...]) -> None:
        for constraint in element.get("constraint", []):
            self.checks.append(_invariant(constraint, steps))


class Compiler:
    """Compiles StructureDefinitions on first use and keeps them (extensions included)."""

    def __init__(self, structure_definitions: dict[str, dict[str, Any]], terminology: Terminology) -> None:
        self.definitions = structure_definitions
        self.terminology = terminology
        self._compiled: dict[str, CompiledProfile] = {}

    def profile(self, url: str) -> CompiledProfile | None:
        compiled = self._compiled.get(url)
        if compiled is None and url in self.definitions:
            compiled = self._compiled[url] = CompiledProfile(self.definitions[url], self)
        return compiled

    def expansion(self, url: str) -> Expansion | None:
        """The value set's codes, or None when it is not the guide's to enforce (an unknown or
        unlistable value set: UK Core's, SNOMED CT's)."""
        if not url.startswith(CANONICAL_BASE + "/"):
            return None
        try:
            return self.terminology.expansion(url)
        except (NotExpandable, UnknownValueSet):
            return None

    def type_of(self, profile_url: str) -> str:
        if profile_url in self.definitions:
            return self.definitions[profile_url]["type"]
        name = profile_url.rsplit("/", 1)[-1]
        return name.removeprefix("UKCore-").split("-")[0]


# --- the checks ---------------------------------------------------------------------------------

def _parents_and_name(steps: tuple[Step, ...]) -> tuple[tuple[Step, ...], Step]:
    return steps[:-1], steps[-1]


def _cardinality(rule: str, steps: tuple[Step, ...], minimum: int, maximum: str) -> Check:
    parent_steps, last = _parents_and_name(steps)
    limit = None if maximum == "*" else int(maximum)

    def check(walk: Walk, issues: list[Issue]) -> None:
        for location, parent in walk.nodes(parent_steps):
            if not isinstance(parent, dict):
                continue
            found = _count(parent, last)
            if minimum <= found and (limit is None or found <= limit):
                continue
            where = f"{location}.{last[0]}"
            if found < minimum:
                issues.append(Issue("required", f"{where}: {rule} needs at least {minimum}, found {found}", where))
            elif limit is not None and found > limit:
                issues.append(Issue("value", f"{where}: {rule} allows at most {limit}, found {found}", where))
    return check


def _fixed(rule: str, steps: tuple[Step, ...], value: Any) -> Check:
    def check(walk: Walk, issues: list[Issue]) -> None:
        for location, node in walk.nodes(steps):
            if node != value:
                issues.append(Issue("value", f"{location}: {rule} must be {_shown(value)}, not {_shown(node)}", location))
    return check


def _pattern(rule: str, steps: tuple[Step, ...], value: Any) -> Check:
    def check(walk: Walk, issues: list[Issue]) -> None:
        for location, node in walk.nodes(steps):
            if not contains(node, value):
                issues.append(Issue("value", f"{location}: {rule} must match {_shown(value)}, not {_shown(node)}",
                                    location))
    return check


def _binding(rule: str, steps: tuple[Step, ...], valueset: str, expansion: Expansion) -> Check:
    members = frozenset((m.system, m.code) for m in expansion.members)
    codes = frozenset(m.code for m in expansion.members)

    def check(walk: Walk, issues: list[Issue]) -> None:
        for location, node in walk.nodes(steps):
            if isinstance(node, str):
                ok, shown = node in codes, node
            elif isinstance(node, dict) and "coding" in node:
                pairs = [(c.get("system"), c.get("code")) for c in node["coding"] if isinstance(c, dict)]
                ok, shown = any(p in members for p in pairs), ", ".join(f"{s}|{c}" for s, c in pairs) or "no coding"
            elif isinstance(node, dict):
                ok, shown = (node.get("system"), node.get("code")) in members, f"{node.get('system')}|{node.get('code')}"
            else:
                continue
            if not ok:
                issues.append(Issue("code-invalid", f"{location}: {rule} must be a code from {valueset} "
                                    f"(required binding); got {_shown(shown)}", location))
    return check


def _choice_types(rule: str, steps: tuple[Step, ...], allowed: list[str]) -> Check:
    parent_steps, (name, _, _) = _parents_and_name(steps)
    suffixes = {code[0].upper() + code[1:] for code in allowed}
    shown = ", ".join(name + s for s in sorted(suffixes))

    def check(walk: Walk, issues: list[Issue]) -> None:
        for location, parent in walk.nodes(parent_steps):
            key = _choice_key(parent, name) if isinstance(parent, dict) else None
            if key and key[len(name):] not in suffixes:
                where = f"{location}.{name}"
                issues.append(Issue("value", f"{where}: {rule} must be one of {shown}, not {key}", where))
    return check


def _reference_targets(rule: str, steps: tuple[Step, ...], types: set[str]) -> Check:
    allowed = types if "Resource" not in types else None
    shown = " or ".join(sorted(types))

    def check(walk: Walk, issues: list[Issue]) -> None:
        if allowed is None:
            return
        for location, node in walk.nodes(steps):
            reference = node.get("reference") if isinstance(node, dict) else None
            if not isinstance(reference, str) or reference.startswith(("urn:", "#")):
                continue
            parts = reference.split("/_history/")[0].rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] not in allowed:
                issues.append(Issue("value", f"{location}: {rule} must refer to {shown}, not {_shown(reference)}",
                                    f"{location}.reference"))
    return check


def _extension(steps: tuple[Step, ...], profile: str, compiler: Compiler) -> Check:
    def check(walk: Walk, issues: list[Issue]) -> None:
        definition = compiler.profile(profile)
        if definition is None:
            return                                   # an external extension (UK Core): its slice is enough
        for location, node in walk.nodes(steps):
            definition.run(node, location, issues)
    return check


def fhirpath_rule(expression: str) -> Callable[[Any], list]:
    """A constraint's expression compiled once with fhirpathpy (R4 model: choice types resolve)."""
    return compile_fhirpath(expression, model=_R4)


def _as_fhirpath_result(python: Callable[[Any], bool | None]) -> Callable[[Any], list]:
    def evaluate(node: Any) -> list:
        verdict = python(node)
        return [] if verdict is None else [verdict]
    return evaluate


def _invariant(constraint: dict[str, Any], steps: tuple[Step, ...], native: bool = True) -> Check:
    key, human = constraint["key"], constraint.get("human", "")
    severity = "warning" if constraint.get("severity") == "warning" else "error"
    python = NATIVE.get(key) if native else None
    evaluate = _as_fhirpath_result(python) if python else fhirpath_rule(constraint["expression"])

    def check(walk: Walk, issues: list[Issue]) -> None:
        for location, node in walk.nodes(steps):
            try:
                result = evaluate(node)
            except Exception as exc:             # a FHIRPath failure is a failed rule, not a crash
                result = [False]
                human_ = f"{human} (could not be evaluated: {type(exc).__name__})"
            else:
                human_ = human
            if result == [False]:
                value = "" if steps == () else f"; value {_shown(node)}"
                issues.append(Issue("invariant", f"{location}: rule {key} failed: {human_}{value}", location,
                                    severity=severity))
    return check
