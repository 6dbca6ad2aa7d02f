"""The base FHIR R4 specification's own rules, checked on every resource the hub accepts, in one
walk over its JSON guided by the compiled core definitions (hub.fhir.definitions):

- JSON as FHIR defines it (json.html): no empty arrays or objects, no `null` but where a
  primitive array lines up with its `_name` array, no `fhir_comments`, no empty strings; and what
  PostgreSQL cannot store or the hub cannot walk safely: no NUL character in any string, no
  string over 1 MB, no number beyond PostgreSQL's numeric, nothing nested deeper than MAX_DEPTH;
- ele-1: every element has a value or children other than its id;
- required bindings on code, Coding, CodeableConcept (and Quantity): a code from the value set,
  or 422 `code-invalid` naming the FHIRPath location, the value and the value set's URL;
  extensible bindings give a warning when asked for warnings ($validate), never a refusal;
- a Coding that claims a code from a code system the FHIR specification defines
  (http://hl7.org/fhir/...) must use a code that system has;
- the invariants (`constraint`) of each type, backbone element and resource, compiled in
  hub.fhir.validation.core_rules: evaluated only where their context element is present and, for
  most, only when the node holds an element the expression reads. As in HL7's validator, a rule
  holds only when its expression is true (false or empty is a breach). dom-3, txt-1 and txt-2
  are written here in Python (dom-3 needs the element types FHIRPath would look up; txt-1 and
  txt-2 are the narrative checks in hub.fhir.validation.narrative).

Element names the definitions do not know are left to the structural check (fhir.resources),
which runs after this walk and names them.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from hub.fhir.errors import Issue
from hub.fhir.fhirpath import Env, EvaluationError
from hub.fhir.jsontext import FhirDecimal
from hub.fhir.validation.core_rules import FORMATS, Binding, Constraint, CoreRules, Element, TypeDef, rules
from hub.fhir.validation.narrative import check_div

MAX_DEPTH = 100                 # JSON nesting levels (objects and arrays) in one resource
MAX_STRING = 1024 * 1024        # characters (FHIR: strings SHALL NOT exceed 1 MB)
_NUMERIC_DIGITS_BEFORE, _NUMERIC_DIGITS_AFTER = 131072, 16383   # PostgreSQL numeric (and jsonb)

_NARRATIVE_POINTER = re.compile(r"""(?:href|src)\s*=\s*["'](#[^"']*)["']""")
_ERROR, _WARNING = "error", "warning"


class TooDeep(Exception):
    """The resource nests deeper than MAX_DEPTH."""


class Relocate(Exception):
    """Raised by a walk that does not keep locations, at its first issue: walk again with them."""


class Checker:
    """One resource being checked: collects Issues (errors, and warnings when asked).

    A walk first runs without building the FHIRPath location of each node (`locate` false),
    which is most of its cost for a valid resource; at the first issue it gives up (Relocate)
    and `check` walks again with locations, so every issue still names where it is."""

    __slots__ = ("rules", "issues", "warnings", "locate")

    def __init__(self, core: CoreRules, warnings: bool, locate: bool = True) -> None:
        self.rules = core
        self.issues: list[Issue] = []
        self.warnings = warnings
        self.locate = locate or warnings

    def resource(self, resource: dict[str, Any], path: str, root: dict[str, Any] | None, depth: int) -> None:
        typedef = self.rules.types.get(resource.get("resourceType"))
        if typedef is None or not typedef.is_resource:
            return                      # an unknown type is the structural check's to name
        env = Env(resource, {"resource": resource, "rootResource": root or resource, "context": resource})
        self.node(resource, typedef, path, env, depth)
        if "contained" in resource:
            self._dom3(resource, path)

    def node(self, node: dict[str, Any], typedef: TypeDef, path: str, env: Env, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise TooDeep(path)
        elements = typedef.elements
        locate = self.locate
        for key, value in node.items():
            element = elements.get(key)
            if element is None:
                if key == "fhir_comments":
                    self.error("structure", f"{path}.fhir_comments", "JSON comments (fhir_comments) are not "
                               "part of FHIR R4 JSON")
                elif key != "resourceType":
                    self._unknown_value(value, f"{path}.{key}", depth + 1)
                continue
            if element.is_list:
                if type(value) is not list:
                    continue            # the structural check names it
                where = f"{path}.{key}" if locate else path
                if not value:
                    self.error("structure", where, "an array SHALL NOT be empty (FHIR JSON)")
                    continue
                if depth + 1 > MAX_DEPTH:
                    raise TooDeep(where)
                plain = element.plain
                for index, item in enumerate(value):
                    if plain and type(item) is str and item and len(item) <= MAX_STRING and "\x00" not in item:
                        continue
                    if item is None:
                        if not _has_partner(node, element, index):
                            self.error("structure", f"{where}[{index}]", "null is only allowed where the "
                                       f"_{key} array has extensions at the same position")
                        continue
                    self.value(element, item, f"{where}[{index}]" if locate else path, env, depth + 2, node)
            elif element.plain and (type(value) is bool or (type(value) is str and value and len(value) <= MAX_STRING
                                                             and "\x00" not in value)):
                continue
            elif value is None:
                self.error("structure", f"{path}.{key}", "null is not a FHIR value (leave the element out)")
            else:
                self.value(element, value, f"{path}.{key}" if locate else path, env, depth + 1, node)
        for constraint in typedef.constraints:
            if constraint.skip_unless is not None and constraint.skip_unless.isdisjoint(node):
                continue
            self.run(constraint, node, path, env)

    def value(self, element: Element, value: Any, where: str, env: Env, depth: int, parent: dict[str, Any]) -> None:
        kind = element.kind
        if kind == "primitive":
            if type(value) is str:
                if not value:
                    self.error("structure", where, "a string SHALL NOT be empty")
                elif "\x00" in value:
                    self.error("structure", where, "a string SHALL NOT contain the NUL character (U+0000)")
                elif len(value) > MAX_STRING and element.type != "base64Binary":
                    # the 1 MB limit is the string type's; an attachment's data may be larger
                    self.error("structure", where, f"a string SHALL NOT be longer than {MAX_STRING} characters")
                elif element.binding is not None:
                    self.coded(element.binding, None, value, where, value)
            elif type(value) is FhirDecimal or type(value) is Decimal:
                if not value.is_finite() or value.adjusted() >= _NUMERIC_DIGITS_BEFORE \
                        or -value.as_tuple().exponent > _NUMERIC_DIGITS_AFTER:
                    self.error("structure", where, "the number is beyond what the hub can store (PostgreSQL "
                               f"numeric: {_NUMERIC_DIGITS_BEFORE} digits before the point, "
                               f"{_NUMERIC_DIGITS_AFTER} after)")
            elif isinstance(value, (dict, list)) and not value:
                self.error("structure", where, "an object or array SHALL NOT be empty")
        elif kind == "complex" or kind == "extras":
            if type(value) is not dict:
                return
            if not value or (len(value) == 1 and "id" in value and (
                    kind == "complex" or parent.get(element.of_primitive.name) is None)):
                self.error("structure", where, "rule ele-1 failed: all FHIR elements must have a @value or "
                           "children (an empty object, or only an id)")
                return
            typedef = self.rules.types.get(element.type)
            if typedef is None:
                return
            self.node(value, typedef, where, env, depth)
            if element.binding is not None:
                self.binding(element.binding, element.type, value, where)
            if element.type == "Coding":
                self.claimed(value, where)
        elif kind == "resource":
            if type(value) is dict:
                contained = element.name == "contained"
                root = env.variables["rootResource"] if contained else None
                self.resource(value, where, root, depth)
        elif kind == "xhtml":
            if type(value) is str:
                if "\x00" in value:
                    self.error("structure", where, "a string SHALL NOT contain the NUL character (U+0000)")
                else:
                    found = check_div(value, where)
                    if found and not self.locate:
                        raise Relocate
                    self.issues.extend(found)
        for constraint in element.constraints:
            self.run(constraint, value, where, env)

    def _unknown_value(self, value: Any, where: str, depth: int) -> None:
        """An element the definitions do not know (the structural check will name it): still no
        NUL characters and no runaway nesting inside it."""
        if depth > MAX_DEPTH:
            raise TooDeep(where)
        if type(value) is str:
            if "\x00" in value:
                self.error("structure", where, "a string SHALL NOT contain the NUL character (U+0000)")
        elif type(value) is dict:
            for key, item in value.items():
                self._unknown_value(item, f"{where}.{key}", depth + 1)
        elif type(value) is list:
            for index, item in enumerate(value):
                self._unknown_value(item, f"{where}[{index}]", depth + 1)

    def binding(self, binding: Binding, type_: str, value: dict[str, Any], where: str) -> None:
        if type_ == "CodeableConcept":
            codings = [c for c in value.get("coding") or () if type(c) is dict]
            pairs = [(c.get("system"), c.get("code")) for c in codings if c.get("code") is not None]
            if any(binding.allows(s, c) for s, c in pairs):
                return
            shown = ", ".join(f"{s}|{c}" if s else str(c) for s, c in pairs) or "no code (text only)"
            self.coded(binding, None, None, where, shown)
        elif type_ in ("Coding", "Quantity", "SimpleQuantity", "Duration", "Age", "Distance", "Count",
                       "MoneyQuantity"):
            code = value.get("code")
            if code is None and type_ != "Coding":
                return
            self.coded(binding, value.get("system"), code, where,
                       f"{value.get('system')}|{code}" if value.get("system") else str(code))

    def coded(self, binding: Binding, system: Any, code: Any, where: str, shown: str) -> None:
        if code is not None and binding.allows(system, code):
            return
        if binding.strength == "required":
            what = FORMATS[binding.url][0] if binding.codes is None else f"a code from {binding.url}"
            self.error("code-invalid", where, f"'{_short(shown)}' is not {what} (required binding)")
        elif self.warnings and binding.codes is not None:
            self.issues.append(Issue("code-invalid", f"{where}: '{_short(shown)}' is not in {binding.url} "
                                     "(extensible binding: use a code from it where one applies)", where,
                                     severity=_WARNING))

    def claimed(self, coding: dict[str, Any], where: str) -> None:
        system, code = coding.get("system"), coding.get("code")
        if type(system) is str and type(code) is str:
            known = self.rules.fhir_systems.get(system)
            if known is not None and code not in known:
                self.error("code-invalid", f"{where}.code", f"'{_short(code)}' is not a code of the FHIR code "
                           f"system {system} (4.0.1)")

    def run(self, constraint: Constraint, node: Any, where: str, env: Env) -> None:
        if constraint.severity != _ERROR and not self.warnings:
            return
        try:
            held = constraint.holds(node, env)
            note = ""
        except (EvaluationError, TypeError, ValueError, ArithmeticError, KeyError, IndexError) as exc:
            held, note = False, f" (the rule could not be evaluated: {type(exc).__name__})"
        if not held:
            if not self.locate:
                raise Relocate
            self.issues.append(Issue("invariant", f"{where}: rule {constraint.key} failed: {constraint.human}{note}",
                                     where, severity=constraint.severity if constraint.severity == _WARNING
                                     else _ERROR))

    def _dom3(self, resource: dict[str, Any], path: str) -> None:
        """dom-3: a contained resource is referred to from elsewhere in the resource, or refers to
        the resource that contains it ('#')."""
        contained = resource.get("contained")
        if type(contained) is not list:
            return
        pointers = _local_pointers(resource)
        for index, item in enumerate(contained):
            if type(item) is not dict or not isinstance(item.get("id"), str):
                continue
            if "#" + item["id"] in pointers or "#" in _local_pointers(item):
                continue
            where = f"{path}.contained[{index}]"
            self.error("invariant", where, f"rule dom-3 failed: the contained resource '{_short(item['id'])}' is "
                       "neither referred to from elsewhere in the resource nor refers to the resource containing it")

    def error(self, code: str, where: str, message: str) -> None:
        if not self.locate:
            raise Relocate
        self.issues.append(Issue(code, f"{where}: {message}", where))


def _has_partner(node: dict[str, Any], element: Element, index: int) -> bool:
    """A null in a primitive array is allowed where its `_name` array has extensions (and a null
    in the `_name` array where the primitive array has a value)."""
    partner = node.get(element.of_primitive.name if element.of_primitive else "_" + element.name)
    return type(partner) is list and index < len(partner) and partner[index] is not None


def _local_pointers(node: Any) -> set[str]:
    """Every string starting with '#' anywhere in the node (references, canonicals and uris), and
    every `#…` a narrative points to (<img src="#id">, <a href="#id">)."""
    found: set[str] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if type(current) is dict:
            pending.extend(current.values())
        elif type(current) is list:
            pending.extend(current)
        elif type(current) is str:
            if current.startswith("#"):
                found.add(current)
            elif current.startswith("<"):
                found.update(_NARRATIVE_POINTER.findall(current))
    return found


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def check(resource: dict[str, Any], *, warnings: bool = False) -> list[Issue]:
    """The base specification's issues with one resource (errors, plus warnings if asked)."""
    start = resource.get("resourceType") or "Resource"
    checker = Checker(rules(), warnings, locate=False)
    try:
        try:
            checker.resource(resource, start, None, 1)
        except (Relocate, TooDeep):
            checker = Checker(rules(), warnings, locate=True)
            checker.resource(resource, start, None, 1)
    except (TooDeep, RecursionError) as exc:
        where = exc.args[0] if isinstance(exc, TooDeep) else resource.get("resourceType")
        return [Issue("structure", f"{where}: the resource is nested more than {MAX_DEPTH} levels deep", where)]
    return checker.issues
