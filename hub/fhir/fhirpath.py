"""FHIRPath compiled once into Python closures, for the invariants the hub checks on every write.

fhirpathpy interprets an ANTLR parse tree on every call and wraps every node it visits, which
measured 100-700 µs per invariant here: several times the whole structural check of a Patient.
This module parses an expression once (a small precedence-climbing parser for the FHIRPath N1
grammar) and turns it into nested closures over plain JSON values, so evaluating `per-1` on a
Period costs a few microseconds. It covers what the R4 core invariants and the IPC guide use:
paths (choice elements such as `value` find `valueQuantity`), the operators, and the functions in
`_FUNCTIONS`. An expression using anything else raises `FhirPathError` when compiled, and the
caller keeps fhirpathpy for it. tests/unit/test_fhirpath.py checks every core invariant against
fhirpathpy (the oracle) on the validator cases, the UK Core and the guide's examples.

Values are the JSON values themselves: dict (a resource or complex element), str, bool, int and
Decimal. A primitive that has only extensions (`"_birthDate": {...}` with no `birthDate`) is a
`NoValue` item: it exists, but `hasValue()` is false and comparisons with it are empty.

Dates compare as FHIRPath says: component by component down to the precision both share, and
empty (unknown) when they agree that far but one is more precise. Temporal strings are recognised
by their shape, since JSON does not say which strings are dates.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["Env", "EvaluationError", "FhirPathError", "NoValue", "compare_values", "compile_expression", "parse", "truth"]


class FhirPathError(ValueError):
    """An expression this compiler does not handle (or that is not FHIRPath)."""


class EvaluationError(ValueError):
    """An expression that cannot be evaluated on this input (e.g. a singleton expected)."""


class NoValue:
    """A primitive element present only through its `_name` object (id and extensions)."""

    __slots__ = ("element",)

    def __init__(self, element: dict[str, Any]) -> None:
        self.element = element

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoValue) and other.element == self.element

    def __hash__(self) -> int:
        return id(self.element)


class Env:
    """What an evaluation can see besides its focus: $this and the %variables."""

    __slots__ = ("this", "variables")

    def __init__(self, this: Any, variables: dict[str, Any]) -> None:
        self.this = this
        self.variables = variables

    def with_this(self, this: Any) -> Env:
        return Env(this, self.variables)


Fn = Callable[[list, Env], list]
UCUM = "http://unitsofmeasure.org"

# --- tokens -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<delimited>`(?:[^`\\]|\\.)*`)
  | (?P<datetime>@(?:T[0-9:.]+|[0-9]{4}(?:-[0-9]{2}(?:-[0-9]{2})?)?(?:T[0-9:.]*(?:Z|[+-][0-9]{2}:[0-9]{2})?)?))
  | (?P<number>[0-9]+(?:\.[0-9]+)?)
  | (?P<special>\$(?:this|index|total))
  | (?P<external>%(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]*`|'[^']*'))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|!~|[=~<>|&+\-*/.()\[\],{}])
""", re.VERBOSE | re.DOTALL)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and i + 5 < len(body):
                out.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokens(expression: str) -> list[tuple[str, str]]:
    found, pos = [], 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise FhirPathError(f"cannot read {expression[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup
        text = match.group()
        if kind == "ws":
            continue
        if kind == "string":
            found.append(("string", _unescape(text[1:-1])))
        elif kind == "delimited":
            found.append(("ident", _unescape(text[1:-1])))
        elif kind == "external":
            name = text[1:]
            found.append(("external", _unescape(name[1:-1]) if name[0] in "`'" else name))
        else:
            found.append((kind or "op", text))
    found.append(("end", ""))
    return found


# --- parsing into a small tree: (kind, ...) tuples ------------------------------------------

_BINARY = [                                     # lowest precedence first
    ({"implies"}, True),
    ({"or", "xor"}, False),
    ({"and"}, False),
    ({"in", "contains"}, False),
    ({"=", "~", "!=", "!~"}, False),
    ({"<=", "<", ">", ">="}, False),
    ({"|"}, False),
    ({"is", "as"}, False),                      # type operators: right side is a type name
    ({"+", "-", "&"}, False),
    ({"*", "/", "div", "mod"}, False),
]


class _Parser:
    def __init__(self, expression: str) -> None:
        self.tokens = _tokens(expression)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, text: str) -> None:
        kind, got = self.take()
        if got != text or kind == "string":
            raise FhirPathError(f"expected {text!r}, found {got!r}")

    def parse(self) -> tuple:
        tree = self.binary(0)
        if self.peek()[0] != "end":
            raise FhirPathError(f"unexpected {self.peek()[1]!r}")
        return tree

    def _is_operator(self, level: int) -> str | None:
        kind, text = self.peek()
        if kind in ("op", "ident") and text in _BINARY[level][0]:
            return text
        return None

    def binary(self, level: int) -> tuple:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        right_assoc = _BINARY[level][1]
        while (op := self._is_operator(level)) is not None:
            self.take()
            if op in ("is", "as"):
                left = ("type", op, left, self.type_name())
                continue
            right = self.binary(level if right_assoc else level + 1)
            left = ("binary", op, left, right)
        return left

    def type_name(self) -> str:
        kind, name = self.take()
        if kind != "ident":
            raise FhirPathError(f"expected a type name, found {name!r}")
        while self.peek()[1] == "." and self.tokens[self.pos + 1][0] == "ident":
            self.take()
            name = self.take()[1]           # FHIR.Quantity, System.Boolean: the name is enough
        return name

    def unary(self) -> tuple:
        kind, text = self.peek()
        if kind == "op" and text in "+-":
            self.take()
            return ("negate", self.unary()) if text == "-" else self.unary()
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.term()
        while True:
            text = self.peek()[1]
            if text == "." and self.peek()[0] == "op":
                self.take()
                node = ("invoke", node, self.invocation())
            elif text == "[" and self.peek()[0] == "op":
                self.take()
                index = self.binary(0)
                self.expect("]")
                node = ("index", node, index)
            else:
                return node

    def invocation(self) -> tuple:
        kind, name = self.take()
        if kind == "special":
            return ("this",) if name == "$this" else ("special", name)
        if kind != "ident":
            raise FhirPathError(f"expected a name, found {name!r}")
        if self.peek()[1] == "(" and self.peek()[0] == "op":
            self.take()
            args = []
            if self.peek()[1] != ")":
                args.append(self.binary(0))
                while self.peek()[1] == ",":
                    self.take()
                    args.append(self.binary(0))
            self.expect(")")
            return ("call", name, args)
        return ("member", name)

    def term(self) -> tuple:
        kind, text = self.peek()
        if kind == "string":
            self.take()
            return ("literal", [text])
        if kind == "number":
            self.take()
            if self.peek()[0] == "string":           # a quantity literal: 5 'mg'
                raise FhirPathError("quantity literals are not supported")
            return ("literal", [Decimal(text) if "." in text else int(text)])
        if kind == "datetime":
            self.take()
            return ("literal", [text[1:]])
        if kind == "external":
            self.take()
            return ("external", text)
        if kind == "op" and text == "(":
            self.take()
            inner = self.binary(0)
            self.expect(")")
            return inner
        if kind == "op" and text == "{":
            self.take()
            self.expect("}")
            return ("literal", [])
        if kind == "ident" and text in ("true", "false"):
            self.take()
            return ("literal", [text == "true"])
        return self.invocation()


