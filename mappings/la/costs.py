"""What a person's social care services cost: per service and per year, from CLD's unit cost,
cost frequency (unit type) and planned units per week.

A service's yearly cost is unit cost × planned units × how many periods of its unit type fall
in a year (52 for hourly, daily, per-session and weekly units, whose planned units are per
week; 26 fortnightly, 13 four-weekly, 12 monthly, 4 quarterly, 1 annually, where the planned
units are read as units per period, normally 1). A one-off cost counts once. The budget
statement covers a year from the first service's start; each service counts for the part of
that year it runs. Money is Decimal, rounded to pence per service, never float."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hub.fhir.errors import FhirError

PERIODS_PER_YEAR = {
    "Hourly": 52, "Daily": 52, "Per session": 52, "Weekly": 52, "Fortnightly": 26, "4 Weekly": 13,
    "Monthly": 12, "Quarterly": 4, "Annually": 1,
}
ONE_OFF = "One-off"
YEAR_DAYS = 365
PENNY = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class ServiceCost:
    weekly: Decimal  # what the service costs in a week it runs (0 for a one-off)
    in_year: Decimal  # what it costs within the statement year


def statement_year(first_start: date) -> tuple[date, date]:
    return first_start, first_start + timedelta(days=YEAR_DAYS - 1)


def service_cost(unit_cost: str, frequency: str, units: str, start: date, end: date | None,
                 year: tuple[date, date]) -> ServiceCost:
    try:
        cost, planned = Decimal(unit_cost), Decimal(units)
    except ArithmeticError:
        raise FhirError("value", "LA extract: Unit_Cost and Planned_units_per_week must be numbers") from None
    if frequency == ONE_OFF:
        inside = year[0] <= start <= year[1]
        return ServiceCost(Decimal("0.00"), (cost * max(planned, Decimal(1))).quantize(PENNY) if inside else Decimal("0.00"))
    periods = PERIODS_PER_YEAR.get(frequency)
    if periods is None:
        raise FhirError("code-invalid", f"LA extract: Cost_Frequency_Unit_Type {frequency!r} is not known")
    yearly = cost * planned * periods
    first, last = max(start, year[0]), min(end or year[1], year[1])
    days = max(0, (last - first).days + 1)
    return ServiceCost((yearly / 52).quantize(PENNY, ROUND_HALF_UP),
                       (yearly * days / YEAR_DAYS).quantize(PENNY, ROUND_HALF_UP))
