"""A compiler from the FHIRPath subset used by search parameter definitions to plain Python
closures over JSON (dicts, lists, str, numbers, bool).

Why not a general FHIRPath engine: index extraction runs on every write, and a general engine
spends most of its time on model lookups, type boxing and dispatch. The R4 definitions only
use a handful of constructs, so each one is compiled once into a closure that walks the JSON
directly:

* dotted paths through lists (`Patient.name.given`), starting at the resource type,
  `Resource`, or a child name (`name | alias`); indexers `entry[0]`;
* `|` unions;
* choice elements by name (`Observation.effective` finds `effectiveDateTime`/`effectivePeriod`…)
  and by type: `value as Quantity`, `value.as(Quantity)`, `value.ofType(Quantity)` read
  `valueQuantity`;
* `.where(resolve() is Patient)`: keeps References whose target type (from the reference
  string, else `Reference.type`) is Patient, without resolving anything;
* `.where(<path> = <literal>)`, `!=`, `and`, `or`, `not()` inside where;
* `.exists()`, `.empty()`, `.first()`, `extension('url')`, top-level `and` / `=` / `!=`.

Anything else raises `UnsupportedExpression`; the caller falls back to fhirpathpy for it.
FHIRPath's choice-type resolution needs the type model; here a missing element whose name is a
known choice name is looked up as `name` + a FHIR type name among the object's keys.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Collection = list[Any]
Evaluator = Callable[[Collection], Collection]


class UnsupportedExpression(ValueError):
    """The expression uses FHIRPath this compiler does not handle."""


# Element names that are choice elements ([x]) somewhere in R4 (derived from the R4B models,
# which share R4's structure). Only these are looked up as `name<Type>` when missing, which
# keeps the common "element absent" case a single dict lookup.
CHOICE_NAMES = frozenset({
    "abatement", "additive", "age", "allowed", "amount", "answer", "asNeeded", "author", "born",
    "bounds", "characteristic", "chargeItem", "citeAs", "code", "collected", "concentration",
    "content", "created", "date", "deceased", "defaultValue", "definition", "detail", "diagnosis",
    "dose", "doseNumber", "due", "duration", "effective", "entity", "event", "example",
    "fastingStatus", "fixed", "identified", "indication", "item", "legallyBinding", "location",
    "manufacturer", "maxValue", "medication", "minValue", "minimumVolume", "module",
    "multipleBirth", "name", "occurred", "occurrence", "offset", "onset", "participantEffective",
    "pattern", "performed", "period", "presentation", "probability", "procedure", "product",
    "quantity", "rate", "reported", "scheduled", "seriesDoses", "serviced", "source", "start",
    "statusReason", "strength", "studyEffective", "subject", "substance", "substanceDefinition",
    "target", "time", "timing", "topic", "used", "value", "when",
    # R4-only resources the R4B models no longer carry
    "coefficient", "relatesTo", "sourceMaterial",
})

# FHIR R4 data type names as they appear as choice suffixes (`valueDateTime`).
TYPE_SUFFIXES = frozenset({
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id",
    "Instant", "Integer", "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt",
    "Uri", "Url", "Uuid", "Address", "Age", "Annotation", "Attachment", "CodeableConcept",
    "Coding", "ContactPoint", "Count", "Distance", "Duration", "HumanName", "Identifier",
    "Money", "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData", "Signature",
    "Timing", "ContactDetail", "Contributor", "DataRequirement", "Expression",
    "ParameterDefinition", "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage",
    "Meta", "MarketingStatus", "ProdCharacteristic", "ProductShelfLife", "Population",
    "SubstanceAmount",
})

_ABSTRACT_ROOTS = frozenset({"Resource", "DomainResource"})


# --------------------------------------------------------------------------------------------
# Tokens and syntax tree


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*')
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
      | (?P<op>!=|[.()\[\]|=,])
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise UnsupportedExpression(f"cannot read {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "ident" and value.startswith("`"):
            value = value[1:-1]
        tokens.append((kind, value))
        pos = m.end()
    tokens.append(("end", ""))
    return tokens


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier: a type root at the start of the expression, else a child element."""
    name: str


@dataclass(frozen=True, slots=True)
class Child:
    base: Any
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    base: Any  # None: applied to the current context ($this)
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Index:
    base: Any
    index: int


@dataclass(frozen=True, slots=True)
class TypeOp:
    op: str  # "as" | "is"
    base: Any
    type_name: str


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # "|", "=", "!=", "and", "or"
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


