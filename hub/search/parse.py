"""Parse a FHIR search query (name/value pairs as they came in the URL or form body) into a
`SearchRequest` the SQL builder can turn into one query, and render it back for links.

Values are parsed and checked here, once, so a bad value fails with a message that names the
parameter and the value, and the SQL builder never sees free text it would have to trust.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Literal as TypingLiteral
from urllib.parse import parse_qsl, quote

from hub.fhir.errors import FhirError
from hub.search.definitions import SearchParam, is_supported, params_for, resource_types
from hub.fhir.references import parse_reference
from hub.search.values import date_range, normalize, phonetic_keys, precision_range

PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})

# Modifiers the hub implements, by parameter type. `[Type]` on references is checked apart.
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"text", "not", "missing"}),
    "reference": frozenset({"missing", "identifier"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
}
# Modifiers R4 defines that the hub does not implement: "not-supported" rather than "invalid".
_KNOWN_UNSUPPORTED_MODIFIERS = frozenset({"above", "below", "in", "not-in", "of-type", "type", "iterate"})

SUMMARY_VALUES = frozenset({"true", "text", "data", "count", "false"})
TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})

# Result parameters the API handles itself; parsing keeps them only to render links.
_PASSTHROUGH = frozenset({"_format", "_pretty"})

_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_SEARCH_DATE = re.compile(
    r"^\d{4}(?:-\d{2}(?:-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
# A '+hh:mm' timezone offset whose '+' an unencoded URL turned into a space.
_LOST_PLUS = re.compile(r"(?<=\d) (\d{2}:\d{2})(?=,|$)")
# Characters left unencoded in rendered links: FHIR's own separators stay readable.
_SAFE_IN_LINKS = ":|,$-_.~*/"


# --------------------------------------------------------------------------------------------
# Parsed values: one class per parameter type.


@dataclass(frozen=True, slots=True)
class TokenValue:
    """`code` (any system), `system|code`, `|code` (no system), `system|` (any code)."""
    system: str | None
    code: str | None
    any_system: bool


@dataclass(frozen=True, slots=True)
class StringValue:
    text: str  # as given, unescaped
    norm: str  # normalised for prefix / contains matching


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    low: datetime
    high: datetime  # exclusive


@dataclass(frozen=True, slots=True)
class NumberValue:
    prefix: str
    value: Decimal
    low: Decimal  # implicit precision range of the search value
    high: Decimal


@dataclass(frozen=True, slots=True)
class QuantityValue:
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None  # None: any system
    code: str | None  # None: any unit; with system None, matches code or unit


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    target_type: str | None  # None: any type
    target_id: str | None
    url: str | None  # absolute or canonical reference: matched on the url as written


@dataclass(frozen=True, slots=True)
class PhoneticValue:
    """`phonetic`: the Metaphone key of each word; every word must sound like a name part."""
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UriValue:
    uri: str


@dataclass(frozen=True, slots=True)
class MissingValue:
    missing: bool


SearchValue = (
    TokenValue | StringValue | DateValue | NumberValue | QuantityValue | ReferenceValue | UriValue | MissingValue
    | PhoneticValue
)


@dataclass(frozen=True, slots=True)
class Clause:
    """One query parameter: its values are ORed; separate clauses are ANDed."""
    param: SearchParam
    modifier: str | None  # "exact", "not", ... or a resource type for `reference:[Type]`
    values: tuple[SearchValue, ...]
    raw: str  # the value as received (escapes kept), for links

    @property
    def name(self) -> str:
        return self.param.code + (f":{self.modifier}" if self.modifier else "")


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str  # a parameter code, `_id` or `_lastUpdated`
    descending: bool
    param: SearchParam


@dataclass(frozen=True, slots=True)
class Include:
    """`_include=Source:param[:Target]` / `_revinclude=...`; `param` "*" means every reference
    parameter of `source_type` (and source_type "*" every type, for `_include=*`)."""
    source_type: str
    param: str
    target_type: str | None = None
    iterate: bool = False

    def render(self) -> str:
        if self.source_type == "*":
            return "*"
        return ":".join(p for p in (self.source_type, self.param, self.target_type) if p)


@dataclass(slots=True)
class SearchRequest:
    res_type: str
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    sort: list[SortKey] = field(default_factory=list)
    include: list[Include] = field(default_factory=list)
    revinclude: list[Include] = field(default_factory=list)
    summary: str | None = None  # "count" is the only value that changes the query
    total: TypingLiteral["none", "estimate", "accurate"] | None = None
    elements: list[str] | None = None
    ignored: list[str] = field(default_factory=list)  # names (with modifier) left out, for a warning
    passthrough: list[tuple[str, str]] = field(default_factory=list)  # _format, _pretty

    def to_query(self, offset: int | None = None, count: int | None = None) -> str:
        """The query string (no leading '?') for this search, ignored parameters left out:
        for the Bundle's self link (as is) and next/previous links (with another offset)."""
        pairs: list[tuple[str, str]] = [(c.name, c.raw) for c in self.clauses]
        if self.sort:
            pairs.append(("_sort", ",".join(("-" if s.descending else "") + s.code for s in self.sort)))
        pairs += [("_include" + (":iterate" if i.iterate else ""), i.render()) for i in self.include]
        pairs += [("_revinclude" + (":iterate" if i.iterate else ""), i.render()) for i in self.revinclude]
        if self.summary:
            pairs.append(("_summary", self.summary))
        if self.total:
            pairs.append(("_total", self.total))
        if self.elements:
            pairs.append(("_elements", ",".join(self.elements)))
        pairs += self.passthrough
        pairs.append(("_count", str(self.count if count is None else count)))
        offset = self.offset if offset is None else offset
        if offset:
            pairs.append(("_offset", str(offset)))
        return "&".join(f"{quote(k, safe=_SAFE_IN_LINKS)}={quote(v, safe=_SAFE_IN_LINKS)}" for k, v in pairs)


