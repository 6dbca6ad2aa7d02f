"""Search index rows for one resource: what the repository writes to the idx_* tables.

`index_rows(resource)` runs on every write, so each type's parameters are compiled once (see
pathwalk) into (code, evaluator, emitter) triples and the per-call work is walking the JSON and
appending tuples. Row tuples start with the parameter code; the repository prepends
(res_type, res_id). Value rules follow the R4 search spec; see the emitters below.

`_id` and `_lastUpdated` produce no rows: search reads them from the `resource` table.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from hub.fhir.references import parse_reference
from hub.search.definitions import SearchParam, supported_params
from hub.search.pathwalk import Evaluator, UnsupportedExpression, compile_path
from hub.search.values import (
    DATE_MAX,
    DATE_MIN,
    NUMBER_MAX,
    NUMBER_MIN,
    date_range,
    normalize,
    phonetic_keys,
    precision_range,
    to_decimal,
)

TokenRow = tuple[str, str | None, str | None, str | None]  # param, system, code, text
StringRow = tuple[str, str, str]  # param, value_norm, value_exact
ReferenceRow = tuple[str, str | None, str | None, str | None]  # param, target_type, target_id, url
DateRow = tuple[str, datetime, datetime]  # param, low, high (exclusive)
NumberRow = tuple[str, Decimal, Decimal]  # param, low, high
QuantityRow = tuple[str, Decimal, Decimal, str | None, str | None, str | None]  # +system, code, unit
UriRow = tuple[str, str]  # param, uri

# Parameters searched on `resource` columns, never indexed.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})

# Token rows for `<reference param>:identifier` searches carry this suffix on the param.
IDENTIFIER_SUFFIX = ":identifier"

# Longest indexed token code / uri / reference id: longer ones cannot be btree-indexed
# and are not useful search keys, so they are left out of the index.
MAX_KEY_LENGTH = 1024


# The columns each row tuple fills, in tuple order, after the repository's (res_type, res_id).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "idx_token": ("param", "system", "code", "text"),
    "idx_string": ("param", "value_norm", "value_exact"),
    "idx_reference": ("param", "target_type", "target_id", "url"),
    "idx_date": ("param", "low", "high"),
    "idx_number": ("param", "low", "high"),
    "idx_quantity": ("param", "low", "high", "system", "code", "unit"),
    "idx_uri": ("param", "uri"),
}


@dataclass(slots=True)
class IndexRows:
    """The index rows of one resource, one list per idx_* table."""

    tokens: list[TokenRow] = field(default_factory=list)
    strings: list[StringRow] = field(default_factory=list)
    references: list[ReferenceRow] = field(default_factory=list)
    dates: list[DateRow] = field(default_factory=list)
    numbers: list[NumberRow] = field(default_factory=list)
    quantities: list[QuantityRow] = field(default_factory=list)
    uris: list[UriRow] = field(default_factory=list)

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Rows by table name (idx_token, ...), for a repository that loops over tables;
        TABLE_COLUMNS gives each table's columns in row order."""
        return {
            "idx_token": self.tokens, "idx_string": self.strings,
            "idx_reference": self.references, "idx_date": self.dates,
            "idx_number": self.numbers, "idx_quantity": self.quantities, "idx_uri": self.uris,
        }

    def dedupe(self) -> None:
        """Drop repeated rows (the same code in two codings, a name given twice...)."""
        for name in ("tokens", "strings", "references", "dates", "numbers", "quantities", "uris"):
            rows = getattr(self, name)
            if len(rows) > 1:
                setattr(self, name, list(dict.fromkeys(rows)))


def index_rows(resource: dict[str, Any]) -> IndexRows:
    """Every search index row for `resource` (its `resourceType` picks the parameters).
    Unknown types give no rows."""
    rows = IndexRows()
    root = [resource]
    for code, evaluate, emit in compiled_extractors(resource.get("resourceType", "")):
        values = evaluate(root)
        if values:
            emit(code, values, rows)
    rows.dedupe()
    return rows


Emitter = Callable[[str, list[Any], IndexRows], None]


@cache
def compiled_extractors(res_type: str) -> tuple[tuple[str, Evaluator, Emitter], ...]:
    """The (code, evaluator, emitter) triples for every indexed parameter of `res_type`."""
    return tuple(
        (param.code, compile_param(param), _emit_phonetic if param.code == "phonetic" else EMITTERS[param.type])
        for param in supported_params(res_type).values()
        if param.code not in COLUMN_PARAMS
    )


def compile_param(param: SearchParam) -> Evaluator:
    """The evaluator for `param`: the native path walker, or fhirpathpy for expressions the
    walker does not handle (none of R4's; kept for profile-defined parameters)."""
    try:
        return compile_path(param.expression)
    except UnsupportedExpression:
        return fhirpathpy_evaluator(param.expression)


def fhirpathpy_evaluator(expression: str) -> Evaluator:
    """Evaluate `expression` with fhirpathpy (slow, general). Imported lazily: only needed when
    a definition falls outside the native subset."""
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    compiled = fp_compile(expression, models["r4"])

    def evaluate(items: list[Any]) -> list[Any]:
        return [value for item in items for value in compiled(item)]

    return evaluate


