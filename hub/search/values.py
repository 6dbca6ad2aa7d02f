"""Value rules shared by extraction (index side) and parsing (query side), so both sides agree
on what a normalised string, a date range or a decimal's implicit precision is.

Dates: every date-like value becomes a half-open UTC range [low, high) covering its precision
("2020" → [2020-01-01, 2021-01-01)). A dateTime or search value without a timezone is taken as
UTC: FHIR says such a value's zone is unknown, and UTC is the hub's one server zone.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import jellyfish

# Sentinels for an open end of a Period (or a range reaching past year 9999). The repository
# may store them as they are (they order correctly as timestamptz) or map them to
# '-infinity' / 'infinity'; the search SQL is correct either way.
DATE_MIN = datetime(1, 1, 1, tzinfo=UTC)
DATE_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

# Open ends of a quantity or number Range (numeric infinity needs PostgreSQL 14+).
NUMBER_MIN = Decimal("-Infinity")
NUMBER_MAX = Decimal("Infinity")

# Longest normalised string kept in idx_string.value_norm / idx_token.text: a btree entry
# must stay under ~2.7 kB, and prefix search on longer text is not useful.
MAX_NORM_LENGTH = 512

_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?$"
)


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Lower-case `text` and strip accents (NFKD, combining marks dropped): how string search
    compares by default ("Zoë" matches "zoe"). Cached: the same names, places and displays
    recur across parameters (name, given, phonetic...) and across resources."""
    if text.isascii():
        folded = text.lower()
    else:
        decomposed = unicodedata.normalize("NFKD", text)
        folded = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return folded[:MAX_NORM_LENGTH]


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The UTC range [low, high) a FHIR date, dateTime or instant covers; None if `text` is not
    one (a time, free text...). Precision: year, month, day, minute, second or fraction."""
    n = len(text)
    try:
        if n == 4:
            year = int(text)
            return _clamped(datetime(year, 1, 1, tzinfo=UTC), _add_years(year, 1))
        if n == 7 and text[4] == "-":
            year, month = int(text[:4]), int(text[5:7])
            low = datetime(year, month, 1, tzinfo=UTC)
            high = _add_years(year, 1) if month == 12 else datetime(year, month + 1, 1, tzinfo=UTC)
            return _clamped(low, high)
        if n == 10 and text[4] == "-" and text[7] == "-":
            low = datetime(int(text[:4]), int(text[5:7]), int(text[8:10]), tzinfo=UTC)
            return _clamped(low, _plus(low, timedelta(days=1)))
    except ValueError:
        return None
    return _date_time_range(text)


def _date_time_range(text: str) -> tuple[datetime, datetime] | None:
    m = _DATE_TIME.match(text)
    if m is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    seconds, fraction = m.group(6), m.group(7)
    if fraction:
        step = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    elif seconds:
        step = timedelta(seconds=1)
    else:
        step = timedelta(minutes=1)
    return moment, _plus(moment, step)


def _add_years(year: int, years: int) -> datetime:
    return DATE_MAX if year + years > 9999 else datetime(year + years, 1, 1, tzinfo=UTC)


def _plus(moment: datetime, step: timedelta) -> datetime:
    try:
        return moment + step
    except OverflowError:
        return DATE_MAX


def _clamped(low: datetime, high: datetime) -> tuple[datetime, datetime]:
    return low, min(high, DATE_MAX)


def to_decimal(value: object) -> Decimal | None:
    """A JSON number as a Decimal keeping its written digits where the parser kept them (a
    float's shortest repr: 1.50 parsed as a float reads back as 1.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float | str):
        try:
            number = Decimal(repr(value) if isinstance(value, float) else value)
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def precision_range(number: Decimal) -> tuple[Decimal, Decimal]:
    """The implicit precision range of `number`: half a unit of its last written digit either
    side (1.5 → [1.45, 1.55), 100 → [99.5, 100.5), 1e2 → [50, 150))."""
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1)
    return number - half, number + half


_WORDS = re.compile(r"[^\W\d_]+")


@lru_cache(maxsize=65536)
def phonetic_keys(text: str) -> tuple[str, ...]:
    """The sound of each word of a name, as its Metaphone key (jellyfish; accents dropped first):
    Smith and Smyth are SM0, Catherine and Kathryn K0RN, Stephen and Steven STFN. How the
    `phonetic` search parameter compares names, on the index side and the query side alike."""
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    keys = (jellyfish.metaphone(word) for word in _WORDS.findall(plain))
    return tuple(key[:MAX_NORM_LENGTH] for key in keys if key)