# --------------------------------------------------------------------------------------------
# Entry point


def parse_search(
    res_type: str,
    query: list[tuple[str, str]],
    *,
    default_count: int = 20,
    max_count: int = 1000,
    strict: bool = False,
    base_url: str | None = None,
) -> SearchRequest:
    """Parse `query` (ordered name/value pairs, names possibly with `:modifier`) for a search
    on `res_type`.

    Unknown or unsupported parameters are recorded in `ignored` (lenient, the default) or
    refused with FhirError("not-supported") when `strict` (Prefer: handling=strict). Bad
    values raise FhirError("invalid") naming the parameter and value. `_count` is capped at
    `max_count`. `base_url` (the hub's own base, no trailing slash) lets absolute reference
    values pointing at this server match local references.
    """
    params = params_for(res_type)
    request = SearchRequest(res_type=res_type, count=default_count)
    parser = _QueryParser(res_type, params, request, strict, max_count, base_url)
    for name, value in query:
        parser.add(name, value)
    return request


# Search result parameters make no sense in criteria: they select, they do not page or shape.
_NOT_CRITERIA = frozenset({"_count", "_offset", "_sort", "_include", "_revinclude", "_summary", "_elements",
                           "_total", "_contained", "_containedType", "_format", "_pretty"})


def parse_criteria(res_type: str, query: str, *, where: str) -> SearchRequest:
    """Search criteria written down to select resources — a Bulk Data `_typeFilter`, a cohort
    criterion — parsed strictly: an unknown parameter or a bad value is an error naming `where`,
    never ignored (ignoring a criterion would select more than was asked). Result parameters
    (`_count`, `_sort`, …) are refused: they shape a page, they do not select."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise FhirError("invalid", f"{where} has no criteria", status=400)
    for name, _ in pairs:
        if name.split(":")[0] in _NOT_CRITERIA:
            raise FhirError("invalid", f"'{name[:40]}' is not a search criterion (in {where})", status=400)
    try:
        return parse_search(res_type, pairs, strict=True)
    except FhirError as exc:
        raise FhirError("invalid", f"{where}: {exc.issues[0].diagnostics}", status=400) from None


class _QueryParser:
    def __init__(
        self, res_type: str, params: dict[str, SearchParam], request: SearchRequest,
        strict: bool, max_count: int, base_url: str | None,
    ) -> None:
        self.res_type = res_type
        self.params = params
        self.request = request
        self.strict = strict
        self.max_count = max_count
        self.base_url = base_url.rstrip("/") if base_url else None

    def add(self, name: str, value: str) -> None:
        if value == "":
            return  # FHIR: an empty value is no criterion
        base, _, modifier = name.partition(":")
        handler = _RESULT_PARAMS.get(base)
        if handler is not None:
            handler(self, modifier, value)
        elif base in _PASSTHROUGH:
            self.request.passthrough.append((name, value))
        else:
            self._criterion(name, base, modifier or None, value)

    def unknown(self, name: str, why: str) -> None:
        """Record `name` as ignored, or refuse it when strict."""
        if self.strict:
            raise FhirError("not-supported", f"{why}: '{name}'", expression=name)
        self.request.ignored.append(name)

    # -- search criteria --------------------------------------------------------------------

    def _criterion(self, name: str, code: str, modifier: str | None, value: str) -> None:
        param = self.params.get(code)
        if param is None:
            self.unknown(name, f"unknown search parameter for {self.res_type}")
            return
        if not is_supported(param):
            self.unknown(name, f"search parameter of type {param.type} is not supported")
            return
        modifier = self._check_modifier(param, modifier, name)
        if param.type == "date":
            value = _LOST_PLUS.sub(r"+\1", value)
        if modifier == "missing":
            values: tuple[SearchValue, ...] = (_missing_value(name, value),)
        else:
            values = tuple(self._value(param, modifier, name, part) for part in split_unescaped(value, ","))
        self.request.clauses.append(Clause(param, modifier, values, value))

    def _check_modifier(self, param: SearchParam, modifier: str | None, name: str) -> str | None:
        if modifier is None:
            return None
        if param.code in ("_id", "_lastUpdated"):
            allowed: frozenset[str] = frozenset({"not"}) if param.code == "_id" else frozenset()
        elif param.code == "phonetic":
            allowed = frozenset({"missing"})
        else:
            allowed = MODIFIERS[param.type]
        if modifier in allowed:
            return modifier
        if param.type == "reference" and modifier in resource_types():
            if param.targets and modifier not in param.targets:
                raise FhirError("invalid", f"'{name}': {param.code} cannot refer to a {modifier}", expression=name)
            return modifier
        if modifier in _KNOWN_UNSUPPORTED_MODIFIERS:
            raise FhirError("not-supported", f"modifier ':{modifier}' is not supported on '{param.code}'",
                            expression=name)
        raise FhirError("invalid", f"modifier ':{modifier}' is not valid on {param.type} parameter "
                        f"'{param.code}'", expression=name)

    def _value(self, param: SearchParam, modifier: str | None, name: str, raw: str) -> SearchValue:
        kind = param.type
        if kind == "token":
            if modifier == "text":
                return _string_value(raw)
            return _token_value(name, raw)
        if kind == "string":
            if param.code == "phonetic":
                keys = phonetic_keys(unescape(raw))
                if not keys:
                    raise FhirError("invalid", f"'{name}={raw}': a phonetic search needs a name with letters",
                                    expression=name)
                return PhoneticValue(keys)
            return _string_value(raw)
        if kind == "date":
            return _date_value(name, raw)
        if kind == "number":
            return _number_value(name, raw)
        if kind == "quantity":
            return _quantity_value(name, raw)
        if kind == "reference":
            if modifier == "identifier":
                return _token_value(name, raw)
            return self._reference_value(name, raw, modifier)
        return UriValue(unescape(raw))

    def _reference_value(self, name: str, raw: str, type_modifier: str | None) -> ReferenceValue:
        text = unescape(raw)
        if self.base_url and text.startswith(self.base_url + "/"):
            text = text[len(self.base_url) + 1:]
        parsed = parse_reference(text)
        if parsed is None:
            raise FhirError("invalid", f"'{name}={raw}': a contained reference cannot be searched", expression=name)
        if "/" not in text and ":" not in text:  # a bare id
            return ReferenceValue(type_modifier, text, None)
        target_type, target_id, url = parsed
        if type_modifier and target_type and target_type != type_modifier:
            raise FhirError("invalid", f"'{name}={raw}': the reference is not to a {type_modifier}",
                            expression=name)
        if url is None and target_type is None:  # urn:uuid:..., or not a reference at all
            url = text
        if url is not None:
            return ReferenceValue(None, None, url)
        return ReferenceValue(target_type, target_id, None)


# --------------------------------------------------------------------------------------------
# Result parameters


def _count(p: _QueryParser, modifier: str, value: str) -> None:
    p.request.count = min(_non_negative("_count", value), p.max_count)


def _offset(p: _QueryParser, modifier: str, value: str) -> None:
    p.request.offset = _non_negative("_offset", value)


def _sort(p: _QueryParser, modifier: str, value: str) -> None:
    keys = []
    for item in value.split(","):
        item = item.strip()
        descending = item.startswith("-")
        code = item[1:] if descending else item
        param = p.params.get(code)
        if param is None or not is_supported(param):
            p.unknown(f"_sort={code}", f"cannot sort {p.res_type} by")
            continue
        keys.append(SortKey(code, descending, param))
    p.request.sort = keys


def _include(p: _QueryParser, modifier: str, value: str, reverse: bool = False) -> None:
    name = "_revinclude" if reverse else "_include"
    if modifier not in ("", "iterate", "recurse"):
        raise FhirError("invalid", f"'{name}:{modifier}' is not a valid modifier", expression=name)
    iterate = modifier != ""
    if value == "*":
        found = Include("*", "*", None, iterate)
    else:
        parts = value.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise FhirError("invalid", f"'{name}={value}' must be Type:parameter[:targetType] or *",
                            expression=name)
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if source not in resource_types() or (target is not None and target not in resource_types()):
            raise FhirError("invalid", f"'{name}={value}' names an unknown resource type", expression=name)
        if code != "*":
            param = params_for(source).get(code)
            if param is None or param.type != "reference":
                p.unknown(f"{name}={value}", f"not a reference parameter of {source}")
                return
            if target is not None and param.targets and target not in param.targets:
                raise FhirError("invalid", f"'{name}={value}': {source}.{code} cannot refer to a {target}",
                                expression=name)
        found = Include(source, code, target, iterate)
    (p.request.revinclude if reverse else p.request.include).append(found)


def _revinclude(p: _QueryParser, modifier: str, value: str) -> None:
    _include(p, modifier, value, reverse=True)


def _summary(p: _QueryParser, modifier: str, value: str) -> None:
    if value not in SUMMARY_VALUES:
        raise FhirError("invalid", f"'_summary={value}' must be one of {', '.join(sorted(SUMMARY_VALUES))}",
                        expression="_summary")
    p.request.summary = value


def _total(p: _QueryParser, modifier: str, value: str) -> None:
    if value not in TOTAL_VALUES:
        raise FhirError("invalid", f"'_total={value}' must be none, estimate or accurate", expression="_total")
    p.request.total = value  # type: ignore[assignment]


def _elements(p: _QueryParser, modifier: str, value: str) -> None:
    p.request.elements = [e.strip() for e in value.split(",") if e.strip()]


_RESULT_PARAMS = {
    "_count": _count,
    "_offset": _offset,
    "_sort": _sort,
    "_include": _include,
    "_revinclude": _revinclude,
    "_summary": _summary,
    "_total": _total,
    "_elements": _elements,
}


def _non_negative(name: str, value: str) -> int:
    # ASCII digits only ("¹".isdigit() is true, int() refuses it); 18 digits fit a SQL bigint.
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise FhirError("invalid", f"'{name}={value}' must be a whole number of 0 or more", expression=name)
    return int(value)


# --------------------------------------------------------------------------------------------
# Value syntax


def split_unescaped(value: str, separator: str) -> list[str]:
    """Split on `separator` where it is not escaped with a backslash; escapes stay in place
    (unescape each part afterwards)."""
    parts, start, i = [], 0, 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == separator:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def unescape(value: str) -> str:
    r"""Undo FHIR search escaping: `\,` `\|` `\$` `\\`."""
    if "\\" not in value:
        return value
    return re.sub(r"\\([\\,|$])", r"\1", value)


def _split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2].isalpha():
        prefix = value[:2]
        if prefix in PREFIXES:
            return prefix, value[2:]
    return "eq", value


def _token_value(name: str, raw: str) -> TokenValue:
    parts = split_unescaped(raw, "|")
    if len(parts) == 1:
        return TokenValue(None, unescape(raw), any_system=True)
    if len(parts) == 2:
        system, code = unescape(parts[0]) or None, unescape(parts[1]) or None
        if system is None and code is None:
            raise FhirError("invalid", f"'{name}={raw}' has neither a system nor a code", expression=name)
        return TokenValue(system, code, any_system=False)
    raise FhirError("invalid", f"'{name}={raw}' must be code, system|code, |code or system|", expression=name)


def _string_value(raw: str) -> StringValue:
    text = unescape(raw)
    return StringValue(text, normalize(text))


def _date_value(name: str, raw: str) -> DateValue:
    prefix, text = _split_prefix(raw)
    found = date_range(text) if _SEARCH_DATE.match(text) else None
    if found is None and len(text) > 2 and text[:2].isalpha():
        raise FhirError("invalid", f"'{name}={raw}': unknown prefix '{text[:2]}'", expression=name)
    if found is None:
        raise FhirError("invalid", f"'{name}={raw}': '{text}' is not a date (use YYYY, YYYY-MM, YYYY-MM-DD "
                        "or YYYY-MM-DDThh:mm[:ss][Z|+hh:mm], with an optional prefix such as ge)",
                        expression=name)
    return DateValue(prefix, found[0], found[1])


def _decimal(name: str, raw: str, text: str) -> Decimal:
    if not _NUMBER.match(text):
        if len(text) >= 2 and text[:2].isalpha() and text[:2] not in PREFIXES:
            raise FhirError("invalid", f"'{name}={raw}': unknown prefix '{text[:2]}'", expression=name)
        raise FhirError("invalid", f"'{name}={raw}': '{text}' is not a number", expression=name)
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern already checked it
        raise FhirError("invalid", f"'{name}={raw}' is not a number", expression=name) from None


def _number_value(name: str, raw: str) -> NumberValue:
    prefix, text = _split_prefix(raw)
    number = _decimal(name, raw, text)
    low, high = precision_range(number)
    return NumberValue(prefix, number, low, high)


def _quantity_value(name: str, raw: str) -> QuantityValue:
    parts = split_unescaped(raw, "|")
    if len(parts) not in (1, 3):
        raise FhirError("invalid", f"'{name}={raw}' must be [prefix]number or [prefix]number|system|code",
                        expression=name)
    prefix, text = _split_prefix(unescape(parts[0]))
    number = _decimal(name, raw, text)
    low, high = precision_range(number)
    system = unescape(parts[1]) or None if len(parts) == 3 else None
    code = unescape(parts[2]) or None if len(parts) == 3 else None
    return QuantityValue(prefix, number, low, high, system, code)


def _missing_value(name: str, raw: str) -> MissingValue:
    if raw not in ("true", "false"):
        raise FhirError("invalid", f"'{name}={raw}': :missing takes true or false", expression=name)
    return MissingValue(raw == "true")
