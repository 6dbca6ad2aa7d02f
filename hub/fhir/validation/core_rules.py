"""The base R4 rules compiled once from the definitions (hub.fhir.definitions), for the walk in
hub.fhir.validation.core: every type's elements by JSON key (choice types spelled out), their
bindings with the codes each allows, and every invariant compiled (hub.fhir.fhirpath) with the
JSON keys it reads, so that the walk passes over a node holding none of them.

The hottest rules (every Reference, Extension and Period of every write) are also written in
Python (`PYTHON_RULES`), each beside the expression it stands for; tests/unit/test_fhirpath.py
proves each agrees with its expression, and every compiled invariant with fhirpathpy. An
expression the compiler does not take is evaluated by fhirpathpy."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from hub.fhir import definitions
from hub.fhir.fhirpath import Env, EvaluationError, FhirPathError, compare_values, compile_expression, parse, truth

_PRIMITIVES = frozenset({
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid",
})
_NATIVE = {"ele-1", "txt-1", "txt-2", "dom-3"}       # checked in Python by the walk (core.py, narrative.py)
# Invariants whose 4.0.1 expression was corrected in later versions of FHIR, and that HL7's
# validator checks as corrected: ref-1 from R4B/R5 also allows `#`, a contained resource's
# reference to the resource containing it (R4's own text for `#` says so; its expression missed it).
_CORRECTED = {
    "ref-1": "reference.exists() implies (reference.startsWith('#').not() or "
             "(reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids')) or "
             "(reference='#' and %rootResource!=%resource))",
    # ras-2 (a probability is at most 100): R4's expression is empty, not true, for a prediction
    # without a probability (a qualitative risk only); as HL7 later corrected it, it holds then.
    "ras-2": "probability.exists() implies (probability is decimal implies (probability as decimal) <= 100)",
}
# Format checks for required bindings whose codes come from standards the hub does not list.
_CURRENCY = re.compile(r"[A-Z]{3}")
_MIME_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(\s*;\s*[^;]+)*")
FORMATS = {"http://hl7.org/fhir/ValueSet/currencies": ("an ISO 4217 currency code", _CURRENCY),
            "http://hl7.org/fhir/ValueSet/mimetypes": ("a MIME type (BCP 13)", _MIME_TYPE)}

@dataclass(slots=True)
class Constraint:
    key: str
    severity: str
    human: str
    holds: Any                          # (node, env) -> bool: the rule held (true, not false or empty)
    skip_unless: frozenset[str] | None  # JSON keys the rule reads; None: always evaluate
    expression: str


@dataclass(slots=True)
class Binding:
    strength: str
    url: str
    codes: dict[str, frozenset[str]] | None      # system -> codes; None: cannot be listed
    all_codes: frozenset[str]

    def allows(self, system: Any, code: Any) -> bool:
        if self.codes is None:
            fmt = FORMATS.get(self.url)
            return fmt is None or (isinstance(code, str) and fmt[1].fullmatch(code) is not None)
        if system is None:
            return code in self.all_codes
        return code in self.codes.get(system, ())


class Element:
    __slots__ = ("name", "type", "kind", "is_list", "binding", "constraints", "of_primitive", "plain")

    def __init__(self, name: str, type_: str, kind: str, is_list: bool, binding: Binding | None,
                 constraints: list[Constraint], of_primitive: Element | None = None) -> None:
        self.name = name
        self.type = type_
        self.kind = kind            # primitive, complex, resource, xhtml, extras (a `_name` object)
        self.is_list = is_list
        self.binding = binding
        self.constraints = constraints
        self.of_primitive = of_primitive
        # A primitive with nothing to check but its text: the walk checks it inline (the hot path).
        self.plain = kind == "primitive" and binding is None and not constraints


class TypeDef:
    __slots__ = ("name", "elements", "constraints", "is_resource")

    def __init__(self, name: str) -> None:
        self.name = name
        self.elements: dict[str, Element] = {}
        self.constraints: list[Constraint] = []
        self.is_resource = False


class CoreRules:
    """The compiled core: every type's elements by JSON key (choice types spelled out), with
    bindings and invariants ready to run."""

    def __init__(self) -> None:
        self.raw = definitions.types()
        self.bound = definitions.bound_codes()
        self.fhir_systems = definitions.fhir_code_systems()
        self.types: dict[str, TypeDef] = {}
        for name in self.raw:
            self.type(name)

    def type(self, name: str) -> TypeDef | None:
        found = self.types.get(name)
        if found is not None or name not in self.raw:
            return found
        typedef = self.types[name] = TypeDef(name)
        chain, current = [], name
        while current is not None and current in self.raw:
            chain.append(current)
            current = self.raw[current].get("base")
        typedef.is_resource = "Resource" in chain
        elements: dict[str, dict[str, Any]] = {}
        for ancestor in reversed(chain):
            elements.update(self.raw[ancestor]["elements"])
            typedef.constraints.extend(self._constraints(self.raw[ancestor]["constraints"], ancestor))
        for element_name, spec in elements.items():
            self._add_element(typedef, element_name, spec)
        return typedef

    def _add_element(self, typedef: TypeDef, name: str, spec: dict[str, Any]) -> None:
        binding = self._binding(spec.get("binding"))
        constraints = self._constraints(spec.get("constraints", []), None)
        is_list = bool(spec.get("list"))
        variants = [(name + t[0].upper() + t[1:], t) for t in spec["type"]] if spec.get("choice") \
            else [(name, spec["type"][0])]
        for key, type_ in variants:
            kind = _kind(type_)
            element = Element(key, type_, kind, is_list, binding, constraints)
            typedef.elements[key] = element
            if kind in ("primitive", "xhtml"):
                typedef.elements["_" + key] = Element("_" + key, "Element", "extras", is_list, None, [], element)
        for constraint in constraints:
            if constraint.skip_unless is not None:
                constraint.skip_unless = None      # element-level rules run on every value

    def _binding(self, spec: list[str] | None) -> Binding | None:
        if spec is None:
            return None
        strength, url = spec
        codes = self.bound.get(url)
        all_codes = frozenset(c for by_system in (codes or {}).values() for c in by_system)
        return Binding(strength, url, codes, all_codes)

    def _constraints(self, specs: list[list[str]], type_name: str | None) -> list[Constraint]:
        out = []
        for key, severity, human, expression in specs:
            if key in _NATIVE:
                continue
            out.append(compile_constraint(key, severity, human, _CORRECTED.get(key, expression),
                                          self.raw.get(type_name or "", {})))
        return out


def _kind(type_: str) -> str:
    if type_ == "xhtml":
        return "xhtml"
    if type_ in _PRIMITIVES:
        return "primitive"
    if type_ == "Resource":
        return "resource"
    return "complex"


def compile_constraint(key: str, severity: str, human: str, expression: str,
                       typedef: dict[str, Any] | None = None) -> Constraint:
    """A constraint ready to run: the Python of PYTHON_RULES for the hottest core rules, else the
    compiled FHIRPath, else (an expression this compiler lacks) fhirpathpy."""
    try:
        evaluate = compile_expression(expression, as_validator=True)
        skip_unless = _keys_read(expression, typedef or {})
    except FhirPathError:
        evaluate = _fhirpathpy(expression)
        skip_unless = None
    if skip_unless is not None:
        try:
            if truth(evaluate([{}], Env({}, {"resource": {}, "rootResource": {}}))) is not True:
                skip_unless = None      # the rule fails on an empty node: it must always run
        except EvaluationError:
            skip_unless = None
    native = PYTHON_RULES.get(key)
    if native is not None and native[0] == expression:
        return Constraint(key, severity, human, native[1], skip_unless, expression)
    return Constraint(key, severity, human, _holds(evaluate), skip_unless, expression)


def _holds(evaluate: Any) -> Any:
    def holds(node: Any, env: Env) -> bool:
        return truth(evaluate([node], Env(node, env.variables))) is True
    return holds


def _fhirpathpy(expression: str):
    from fhirpathpy import compile as compile_fhirpath
    from fhirpathpy.models import models

    compiled = compile_fhirpath(expression, model=models["r4"])

    def evaluate(focus: list, env: Env) -> list:
        return compiled(focus[0], {k: v for k, v in env.variables.items() if v is not None})
    return evaluate


def _keys_read(expression: str, typedef: dict[str, Any]) -> frozenset[str] | None:
    """The JSON keys of its context node an expression reads, or None when it reads more than
    named elements (the node itself, $this, children(), %resource…)."""
    names: set[str] = set()
    if not _collect(parse(expression), names):
        return None
    keys: set[str] = set()
    elements = typedef.get("elements", {})
    for name in names:
        spec = elements.get(name)
        if spec is not None and spec.get("choice"):
            keys.update(name + t[0].upper() + t[1:] for t in spec["type"])
        keys.update((name, "_" + name))
    keys.update("_" + k for k in list(keys) if not k.startswith("_"))
    return frozenset(keys)


_LAMBDAS = {"where", "select", "all", "exists", "iif"}


def _collect(node: tuple, names: set[str]) -> bool:
    """Add the names read at the root focus; False when the expression reads the node some
    other way."""
    kind = node[0]
    if kind == "member":
        if node[1][:1].isupper():
            return False
        names.add(node[1])
        return True
    if kind == "literal":
        return True
    if kind == "external":
        return node[1] == "ucum"
    if kind in ("invoke",):
        if not _collect(node[1], names):
            return False
        invocation = node[2]
        if invocation[0] == "call" and invocation[1] not in _LAMBDAS:
            return all(_collect(a, names) for a in invocation[2])
        return invocation[0] != "this"
    if kind == "call":
        return False                  # a function applied to the node itself
    if kind == "binary":
        return _collect(node[2], names) and _collect(node[3], names)
    if kind == "type":
        return _collect(node[2], names)
    if kind == "negate":
        return _collect(node[1], names)
    if kind == "index":
        return _collect(node[1], names) and _collect(node[2], names)
    return False


# --- the hottest core rules in Python -------------------------------------------------------------
# Every Reference, Extension and Period is checked on every write, so these run thousands of times
# where the rest run rarely. Each is the rule's FHIRPath written out by hand (with the expression it
# stands for, so an edit to the definitions cannot leave it behind); tests/unit/test_fhirpath.py
# proves each agrees with the compiled expression and with fhirpathpy on the whole test corpus.

def _present(node: dict[str, Any], name: str) -> bool:
    return node.get(name) is not None or node.get("_" + name) is not None


def _ext_1(node: Any, env: Env) -> bool:
    """ext-1: an extension has either nested extensions or a value[x], not both."""
    if type(node) is not dict:
        return False
    has_value = False
    for key in node:
        plain = key[1:] if key[:1] == "_" else key
        if plain.startswith("value") and plain[5:6].isupper():
            has_value = True
            break
    return bool(node.get("extension")) != has_value


def _ref_1(node: Any, env: Env) -> bool:
    """ref-1 (as corrected in R4B): a local reference '#id' names a contained resource of the root
    resource; '#' alone is a contained resource's reference to its container."""
    reference = node.get("reference") if type(node) is dict else None
    if type(reference) is not str or not reference.startswith("#"):
        return True
    root, resource = env.variables["rootResource"], env.variables["resource"]
    if reference == "#":
        return root is not resource and root != resource
    contained = root.get("contained") if type(root) is dict else None
    return type(contained) is list and any(type(c) is dict and c.get("id") == reference[1:] for c in contained)


def _per_1(node: Any, env: Env) -> bool:
    """per-1: start <= end when both are given, compared as FHIRPath compares dates."""
    start, end = (node.get("start"), node.get("end")) if type(node) is dict else (None, None)
    if type(start) is not str or type(end) is not str:
        return True
    order = compare_values(start, end)
    return order is not None and order <= 0


def _empty_or_exists(empty: str, exists: str):
    def rule(node: Any, env: Env) -> bool:
        return type(node) is dict and (not _present(node, empty) or _present(node, exists))
    return rule


PYTHON_RULES: dict[str, tuple[str, Any]] = {
    "ext-1": ("extension.exists() != value.exists()", _ext_1),
    "ref-1": (_CORRECTED["ref-1"], _ref_1),
    "per-1": ("start.hasValue().not() or end.hasValue().not() or (start <= end)", _per_1),
    "cpt-2": ("value.empty() or system.exists()", _empty_or_exists("value", "system")),
    "qty-3": ("code.empty() or system.exists()", _empty_or_exists("code", "system")),
    "att-1": ("data.empty() or contentType.exists()", _empty_or_exists("data", "contentType")),
}


@cache
def rules() -> CoreRules:
    return CoreRules()
