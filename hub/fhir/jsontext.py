"""FHIR JSON text in and out with decimals kept exact.

FHIR says a decimal's precision is part of its value (1.50 is not 1.5) and a float cannot keep
it, so every decimal the hub reads becomes a `FhirDecimal`: a `decimal.Decimal` that remembers
the text it was written with (plain Decimal would turn "0.0000001" into "1E-7"). `dumps`
writes those digits back verbatim. Every body the hub stores goes through `loads` and `dumps`;
reads serve the stored text without parsing it at all."""
from __future__ import annotations

import decimal
import json
import re
from typing import Any

import orjson

# The FHIR decimal grammar, which is also exactly the JSON number grammar: a decimal's
# text can therefore be written into JSON verbatim.
DECIMAL_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class FhirDecimal(decimal.Decimal):
    """A FHIR decimal that keeps the exact text it was written with ("1.50", "1e-7").

    Numerically it is the Decimal of that text (so pydantic, arithmetic and comparisons
    work as usual, and FhirDecimal("1.50") == FhirDecimal("1.5")); `str()` and
    `json_default` give back the original digits so precision survives a round trip.
    """

    __slots__ = ("_text",)
    _text: str

    def __new__(cls, text: str) -> FhirDecimal:
        # Decimal() also accepts " 1.5", "1_000" or "NaN"; the kept text must be a JSON number.
        if not isinstance(text, str) or not DECIMAL_TEXT.fullmatch(text):
            raise ValueError(f"not a FHIR decimal: {text!r}")
        number = super().__new__(cls, text)
        number._text = text
        return number

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"FhirDecimal({self._text!r})"

    def __reduce__(self) -> tuple[type[FhirDecimal], tuple[str]]:
        return (FhirDecimal, (self._text,))

    def __copy__(self) -> FhirDecimal:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FhirDecimal:
        return self


def json_default(value: Any) -> orjson.Fragment:
    """orjson `default=` hook writing decimals as JSON numbers with their exact digits.

    Use as `orjson.dumps(resource, default=json_default)`.
    """
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return orjson.Fragment(str(value))  # finite Decimal text is always a JSON number
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")




def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number FHIR allows")


def loads(data: bytes | str) -> Any:
    """Parse JSON, decimals as FhirDecimal; NaN and Infinity are refused (ValueError)."""
    return json.loads(data, parse_float=FhirDecimal, parse_constant=_no_constants)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"the property '{twice[:60]}' appears more than once in one object")
    return obj


def parse(data: bytes) -> Any:
    """Parse a body from outside as FHIR JSON (json.html): UTF-8 only (a leading byte order mark
    is allowed), no property twice in one object, decimals as FhirDecimal. ValueError with the
    reason otherwise, including nesting too deep to parse."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text.removeprefix("\ufeff"), parse_float=FhirDecimal, parse_constant=_no_constants,
                          object_pairs_hook=_unique)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    """Serialise JSON compactly (or indented), decimals with their exact digits."""
    return orjson.dumps(value, default=json_default, option=orjson.OPT_INDENT_2 if pretty else 0)


def union(first: list | None, second: list | None) -> list:
    """`first`, then each item of `second` not already there, compared as JSON text (FHIR
    elements have no identity but their content): for merging lists from two sources."""
    out = list(first or [])
    seen = {dumps(item) for item in out}
    for item in second or []:
        text = dumps(item)
        if text not in seen:
            out.append(item)
            seen.add(text)
    return out
