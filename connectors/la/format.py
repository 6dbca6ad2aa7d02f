"""The local authority extract format: which files, which columns, which code values.

This is the contract with the councils (documented for people in `README.md` beside it): CLD's
column names and code values wherever the Adult Social Care Client Level Data return has them,
and a few columns of our own where the shared record needs more than CLD carries (names, the
carer's link to the person cared for). Checking a row is pure and cheap, because it runs a
million times per extract: each column has one small check that returns the reason it fails."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from hub.fhir.identifiers import is_valid_nhs_number

Check = Callable[[str], str | None]  # the reason a non-empty value is wrong, or None


# --- code lists (CLD values, spelled as CLD spells them) -----------------------------------

GENDERS = frozenset({"Male", "Female", "Other", "Unknown"})
CLIENT_TYPES = frozenset({"Service User", "Carer"})
EVENT_TYPES = frozenset({"Request", "Assessment", "Review", "Service"})
SERVICE_TYPES = frozenset({
    "Long Term Support: Nursing Care", "Long Term Support: Residential Care",
    "Long Term Support: Community", "Long Term Support: Prison",
    "Short Term Support: ST-Max", "Short Term Support: Ongoing Low Level",
    "Short Term Support: Other Short Term",
    "Carer Support: Direct to Carer", "Carer Support: Support involving the person cared-for",
})
SERVICE_COMPONENTS = frozenset({
    "Home Support", "Supported Living", "Day Care", "Respite", "Short Break", "Equipment",
    "Adaptations", "Meals", "Transport", "Telecare", "Employment Support", "Residential Care",
    "Nursing Care", "Shared Lives", "Extra Care Housing", "Community Activities",
    "Direct Payment", "Carer Break", "Information and Advice",
})
DELIVERY_MECHANISMS = frozenset({
    "Direct Payment", "CASSR Managed Personal Budget", "CASSR Commissioned Support only",
})
COST_FREQUENCIES = frozenset({
    "Hourly", "Daily", "Per session", "Weekly", "Fortnightly", "4 Weekly", "Monthly",
    "Quarterly", "Annually", "One-off",
})
EVENT_OUTCOMES = frozenset({
    "Progress to Reablement/ST-Max", "Progress to Assessment", "Admitted to Hospital",
    "Progress to Re-assessment / Unplanned Review", "Progress to Support Planning / Services",
    "Progress to End of Life Care", "No change in package", "Service ended as planned",
    "Progress to financial assessment", "Provision of service", "NFA - Deceased",
    "NFA - Moved to another LA", "NFA - 100% NHS-funded care",
    "NFA - Information & Advice / Signposting only", "NFA - Self-funded client (inc. 12wk disregard)",
    "NFA - Support declined", "NFA - Support ended - other reason",
    "NFA - No services offered - other reason", "NFA - Other",
})
# Not in CLD (which has no carer-to-person link): ours.
RELATIONSHIPS = frozenset({"Spouse/Partner", "Parent", "Son/Daughter", "Other relative",
                           "Friend/Neighbour", "Other"})
YES_NO = frozenset({"Y", "N"})


# --- value checks ------------------------------------------------------------------------

_LA_CODE = re.compile(r"^[EW]\d{8}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_POSTCODE = re.compile(r"^[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}$")
_MONEY = re.compile(r"^\d{1,7}(\.\d{1,2})?$")
_UNITS = re.compile(r"^\d{1,3}(\.\d{1,2})?$")
_EARLIEST = date(1900, 1, 1)


class one_of:
    """A code-list check; check_row tests membership itself (no call per value) and asks for
    the reason only when a value is not in the list."""

    def __init__(self, codes: frozenset[str]) -> None:
        self.codes = codes
        self._shown = ", ".join(sorted(codes)) if len(codes) <= 8 else f"one of the {len(codes)} values in the README"

    def __call__(self, v: str) -> str | None:
        return None if v in self.codes else f"{v!r} is not a known code (expected {self._shown})"


def matching(pattern: str, reason: str) -> Check:
    """A check that a value matches `pattern` (anchored by the caller), failing with `reason`:
    the shape of the id and code columns every CSV file connector declares."""
    compiled = re.compile(pattern)

    def check(v: str) -> str | None:
        return None if compiled.match(v) else reason

    return check


def check_la_code(v: str) -> str | None:
    return None if _LA_CODE.match(v) else f"{v!r} is not an ONS local authority code (E or W and 8 digits)"


check_local_id = matching(r"^[A-Za-z0-9][A-Za-z0-9\-./_]{0,39}$", "not a local id (1-40 letters, digits, - . / _)")
# Activity element ids in the plan are built from it: FHIR element ids allow only these.
check_event_ref = matching(r"^[A-Za-z0-9][A-Za-z0-9\-.]{0,49}$", "not an event reference (1-50 letters, digits, - .)")


def check_nhs_number(v: str) -> str | None:
    if not (len(v) == 10 and v.isdigit()):
        return "an NHS number is 10 digits, without spaces"
    return None if is_valid_nhs_number(v) else "the NHS number fails the Modulus 11 check"


def check_date(v: str) -> str | None:
    if not (len(v) == 10 and _DATE.match(v)):
        return f"{v!r} is not a date as YYYY-MM-DD"
    try:
        parsed = date.fromisoformat(v)
    except ValueError:
        return f"{v!r} is not a calendar date"
    return None if parsed >= _EARLIEST else f"{v!r} is before 1900"


def check_postcode(v: str) -> str | None:
    return None if _POSTCODE.match(v) else f"{v!r} is not a UK postcode in capitals"


def check_money(v: str) -> str | None:
    return None if _MONEY.match(v) else f"{v!r} is not an amount in pounds (e.g. 22.50)"


def check_units(v: str) -> str | None:
    return None if _UNITS.match(v) else f"{v!r} is not a number of units (e.g. 10 or 2.5)"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_text(v: str) -> str | None:
    if len(v) > 100:
        return "longer than 100 characters"
    return "contains a line break or control character" if _CONTROL.search(v) else None


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    required: bool
    check: Check


@dataclass(frozen=True, slots=True)
class FileKind:
    """One kind of extract file: its columns (in the order the README gives), the envelope
    kind its rows travel as, and the column naming the person the rows are about."""
    name: str
    envelope_kind: str
    columns: tuple[Column, ...]
    person_column: str
    rule: Callable[[dict[str, str]], tuple[str, str] | None]  # cross-column: (column, reason)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _person_rule(row: dict[str, str]) -> tuple[str, str] | None:
    born, died = row.get("Date_of_Birth"), row.get("Date_of_Death")
    if born and died and died < born:
        return "Date_of_Death", "the date of death is before the date of birth"
    return None


def _carer_rule(row: dict[str, str]) -> tuple[str, str] | None:
    if row["Carer_LA_Person_Unique_Identifier"] == row["Cared_For_LA_Person_Unique_Identifier"]:
        return "Cared_For_LA_Person_Unique_Identifier", "a carer cannot be their own cared-for person"
    if row["Carer_Assessed"] == "Y" and not row["Carer_Assessment_Date"]:
        return "Carer_Assessment_Date", "an assessed carer needs the date of the assessment"
    if row["Carer_Assessed"] == "N" and row["Carer_Assessment_Date"]:
        return "Carer_Assessment_Date", "a date of assessment for a carer marked not assessed"
    return None


_SERVICE_ONLY = ("Service_Type", "Service_Component", "Delivery_Mechanism", "Unit_Cost",
                 "Cost_Frequency_Unit_Type", "Planned_units_per_week")


def _event_rule(row: dict[str, str]) -> tuple[str, str] | None:
    start, end = row["Event_Start_Date"], row["Event_End_Date"]
    if end and end < start:
        return "Event_End_Date", "the event ends before it starts"
    if row["Event_Type"] == "Service":
        for name in _SERVICE_ONLY:
            if not row[name]:
                return name, "a Service event needs this column"
        if row["Cost_Frequency_Unit_Type"] == "One-off" and row["Planned_units_per_week"] not in ("0", "1"):
            return "Planned_units_per_week", "a one-off cost has 1 (or 0) planned units"
    else:
        for name in _SERVICE_ONLY:
            if row[name]:
                return name, f"only Service events have this column (this is a {row['Event_Type']})"
    return None


def _col(name: str, required: bool, check: Check) -> Column:
    return Column(name, required, check)


_PERSON_DETAILS = (
    _col("NHS_Number", False, check_nhs_number),
    _col("Given_Name", False, check_text),
    _col("Family_Name", True, check_text),
    _col("Date_of_Birth", False, check_date),
    _col("Gender", False, one_of(GENDERS)),
    _col("Postcode", False, check_postcode),
)

PEOPLE = FileKind("people", "la-cld-person", (
    _col("LA_Code", True, check_la_code),
    _col("LA_Person_Unique_Identifier", True, check_local_id),
    *_PERSON_DETAILS,
    _col("Date_of_Death", False, check_date),
), "LA_Person_Unique_Identifier", _person_rule)

CARERS = FileKind("carers", "la-cld-carer", (
    _col("LA_Code", True, check_la_code),
    _col("Carer_LA_Person_Unique_Identifier", True, check_local_id),
    _col("Cared_For_LA_Person_Unique_Identifier", True, check_local_id),
    _col("Relationship_To_Cared_For", True, one_of(RELATIONSHIPS)),
    _col("Carer_Assessed", True, one_of(YES_NO)),
    _col("Carer_Assessment_Date", False, check_date),
    *_PERSON_DETAILS,
), "Cared_For_LA_Person_Unique_Identifier", _carer_rule)

EVENTS = FileKind("events", "la-cld-events", (
    _col("LA_Code", True, check_la_code),
    _col("Event_Reference", True, check_event_ref),
    _col("LA_Person_Unique_Identifier", True, check_local_id),
    _col("Client_Type", True, one_of(CLIENT_TYPES)),
    _col("Event_Type", True, one_of(EVENT_TYPES)),
    _col("Event_Start_Date", True, check_date),
    _col("Event_End_Date", False, check_date),
    _col("Event_Outcome", False, one_of(EVENT_OUTCOMES)),
    _col("Service_Type", False, one_of(SERVICE_TYPES)),
    _col("Service_Component", False, one_of(SERVICE_COMPONENTS)),
    _col("Delivery_Mechanism", False, one_of(DELIVERY_MECHANISMS)),
    _col("Unit_Cost", False, check_money),
    _col("Cost_Frequency_Unit_Type", False, one_of(COST_FREQUENCIES)),
    _col("Planned_units_per_week", False, check_units),
), "LA_Person_Unique_Identifier", _event_rule)

KINDS = (PEOPLE, CARERS, EVENTS)  # also the order an extract is published in
_BY_ENVELOPE_KIND = {k.envelope_kind: k for k in KINDS}


def by_envelope_kind(kind: str) -> FileKind | None:
    return _BY_ENVELOPE_KIND.get(kind)


class HeaderError(ValueError):
    """A header that does not name one kind of extract file exactly: the file is refused whole."""


def kind_of_header(header: list[str], kinds: tuple[FileKind, ...] = KINDS) -> FileKind:
    """The kind of file a header names; every column present, none unknown, none twice. `kinds`:
    the kinds a file may be (a council extract's by default; other CSV connectors give theirs)."""
    names = [h.strip() for h in header]
    present = set(names)
    if not any(names):
        raise HeaderError("the first line is not a header (it is empty)")
    best = max(kinds, key=lambda k: len(present & set(k.names)))
    if not present & set(best.names) - {"LA_Code"}:
        words = [k.name for k in kinds]
        named = ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]
        raise HeaderError(f"the header names none of the columns of a {named} file")
    twice = sorted({n for n in names if names.count(n) > 1})
    missing = [n for n in best.names if n not in present]
    unknown = [n for n in names if n not in best.names]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unknown:
        problems.append("unknown " + ", ".join(repr(n) for n in unknown))
    if twice:
        problems.append("repeated " + ", ".join(twice))
    if problems:
        raise HeaderError(f"not a valid {best.name} file header: " + "; ".join(problems))
    return best


@lru_cache(maxsize=64)
def _plan(kind: FileKind, positions: tuple[int, ...]) -> tuple[tuple[str, int, bool, frozenset[str] | None, Check], ...]:
    """Per file: each column's name, position, whether required, code list (if one) and check."""
    return tuple((c.name, at, c.required, c.check.codes if isinstance(c.check, one_of) else None, c.check)
                 for c, at in zip(kind.columns, positions, strict=True))


def check_row(kind: FileKind, positions: tuple[int, ...], fields: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The row as {column: value} (trimmed) and every (column, reason) it breaks. `positions`
    gives where each of the kind's columns sits in the file's own column order. The hot path
    of an import (a million calls): code lists are tested by membership, without a call."""
    row: dict[str, str] = {}
    errors: list[tuple[str, str]] = []
    for name, at, required, codes, check in _plan(kind, positions):
        value = fields[at].strip()
        row[name] = value
        if not value:
            if required:
                errors.append((name, "required, but empty"))
        elif codes is not None:
            if value not in codes:
                errors.append((name, check(value)))  # type: ignore[arg-type]
        elif (reason := check(value)) is not None:
            errors.append((name, reason))
    if not errors and (broken := kind.rule(row)) is not None:
        errors.append(broken)
    return row, errors