# Binary operators by precedence, loosest first (FHIRPath: or < and < = != < | < is/as < .).
_LEVELS: tuple[tuple[str, ...], ...] = (("or",), ("and",), ("=", "!="), ("|",))


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def parse(self) -> Any:
        node = self._binary(0)
        if self._peek()[0] != "end":
            raise UnsupportedExpression(f"unexpected {self._peek()[1]!r}")
        return node

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def _take(self) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def _expect(self, value: str) -> None:
        if self._take()[1] != value:
            raise UnsupportedExpression(f"expected {value!r}")

    def _at_operator(self, ops: tuple[str, ...]) -> bool:
        kind, value = self._peek()
        return value in ops and (kind == "op" or (kind == "ident" and value in ("and", "or")))

    def _binary(self, level: int) -> Any:
        if level == len(_LEVELS):
            return self._type_expr()
        node = self._binary(level + 1)
        while self._at_operator(_LEVELS[level]):
            op = self._take()[1]
            node = Binary(op, node, self._binary(level + 1))
        return node

    def _type_expr(self) -> Any:
        node = self._postfix()
        while self._peek() in (("ident", "as"), ("ident", "is")):
            op = self._take()[1]
            node = TypeOp(op, node, self._type_name())
        return node

    def _type_name(self) -> str:
        kind, value = self._take()
        if kind != "ident":
            raise UnsupportedExpression("expected a type name")
        if self._peek() == ("op", "."):  # FHIR.Quantity / System.String
            self._take()
            value = self._take()[1]
        return value

    def _postfix(self) -> Any:
        node = self._term()
        while True:
            kind, value = self._peek()
            if value == "." and kind == "op":
                self._take()
                node = self._invocation(node)
            elif value == "[" and kind == "op":
                self._take()
                kind, number = self._take()
                if kind != "number" or not number.isdigit():
                    raise UnsupportedExpression("only literal integer indexers are supported")
                self._expect("]")
                node = Index(node, int(number))
            else:
                return node

    def _term(self) -> Any:
        kind, value = self._peek()
        if kind == "op" and value == "(":
            self._take()
            node = self._binary(0)
            self._expect(")")
            return node
        if kind == "string":
            self._take()
            return Literal(_unquote(value))
        if kind == "number":
            self._take()
            return Literal(value)
        if kind == "ident" and value in ("true", "false"):
            self._take()
            return Literal(value == "true")
        return self._invocation(None)

    def _invocation(self, base: Any) -> Any:
        kind, name = self._take()
        if kind != "ident":
            raise UnsupportedExpression(f"expected a name, got {name!r}")
        if self._peek() == ("op", "("):
            self._take()
            args: list[Any] = []
            if self._peek() != ("op", ")"):
                args.append(self._binary(0))
                while self._peek() == ("op", ","):
                    self._take()
                    args.append(self._binary(0))
            self._expect(")")
            if name in ("as", "ofType", "is"):
                if len(args) != 1 or not isinstance(args[0], Name):
                    raise UnsupportedExpression(f"{name}() needs a type name")
                return TypeOp("is" if name == "is" else "as", base, args[0].name)
            return Call(base, name, tuple(args))
        return Name(name) if base is None else Child(base, name)


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)


def parse(expression: str) -> Any:
    """Parse `expression` into the syntax tree above, or raise UnsupportedExpression."""
    return _Parser(expression).parse()


# --------------------------------------------------------------------------------------------
# Runtime helpers (hot path: keep them small and allocation-light)


def _choice_value(obj: dict[str, Any], name: str) -> Any:
    """The value of choice element `name[x]` in `obj` (`effective` → `effectiveDateTime`)."""
    size = len(name)
    for key in obj:
        if len(key) > size and key.startswith(name) and key[size:] in TYPE_SUFFIXES:
            return obj[key]
    return None


def _children(items: Collection, name: str, choice: bool) -> Collection:
    out: Collection = []
    for item in items:
        if item.__class__ is not dict:
            continue
        value = item.get(name)
        if value is None:
            if not choice:
                continue
            value = _choice_value(item, name)
            if value is None:
                continue
        if value.__class__ is list:
            out.extend(value)
        else:
            out.append(value)
    return out


def reference_type(item: Any) -> str | None:
    """The target type of a Reference, from `reference` ("Patient/1", ".../Patient/1",
    "Patient/1/_history/2") or else `type`; None when it cannot be told (urn:uuid, #contained)."""
    if item.__class__ is not dict:
        return None
    ref = item.get("reference")
    if ref.__class__ is str and ref and ref[0] != "#" and not ref.startswith("urn:"):
        parts = ref.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return parts[-2]
    declared = item.get("type")
    return declared if declared.__class__ is str else None


def _truth(collection: Collection) -> bool | None:
    """FHIRPath boolean evaluation of a collection: empty → None, singleton → its truth."""
    if not collection:
        return None
    if len(collection) == 1 and collection[0].__class__ is bool:
        return collection[0]
    return True


# --------------------------------------------------------------------------------------------
# Compiler


def compile_path(expression: str) -> Evaluator:
    """Compile `expression` into a function from the input collection (`[resource]`) to the
    output collection. Raises UnsupportedExpression for constructs outside the subset."""
    return _Compiler().compile(parse(expression), top=True)