# --- evaluation helpers -------------------------------------------------------------------------

# The R4 data types a choice element can take, as they end its JSON name (valueQuantity): a key
# is taken for `name[x]` only when what follows `name` is one of these (so `period` never finds
# Timing's `periodUnit`, nor `value` a ValueSet's `valueSet`).
CHOICE_TYPES = frozenset({
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id", "Instant", "Integer",
    "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri", "Url", "Uuid",
    "Address", "Age", "Annotation", "Attachment", "CodeableConcept", "Coding", "ContactPoint", "Count",
    "Distance", "Duration", "HumanName", "Identifier", "Money", "Period", "Quantity", "Range", "Ratio",
    "Reference", "SampledData", "Signature", "Timing", "ContactDetail", "Contributor", "DataRequirement",
    "Expression", "ParameterDefinition", "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage",
    "Meta",
})


def _child(item: Any, name: str, out: list) -> None:
    """Append the value(s) of element `name` of one item (choice elements included)."""
    if isinstance(item, NoValue):
        item = item.element
    if not isinstance(item, dict):
        return
    value = item.get(name)
    extras = item.get("_" + name)
    if value is None and extras is None:
        for key in item:
            plain = key[1:] if key[:1] == "_" else key
            if len(plain) > len(name) and plain.startswith(name) and plain[len(name):] in CHOICE_TYPES:
                value = item.get(plain)
                extras = item.get("_" + plain)
                break
        else:
            return
    if isinstance(value, list) or isinstance(extras, list):
        values = value if isinstance(value, list) else []
        ext = extras if isinstance(extras, list) else []
        for i in range(max(len(values), len(ext))):
            v = values[i] if i < len(values) else None
            if v is not None:
                out.append(v)
            elif i < len(ext) and isinstance(ext[i], dict):
                out.append(NoValue(ext[i]))
    elif value is not None:
        out.append(value)
    elif isinstance(extras, dict):
        out.append(NoValue(extras))