def native_coverage() -> tuple[int, int]:
    """(native, fallback) counts over every supported (type, parameter) pair: for reporting."""
    from hub.search.definitions import resource_types

    native = fallback = 0
    for res_type in resource_types():
        for param in supported_params(res_type).values():
            try:
                compile_path(param.expression)
                native += 1
            except UnsupportedExpression:
                fallback += 1
    return native, fallback


# --------------------------------------------------------------------------------------------
# Emitters: one per parameter type, turning evaluated values into rows.


def _emit_token(code: str, values: list[Any], rows: IndexRows) -> None:
    """Coding → (system, code, display); CodeableConcept → each coding, plus its text as a
    code-less row; Identifier → (system, value, type.text); ContactPoint → value as code, no
    system (R4: ContactPoint.system is the kind of contact, not a code system); code, id,
    string, uri primitives → code only; boolean → 'true'/'false'. Texts are normalised."""
    out = rows.tokens
    for value in values:
        cls = value.__class__
        if cls is str:
            if len(value) <= MAX_KEY_LENGTH:
                out.append((code, None, value, None))
        elif cls is dict:
            _token_from_complex(code, value, out)
        elif cls is bool:
            out.append((code, None, "true" if value else "false", None))
        elif cls is int or cls is Decimal or cls is float:
            out.append((code, None, str(value), None))


def _token_from_complex(code: str, value: dict[str, Any], out: list[TokenRow]) -> None:
    if "coding" in value or ("text" in value and "value" not in value and "code" not in value):
        for coding in value.get("coding") or ():
            if coding.__class__ is dict:
                _token_from_coding(code, coding, out)
        text = value.get("text")
        if text.__class__ is str:
            out.append((code, None, None, normalize(text)))
    elif "value" in value:  # Identifier or ContactPoint
        ident_value = value.get("value")
        if ident_value.__class__ is not str or len(ident_value) > MAX_KEY_LENGTH:
            ident_value = None
        system = value.get("system")
        if system in _CONTACT_SYSTEMS and "type" not in value:
            system = None
        id_type = value.get("type")
        type_text = id_type.get("text") if id_type.__class__ is dict else None
        if ident_value is not None or system:
            out.append((code, system, ident_value, normalize(type_text) if type_text.__class__ is str else None))
    elif "code" in value or "system" in value:
        _token_from_coding(code, value, out)


_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


def _token_from_coding(code: str, coding: dict[str, Any], out: list[TokenRow]) -> None:
    system, value = coding.get("system"), coding.get("code")
    if value.__class__ is str and len(value) > MAX_KEY_LENGTH:
        value = None
    if system is None and value is None:
        return
    display = coding.get("display")
    out.append((code, system, value, normalize(display) if display.__class__ is str else None))


# String parts of HumanName and Address, each indexed as its own row.
_STRING_PARTS = (
    "family", "given", "prefix", "suffix", "text",
    "line", "city", "district", "state", "postalCode", "country",
)


def _emit_string(code: str, values: list[Any], rows: IndexRows) -> None:
    """string/markdown values as they are; HumanName: family, each given, prefix, suffix and
    text; Address: each line, city, district, state, postalCode, country and text."""
    out = rows.strings
    for value in values:
        if value.__class__ is str:
            if value:
                out.append((code, normalize(value), value))
        elif value.__class__ is dict:
            for part in _STRING_PARTS:
                found = value.get(part)
                if found is None:
                    continue
                for text in found if found.__class__ is list else (found,):
                    if text.__class__ is str and text:
                        out.append((code, normalize(text), text))


def _emit_phonetic(code: str, values: list[Any], rows: IndexRows) -> None:
    """`phonetic` (on HumanName): the Metaphone key of each word of the family and given names,
    in value_norm (hub.search.values.phonetic_keys), the name as written in value_exact."""
    out = rows.strings
    for value in values:
        if value.__class__ is not dict:
            continue
        family = value.get("family")
        given = value.get("given")
        for text in ([family] if family.__class__ is str else []) + (given if given.__class__ is list else []):
            if text.__class__ is str:
                for key in phonetic_keys(text):
                    out.append((code, key, text))


def _emit_reference(code: str, values: list[Any], rows: IndexRows) -> None:
    """Reference → parse_reference(reference), and Reference.identifier as a token row under
    `<code>:identifier`; canonical/uri strings → url as written (including any |version);
    an embedded resource (Bundle.entry[0].resource) → its type and id."""
    out = rows.references
    for value in values:
        if value.__class__ is dict:
            ref = value.get("reference")
            if ref.__class__ is str:
                parsed = parse_reference(ref)
                if parsed is not None and (parsed[1] is None or len(parsed[1]) <= MAX_KEY_LENGTH):
                    out.append((code, *parsed))
            identifier = value.get("identifier")
            if identifier.__class__ is dict:
                _token_from_complex(code + IDENTIFIER_SUFFIX, identifier, rows.tokens)
            res_type, res_id = value.get("resourceType"), value.get("id")
            if res_type.__class__ is str and res_id.__class__ is str:
                out.append((code, res_type, res_id, None))
        elif value.__class__ is str and value and value[0] != "#":
            out.append((code, None, None, value))