class _Compiler:
    def compile(self, node: Any, top: bool) -> Evaluator:
        """`top`: the node is evaluated against the resource itself, so a leading capitalised
        name is a type root rather than a child element."""
        chain = self._simple_chain(node, top)
        if chain is not None:
            return self._walker(*chain)
        method = getattr(self, f"_compile_{type(node).__name__.lower()}")
        return method(node, top)

    # A root followed only by children is by far the commonest shape: one tight loop.
    def _simple_chain(self, node: Any, top: bool) -> tuple[str | None, tuple[str, ...]] | None:
        names: list[str] = []
        while isinstance(node, Child):
            names.append(node.name)
            node = node.base
        if not isinstance(node, Name):
            return None
        if top and node.name[:1].isupper():
            root: str | None = node.name
        else:
            root = None
            names.append(node.name)
        names.reverse()
        return root, tuple(names)

    def _walker(self, root: str | None, names: tuple[str, ...]) -> Evaluator:
        steps = tuple((n, n in CHOICE_NAMES) for n in names)
        type_filter = None if root is None or root in _ABSTRACT_ROOTS else root

        def walk(items: Collection) -> Collection:
            if type_filter is not None:
                items = [i for i in items if i.__class__ is dict and i.get("resourceType") == type_filter]
            for name, choice in steps:
                if not items:
                    break
                items = _children(items, name, choice)
            return items

        return walk

    def _compile_child(self, node: Child, top: bool) -> Evaluator:
        base = self.compile(node.base, top)
        name, choice = node.name, node.name in CHOICE_NAMES
        return lambda items: _children(base(items), name, choice)

    def _compile_index(self, node: Index, top: bool) -> Evaluator:
        base = self.compile(node.base, top)
        index = node.index
        return lambda items: base(items)[index:index + 1]

    def _compile_literal(self, node: Literal, top: bool) -> Evaluator:
        value = [node.value]
        return lambda items: value

    def _compile_typeop(self, node: TypeOp, top: bool) -> Evaluator:
        if node.op == "is":
            raise UnsupportedExpression("'is' is only supported as where(resolve() is Type)")
        suffix = node.type_name[:1].upper() + node.type_name[1:]
        if suffix not in TYPE_SUFFIXES:
            raise UnsupportedExpression(f"cannot cast to {node.type_name}")
        target = node.base
        if isinstance(target, Child):
            parent = self.compile(target.base, top)
            name = target.name
        elif isinstance(target, Name) and not (top and target.name[:1].isupper()):
            parent, name = (lambda items: items), target.name
        else:
            raise UnsupportedExpression("a cast must apply to a choice element")
        key = name + suffix
        return lambda items: _children(parent(items), key, False)

    def _compile_binary(self, node: Binary, top: bool) -> Evaluator:
        left = self.compile(node.left, top)
        right = self.compile(node.right, top)
        if node.op == "|":
            return lambda items: left(items) + right(items)
        if node.op in ("=", "!="):
            negate = node.op == "!="

            def equals(items: Collection) -> Collection:
                a, b = left(items), right(items)
                if not a or not b:
                    return []
                return [(a == b) != negate]

            return equals
        if node.op == "and":
            def both(items: Collection) -> Collection:
                a, b = _truth(left(items)), _truth(right(items))
                if a is False or b is False:
                    return [False]
                return [] if a is None or b is None else [True]

            return both
        if node.op == "or":
            def either(items: Collection) -> Collection:
                a, b = _truth(left(items)), _truth(right(items))
                if a is True or b is True:
                    return [True]
                return [] if a is None or b is None else [False]

            return either
        raise UnsupportedExpression(f"operator {node.op}")  # pragma: no cover

    def _compile_call(self, node: Call, top: bool) -> Evaluator:
        base: Evaluator = (lambda items: items) if node.base is None else self.compile(node.base, top)
        name, args = node.name, node.args
        if name == "where" and len(args) == 1:
            keep = self._predicate(args[0])
            return lambda items: [i for i in base(items) if keep(i)]
        if name == "extension" and len(args) == 1 and isinstance(args[0], Literal):
            url = args[0].value
            return lambda items: [
                e for e in _children(base(items), "extension", False)
                if e.__class__ is dict and e.get("url") == url
            ]
        if args:
            raise UnsupportedExpression(f"function {name}() with arguments")
        if name == "exists":
            return lambda items: [bool(base(items))]
        if name == "empty":
            return lambda items: [not base(items)]
        if name == "first":
            return lambda items: base(items)[:1]
        if name == "not":
            def negate(items: Collection) -> Collection:
                value = _truth(base(items))
                return [] if value is None else [not value]

            return negate
        raise UnsupportedExpression(f"function {name}()")

    def _predicate(self, node: Any) -> Callable[[Any], bool]:
        """A where() criterion as a test on one item."""
        if (
            isinstance(node, TypeOp) and node.op == "is"
            and isinstance(node.base, Call) and node.base.name == "resolve" and node.base.base is None
        ):
            wanted = node.type_name
            return lambda item: reference_type(item) == wanted
        if (
            isinstance(node, Binary) and node.op in ("=", "!=")
            and isinstance(node.left, Name) and isinstance(node.right, Literal)
        ):
            # The usual `system='email'`: one lookup, no collections.
            field, value, same = node.left.name, node.right.value, node.op == "="
            return lambda item: item.__class__ is dict and field in item and (item[field] == value) == same
        criterion = self.compile(node, top=False)
        return lambda item: _truth(criterion([item])) is True