def _children_of(item: Any) -> list:
    if isinstance(item, NoValue):
        item = item.element
    out: list = []
    if isinstance(item, dict):
        for key in item:
            if key == "resourceType" or (key.startswith("_") and key[1:] in item):
                continue
            _child(item, key.lstrip("_"), out)
    return out


def truth(collection: list) -> bool | None:
    """A collection as a Boolean: empty is None; one Boolean is itself; one other item is true."""
    if not collection:
        return None
    if len(collection) == 1:
        value = collection[0]
        return value if isinstance(value, bool) else True
    raise EvaluationError("a single value was expected, not a collection")


def _single(collection: list) -> Any:
    if len(collection) > 1:
        raise EvaluationError("a single value was expected, not a collection")
    return collection[0] if collection else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _number(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


_TEMPORAL = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2}))?)?"
    r"(?:T(?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2}(?:\.\d+)?))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?")
_TIME = re.compile(r"(?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2}(?:\.\d+)?))?)?")


def _temporal(text: str) -> list | None:
    """A date, dateTime or time as [components...] (UTC when it has a zone), or None."""
    match = _TEMPORAL.fullmatch(text)
    if match is None:
        time = _TIME.fullmatch(text)
        if time is None or ":" not in text:
            return None
        return ["T"] + [Decimal(time.group(g)) for g in ("h", "mi", "s") if time.group(g) is not None]
    parts = [int(match.group(g)) for g in ("y", "mo", "d", "h", "mi") if match.group(g) is not None]
    if match.group("s") is not None:
        parts.append(Decimal(match.group("s")))
    zone = match.group("tz")
    if zone and zone != "Z" and len(parts) >= 5:
        sign = 1 if zone[0] == "+" else -1
        parts = _shift(parts, -sign * (int(zone[1:3]) * 60 + int(zone[4:6])))
    return parts


def _shift(parts: list, minutes: int) -> list:
    """Move y, mo, d, h, mi[, s] by minutes (to UTC)."""
    from datetime import datetime, timedelta
    moment = datetime(parts[0], parts[1], parts[2], parts[3], parts[4]) + timedelta(minutes=minutes)
    return [moment.year, moment.month, moment.day, moment.hour, moment.minute, *parts[5:]]