def _emit_date(code: str, values: list[Any], rows: IndexRows) -> None:
    """date/dateTime/instant → their precision range; Period → [start, end) with open ends at
    DATE_MIN/DATE_MAX; Timing → from its earliest event (or boundsPeriod start) to its
    latest (the schedule itself is ignored, as R4 says)."""
    out = rows.dates
    for value in values:
        if value.__class__ is str:
            found = date_range(value)
            if found is not None:
                out.append((code, found[0], found[1]))
        elif value.__class__ is dict:
            found = _period_range(value) if ("start" in value or "end" in value) else _timing_range(value)
            if found is not None:
                out.append((code, found[0], found[1]))


def _period_range(period: dict[str, Any]) -> tuple[datetime, datetime] | None:
    start, end = period.get("start"), period.get("end")
    low = date_range(start) if start.__class__ is str else None
    high = date_range(end) if end.__class__ is str else None
    if low is None and high is None:
        return None
    return (low[0] if low else DATE_MIN), (high[1] if high else DATE_MAX)


def _timing_range(timing: dict[str, Any]) -> tuple[datetime, datetime] | None:
    ranges = [r for r in (date_range(e) for e in timing.get("event") or () if e.__class__ is str) if r]
    repeat = timing.get("repeat")
    if repeat.__class__ is dict and repeat.get("boundsPeriod").__class__ is dict:
        bounds = _period_range(repeat["boundsPeriod"])
        if bounds is not None:
            ranges.append(bounds)
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _emit_number(code: str, values: list[Any], rows: IndexRows) -> None:
    """Numbers → implicit precision range; Range → [low.value, high.value] (open ends
    infinite); Quantity-shaped values → their value's range."""
    out = rows.numbers
    for value in values:
        if value.__class__ is dict:
            found = _range_bounds(value) if ("low" in value or "high" in value) else _quantity_bounds(value)
        else:
            number = to_decimal(value) if value.__class__ is not bool else None
            found = precision_range(number) if number is not None else None
        if found is not None:
            out.append((code, found[0], found[1]))


def _quantity_bounds(quantity: dict[str, Any]) -> tuple[Decimal, Decimal] | None:
    """The range a Quantity stands for: its value's precision range, opened on one side by a
    comparator (`<5` → (-inf, 5.5))."""
    number = to_decimal(quantity.get("value"))
    if number is None:
        return None
    low, high = precision_range(number)
    comparator = quantity.get("comparator")
    if comparator in ("<", "<="):
        low = NUMBER_MIN
    elif comparator in (">", ">="):
        high = NUMBER_MAX
    return low, high


def _range_bounds(value: dict[str, Any]) -> tuple[Decimal, Decimal] | None:
    low_q, high_q = value.get("low"), value.get("high")
    low = to_decimal(low_q.get("value")) if low_q.__class__ is dict else None
    high = to_decimal(high_q.get("value")) if high_q.__class__ is dict else None
    if low is None and high is None:
        return None
    return (low if low is not None else NUMBER_MIN), (high if high is not None else NUMBER_MAX)


def _emit_quantity(code: str, values: list[Any], rows: IndexRows) -> None:
    """Quantity (and Age, Duration, Count, Distance) → value range + system, code, unit;
    Money → currency as code in urn:iso:std:iso:4217; Range → its bounds with the units of
    whichever bound has them; bare numbers → unit-less rows. SampledData is not indexed."""
    out = rows.quantities
    for value in values:
        if value.__class__ is dict:
            if "low" in value or "high" in value:
                bounds = _range_bounds(value)
                unit_source = value.get("low") or value.get("high") or {}
            elif "value" in value:
                bounds = _quantity_bounds(value)
                unit_source = value
            else:
                continue
            if bounds is None or unit_source.__class__ is not dict:
                continue
            if "currency" in unit_source:
                out.append((code, bounds[0], bounds[1], "urn:iso:std:iso:4217", unit_source["currency"], None))
            else:
                out.append((code, bounds[0], bounds[1], unit_source.get("system"),
                            unit_source.get("code"), unit_source.get("unit")))
        elif value.__class__ is not bool:
            number = to_decimal(value)
            if number is not None:
                low, high = precision_range(number)
                out.append((code, low, high, None, None, None))


def _emit_uri(code: str, values: list[Any], rows: IndexRows) -> None:
    """uri/url/canonical values as written."""
    out = rows.uris
    for value in values:
        if value.__class__ is str and value and len(value) <= MAX_KEY_LENGTH:
            out.append((code, value))


EMITTERS: dict[str, Emitter] = {
    "token": _emit_token,
    "string": _emit_string,
    "reference": _emit_reference,
    "date": _emit_date,
    "number": _emit_number,
    "quantity": _emit_quantity,
    "uri": _emit_uri,
}