def compare_values(a: Any, b: Any) -> int | None:
    """-1, 0 or 1; None when FHIRPath says the comparison is empty (unknown)."""
    if _is_number(a) and _is_number(b):
        x, y = _number(a), _number(b)
        return (x > y) - (x < y)
    if isinstance(a, str) and isinstance(b, str):
        ta, tb = _temporal(a), _temporal(b)
        if ta is None or tb is None:
            return (a > b) - (a < b)
        if (ta[0] == "T") != (tb[0] == "T"):
            return None
        for x, y in zip(ta, tb):
            if x != y:
                return -1 if x < y else 1
        return 0 if len(ta) == len(tb) else None
    if isinstance(a, dict) and isinstance(b, dict) and "value" in a and "value" in b:
        if a.get("code", a.get("unit")) != b.get("code", b.get("unit")):
            return None
        return compare_values(a["value"], b["value"])
    return None


def _equal(a: Any, b: Any) -> bool | None:
    if isinstance(a, NoValue) or isinstance(b, NoValue):
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if _is_number(a) and _is_number(b):
        return _number(a) == _number(b)
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        ta, tb = _temporal(a), _temporal(b)
        if ta is not None and tb is not None and len(ta) != len(tb):
            order = compare_values(a, b)
            return None if order == 0 or order is None else False
        return False
    return a == b


def _equal_collections(left: list, right: list) -> bool | None:
    if not left or not right:
        return None
    if len(left) != len(right):
        return False
    verdict: bool | None = True
    for a, b in zip(left, right):
        same = _equal(a, b)
        if same is False:
            return False
        if same is None:
            verdict = None
    return verdict


def _equivalent(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return bool(_equal(a, b))


def _key(value: Any) -> Any:
    """A hashable stand-in, equal for FHIRPath-equal values (for distinct, union, in)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _key(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("list", tuple(_key(v) for v in value))
    if isinstance(value, NoValue):
        return ("novalue", _key(value.element))
    if _is_number(value):
        return ("number", _number(value).normalize())
    return (type(value).__name__, value)


def _distinct(items: list) -> list:
    seen, out = set(), []
    for item in items:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _type_of(value: Any) -> set[str]:
    """The type names a value answers to in `is`, `as` and `ofType` (FHIR and System)."""
    if isinstance(value, dict):
        res_type = value.get("resourceType")
        return {res_type, "Resource", "DomainResource"} if isinstance(res_type, str) else set()
    if isinstance(value, bool):
        return {"boolean", "Boolean"}
    if isinstance(value, int):
        return {"integer", "Integer"}
    if isinstance(value, (Decimal, float)):
        return {"decimal", "Decimal"}
    if isinstance(value, str):
        return {"string", "String"}
    return set()


# --- compiling the tree into closures ------------------------------------------------------------

def parse(expression: str) -> tuple:
    """The expression's tree: nested tuples, (kind, ...), as `compile_expression` compiles it."""
    return _Parser(expression).parse()


def compile_expression(expression: str, *, as_validator: bool = False) -> Fn:
    """The expression as `fn(focus: list, env: Env) -> list`; FhirPathError if unsupported.

    `as_validator`: evaluate as HL7's Java validator evaluates invariants, where startsWith,
    endsWith and contains on an empty input give false rather than empty (so ref-1,
    `reference.startsWith('#').not() or ...`, holds for a Reference with no `reference`).
    Without it the result is FHIRPath's to the letter (what the oracle tests compare)."""
    tree = parse(expression)
    if as_validator:
        tree = _validator_strings(tree)
    return _compile(tree)


_FALSE_ON_EMPTY = {"startsWith": "startsWith!", "endsWith": "endsWith!", "contains": "contains!"}


def _validator_strings(node: Any) -> Any:
    """The tree with the string tests swapped for their false-on-empty forms."""
    if isinstance(node, tuple):
        if node and node[0] == "call" and node[1] in _FALSE_ON_EMPTY:
            return ("call", _FALSE_ON_EMPTY[node[1]], [_validator_strings(a) for a in node[2]])
        return tuple(_validator_strings(part) for part in node)
    if isinstance(node, list):
        return [_validator_strings(part) for part in node]
    return node


def _compile(node: tuple) -> Fn:
    kind = node[0]
    if kind == "literal":
        value = node[1]
        return lambda focus, env: value
    if kind == "member":
        return _member(node[1], first=True)
    if kind == "this":
        return lambda focus, env: [env.this]
    if kind == "special":
        raise FhirPathError(f"{node[1]} is not supported")
    if kind == "external":
        return _external(node[1])
    if kind == "call":
        return _call(node[1], node[2], None)
    if kind == "invoke":
        return _invoke(node[1], node[2])
    if kind == "index":
        base, index = _compile(node[1]), _compile(node[2])

        def at(focus: list, env: Env) -> list:
            items, position = base(focus, env), _single(index(focus, env))
            return [items[position]] if isinstance(position, int) and 0 <= position < len(items) else []
        return at
    if kind == "negate":
        inner = _compile(node[1])
        return lambda focus, env: [-_number(v) for v in inner(focus, env)]
    if kind == "type":
        return _type_operator(node[1], node[2], node[3])
    if kind == "binary":
        return _binary(node[1], _compile(node[2]), _compile(node[3]))
    raise FhirPathError(f"cannot compile {kind}")


def _member(name: str, *, first: bool) -> Fn:
    if first and name[:1].isupper():
        def of_type(focus: list, env: Env) -> list:
            return [i for i in focus if isinstance(i, dict) and i.get("resourceType", name) == name]
        return of_type

    def member(focus: list, env: Env) -> list:
        out: list = []
        for item in focus:
            _child(item, name, out)
        return out
    return member


def _external(name: str) -> Fn:
    if name == "ucum":
        return lambda focus, env: [UCUM]
    if name in ("resource", "rootResource", "context"):
        def variable(focus: list, env: Env) -> list:
            value = env.variables.get(name)
            return [] if value is None else [value]
        return variable
    raise FhirPathError(f"%{name} is not supported")


def _invoke(base_node: tuple, invocation: tuple) -> Fn:
    base = _compile(base_node)
    if invocation[0] == "member":
        name = invocation[1]

        def member(focus: list, env: Env) -> list:
            out: list = []
            for item in base(focus, env):
                _child(item, name, out)
            return out
        return member
    if invocation[0] == "call":
        return _call(invocation[1], invocation[2], base, base_node)
    if invocation[0] == "this":
        return base
    raise FhirPathError(f"cannot invoke {invocation[0]}")


def _choice_member(base_node: tuple | None, type_name: str) -> Fn | None:
    """`value.as(Quantity)`, `probability is decimal`: the choice element's own key when the
    base is a member path (valueQuantity, probabilityDecimal); None for any other base."""
    if base_node is None:
        return None
    if base_node[0] == "member" and not base_node[1][:1].isupper():
        name, parent = base_node[1], None
    elif base_node[0] == "invoke" and base_node[2][0] == "member":
        name, parent = base_node[2][1], _compile(base_node[1])
    else:
        return None
    key = name + type_name[0].upper() + type_name[1:]

    def typed(focus: list, env: Env) -> list:
        out: list = []
        for item in (focus if parent is None else parent(focus, env)):
            if not isinstance(item, dict):
                continue
            if key in item or "_" + key in item:
                _child_exact(item, key, out)
            elif name in item:
                values: list = []
                _child(item, name, values)
                out.extend(v for v in values if type_name in _type_of(v))
        return out
    return typed


def _child_exact(item: dict, key: str, out: list) -> None:
    value = item.get(key)
    if isinstance(value, list):
        out.extend(v for v in value if v is not None)
    elif value is not None:
        out.append(value)
    elif isinstance(item.get("_" + key), dict):
        out.append(NoValue(item["_" + key]))


def _type_operator(op: str, base_node: tuple, type_name: str) -> Fn:
    typed = _choice_member(base_node, type_name)
    base = _compile(base_node)
    if op == "as":
        if typed is not None:
            return typed
        return lambda focus, env: [v for v in base(focus, env) if type_name in _type_of(v)]

    def is_type(focus: list, env: Env) -> list:
        items = base(focus, env)
        if not items:
            return []
        if typed is not None:
            return [bool(typed(focus, env))]
        return [type_name in _type_of(_single(items))]
    return is_type


def _binary(op: str, left: Fn, right: Fn) -> Fn:
    if op in ("and", "or", "xor", "implies"):
        return _logic(op, left, right)
    if op == "|":
        return lambda focus, env: _distinct(left(focus, env) + right(focus, env))
    if op == "=":
        return lambda focus, env: _as_list(_equal_collections(left(focus, env), right(focus, env)))
    if op == "!=":
        def not_equal(focus: list, env: Env) -> list:
            same = _equal_collections(left(focus, env), right(focus, env))
            return [] if same is None else [not same]
        return not_equal
    if op in ("~", "!~"):
        def equivalent(focus: list, env: Env) -> list:
            a, b = left(focus, env), right(focus, env)
            same = (not a and not b) or (len(a) == len(b) and all(_equivalent(x, y) for x, y in zip(a, b)))
            return [same if op == "~" else not same]
        return equivalent
    if op in ("<", "<=", ">", ">="):
        test = {"<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0, ">=": lambda c: c >= 0}[op]

        def compare(focus: list, env: Env) -> list:
            a, b = left(focus, env), right(focus, env)
            if not a or not b:
                return []
            order = compare_values(_single(a), _single(b))
            return [] if order is None else [test(order)]
        return compare
    if op in ("in", "contains"):
        item_side, collection_side = (left, right) if op == "in" else (right, left)

        def membership(focus: list, env: Env) -> list:
            item, collection = item_side(focus, env), collection_side(focus, env)
            if not item:
                return []
            value = _single(item)
            return [any(_equal(value, c) for c in collection)]
        return membership
    if op == "&":
        def concatenate(focus: list, env: Env) -> list:
            a, b = _single(left(focus, env)), _single(right(focus, env))
            return [_text(a) + _text(b)]
        return concatenate
    if op in ("+", "-", "*", "/", "div", "mod"):
        return _arithmetic(op, left, right)
    raise FhirPathError(f"operator {op} is not supported")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _arithmetic(op: str, left: Fn, right: Fn) -> Fn:
    def arithmetic(focus: list, env: Env) -> list:
        a, b = _single(left(focus, env)), _single(right(focus, env))
        if a is None or b is None:
            return []
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return [a + b]
        if not (_is_number(a) and _is_number(b)):
            return []
        x, y = _number(a), _number(b)
        try:
            if op == "+":
                result = x + y
            elif op == "-":
                result = x - y
            elif op == "*":
                result = x * y
            elif op == "/":
                result = x / y
            elif op == "div":
                result = x // y
            else:
                result = x % y
        except (ZeroDivisionError, InvalidOperation):
            return []
        both_int = isinstance(a, int) and isinstance(b, int) and op != "/"
        return [int(result) if both_int else result]
    return arithmetic


def _as_list(value: bool | None) -> list:
    return [] if value is None else [value]


def _logic(op: str, left: Fn, right: Fn) -> Fn:
    if op == "and":
        def and_(focus: list, env: Env) -> list:
            a = truth(left(focus, env))
            if a is False:
                return [False]
            b = truth(right(focus, env))
            if b is False:
                return [False]
            return [True] if a and b else []
        return and_
    if op == "or":
        def or_(focus: list, env: Env) -> list:
            a = truth(left(focus, env))
            if a is True:
                return [True]
            b = truth(right(focus, env))
            if b is True:
                return [True]
            return [False] if a is False and b is False else []
        return or_
    if op == "xor":
        def xor(focus: list, env: Env) -> list:
            a, b = truth(left(focus, env)), truth(right(focus, env))
            return [] if a is None or b is None else [a != b]
        return xor

    def implies(focus: list, env: Env) -> list:
        a = truth(left(focus, env))
        if a is False:
            return [True]
        b = truth(right(focus, env))
        if b is True:
            return [True]
        if a is True:
            return _as_list(b)
        return []
    return implies


# --- functions ----------------------------------------------------------------------------------

def _call(name: str, arg_nodes: list[tuple], base: Fn | None, base_node: tuple | None = None) -> Fn:
    if name in ("is", "as", "ofType") and len(arg_nodes) == 1:
        type_name = _type_argument(arg_nodes[0])
        if name == "is":
            return _type_operator("is", base_node if base_node is not None else ("this",), type_name)
        typed = _choice_member(base_node, type_name)
        if typed is not None:
            return typed
        source = base or (lambda focus, env: focus)
        return lambda focus, env: [v for v in source(focus, env) if type_name in _type_of(v)]
    spec = _FUNCTIONS.get(name)
    if spec is None:
        raise FhirPathError(f"function {name}() is not supported")
    arity, lambdas, implementation = spec
    if not (arity[0] <= len(arg_nodes) <= arity[1]):
        raise FhirPathError(f"{name}() takes {arity[0]} to {arity[1]} arguments")
    args = [_compile(a) for a in arg_nodes]
    source = base or (lambda focus, env: focus)

    def call(focus: list, env: Env) -> list:
        items = source(focus, env)
        if lambdas:
            return implementation(items, env, args)
        values = [a([env.this], env) for a in args]
        return implementation(items, *values)
    return call


def _type_argument(node: tuple) -> str:
    if node[0] == "member":
        return node[1]
    if node[0] == "invoke" and node[2][0] == "member":
        return node[2][1]
    raise FhirPathError("a type name was expected")


def _where(items: list, env: Env, args: list[Fn]) -> list:
    return [i for i in items if truth(args[0]([i], env.with_this(i))) is True]


def _select(items: list, env: Env, args: list[Fn]) -> list:
    out: list = []
    for item in items:
        out.extend(args[0]([item], env.with_this(item)))
    return out


def _all(items: list, env: Env, args: list[Fn]) -> list:
    return [all(truth(args[0]([i], env.with_this(i))) is True for i in items)]


def _exists(items: list, env: Env, args: list[Fn]) -> list:
    if args:
        items = _where(items, env, args)
    return [bool(items)]


def _iif(items: list, env: Env, args: list[Fn]) -> list:
    focus = items
    this = items[0] if len(items) == 1 else env.this
    scoped = env.with_this(this)
    if truth(args[0](focus, scoped)) is True:
        return args[1](focus, scoped)
    return args[2](focus, scoped) if len(args) > 2 else []


def _has_value(items: list) -> list:
    return [len(items) == 1 and not isinstance(items[0], (dict, NoValue))]


def _string_function(fn: Callable[..., Any]) -> Callable[..., list]:
    def apply(items: list, *args: list) -> list:
        value = _single(items)
        if value is None or any(not a for a in args):
            return []
        if not isinstance(value, str):
            return []
        result = fn(value, *(_single(a) for a in args))
        return [] if result is None else [result]
    return apply


def _false_on_empty(fn: Callable[..., list]) -> Callable[..., list]:
    def apply(items: list, *args: list) -> list:
        return [False] if not items else fn(items, *args)
    return apply


def _substring(value: str, start: Any, length: Any = None) -> str | None:
    if not isinstance(start, int) or start < 0 or start >= len(value):
        return None
    return value[start:] if length is None else value[start:start + max(0, length)]


def _to_integer(items: list) -> list:
    value = _single(items)
    if isinstance(value, bool):
        return [int(value)]
    if isinstance(value, int):
        return [value]
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        return [int(value)]
    return []


def _to_string(items: list) -> list:
    value = _single(items)
    if value is None or isinstance(value, (dict, NoValue)):
        return []
    return [_text(value)]


def _matches(value: str, pattern: str) -> bool:
    return re.search(pattern, value, re.DOTALL) is not None


def _descendants(items: list) -> list:
    out: list = []
    pending = list(items)
    while pending:
        found = _children_of(pending.pop(0))
        out.extend(found)
        pending.extend(found)
    return out


def _intersect(items: list, other: list) -> list:
    keys = {_key(o) for o in other}
    return _distinct([i for i in items if _key(i) in keys])


def _exclude(items: list, other: list) -> list:
    keys = {_key(o) for o in other}
    return [i for i in items if _key(i) not in keys]


_FUNCTIONS: dict[str, tuple[tuple[int, int], bool, Callable[..., list]]] = {
    # name: ((min args, max args), args are evaluated per item ($this), implementation)
    "where": ((1, 1), True, _where),
    "select": ((1, 1), True, _select),
    "all": ((1, 1), True, _all),
    "exists": ((0, 1), True, _exists),
    "iif": ((2, 3), True, _iif),
    "empty": ((0, 0), False, lambda items: [not items]),
    "count": ((0, 0), False, lambda items: [len(items)]),
    "not": ((0, 0), False, lambda items: _as_list(None if truth(items) is None else not truth(items))),
    "hasValue": ((0, 0), False, _has_value),
    "first": ((0, 0), False, lambda items: items[:1]),
    "last": ((0, 0), False, lambda items: items[-1:]),
    "tail": ((0, 0), False, lambda items: items[1:]),
    "skip": ((1, 1), False, lambda items, n: items[_single(n):] if n else []),
    "take": ((1, 1), False, lambda items, n: items[:_single(n)] if n else []),
    "single": ((0, 0), False, lambda items: [_single(items)] if items else []),
    "distinct": ((0, 0), False, _distinct),
    "isDistinct": ((0, 0), False, lambda items: [len(_distinct(items)) == len(items)]),
    "allTrue": ((0, 0), False, lambda items: [all(i is True for i in items)]),
    "allFalse": ((0, 0), False, lambda items: [all(i is False for i in items)]),
    "anyTrue": ((0, 0), False, lambda items: [any(i is True for i in items)]),
    "anyFalse": ((0, 0), False, lambda items: [any(i is False for i in items)]),
    "combine": ((1, 1), False, lambda items, other: items + other),
    "union": ((1, 1), False, lambda items, other: _distinct(items + other)),
    "intersect": ((1, 1), False, _intersect),
    "exclude": ((1, 1), False, _exclude),
    "children": ((0, 0), False, lambda items: [c for i in items for c in _children_of(i)]),
    "descendants": ((0, 0), False, _descendants),
    "trace": ((1, 2), False, lambda items, *names: items),
    "resolve": ((0, 0), False, lambda items: []),     # no references are followed
    "toInteger": ((0, 0), False, _to_integer),
    "toString": ((0, 0), False, _to_string),
    "startsWith": ((1, 1), False, _string_function(lambda v, p: v.startswith(p) if isinstance(p, str) else None)),
    "endsWith": ((1, 1), False, _string_function(lambda v, p: v.endswith(p) if isinstance(p, str) else None)),
    "contains": ((1, 1), False, _string_function(lambda v, p: p in v if isinstance(p, str) else None)),
    "startsWith!": ((1, 1), False, _false_on_empty(_string_function(
        lambda v, p: v.startswith(p) if isinstance(p, str) else None))),
    "endsWith!": ((1, 1), False, _false_on_empty(_string_function(
        lambda v, p: v.endswith(p) if isinstance(p, str) else None))),
    "contains!": ((1, 1), False, _false_on_empty(_string_function(lambda v, p: p in v if isinstance(p, str) else None))),
    "matches": ((1, 1), False, _string_function(_matches)),
    "replaceMatches": ((2, 2), False, _string_function(lambda v, p, s: re.sub(p, s, v))),
    "substring": ((1, 2), False, _string_function(_substring)),
    "length": ((0, 0), False, _string_function(len)),
    "upper": ((0, 0), False, _string_function(str.upper)),
    "lower": ((0, 0), False, _string_function(str.lower)),
    "indexOf": ((1, 1), False, _string_function(lambda v, p: v.find(p))),
}
