"""The cost of care, for one person or a cohort, for any periods (before and after a personal
budget), by funder and setting. The one function commissioners' reports call:

    table = await cost_of_care(conn, patient_ids, [("before", d1, d2), ("after", d3, d4)], access=access)
    table.total("after"), table.per_week("after"), table.by("after")  # {(funder, setting): amount}

What is counted, per period (each fact on the day it happened):
- **spend lines and invoices** (ChargeItem: direct payment and support service statements,
  continuing healthcare and other providers' invoices, lines written over the API): spend less
  refunds, by the line's funder and setting (home and community when it names none); money
  returned or clawed back is not a cost;
- **NHS hospital activity**: encounters from the feeds (admissions, A&E attendances, outpatient
  attendances) priced by the activity tariff in force on the day (hub/money/tariff.py), funder NHS;
- **allocations without lines** (a council's or the NHS's commissioned support, a notional budget
  nobody sends lines for, education money where known): the account's allocation spread evenly
  over its period, counted for the days of the period that fall in the query's, in home and
  community.
A person's cost is the same function with a cohort of one. Aggregated in SQL (hub/store/money),
so a cohort of 100,000 is a handful of statements (`make bench`, section `money`)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from psycopg import AsyncConnection

from hub.money.tariff import SETTING, TARIFF_PROFILE, Tariffs
from hub.search.access import Access
from hub.store import money as money_store

PENNY = Decimal("0.01")
ALLOCATION_SETTING = "home-and-community"


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass
class CostTable:
    periods: list[Period]
    people: int | None  # the cohort's size (None: everyone the caller may see)
    # (period label, funder, setting) → amount
    amounts: dict[tuple[str, str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    # (period label, what) → count: hospital activities priced, lines counted, accounts spread
    counts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    unpriced: int = 0  # encounters no tariff covered

    def by(self, label: str) -> dict[tuple[str, str], Decimal]:
        return {(f, s): v.quantize(PENNY, ROUND_HALF_UP) for (lab, f, s), v in sorted(self.amounts.items())
                if lab == label and v}

    def by_funder(self, label: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = defaultdict(Decimal)
        for (funder, _), value in self.by(label).items():
            out[funder] += value
        return dict(out)

    def by_setting(self, label: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = defaultdict(Decimal)
        for (_, setting), value in self.by(label).items():
            out[setting] += value
        return dict(out)

    def total(self, label: str) -> Decimal:
        return sum(self.by(label).values(), Decimal("0.00"))

    def per_week(self, label: str) -> Decimal:
        """The period's cost a week (as the Nottinghamshire stories quote before and after)."""
        period = next(p for p in self.periods if p.label == label)
        return (self.total(label) * 7 / period.days).quantize(PENNY, ROUND_HALF_UP)

    def parameters(self) -> dict[str, Any]:
        """As a FHIR Parameters resource (the `$cost-of-care` answer)."""
        out: list[dict[str, Any]] = []
        for period in self.periods:
            parts: list[dict[str, Any]] = [
                {"name": "label", "valueString": period.label},
                {"name": "start", "valueDate": period.start.isoformat()},
                {"name": "end", "valueDate": period.end.isoformat()},
                {"name": "total", "valueMoney": _money(self.total(period.label))},
                {"name": "perWeek", "valueMoney": _money(self.per_week(period.label))}]
            for (funder, setting), amount in self.by(period.label).items():
                parts.append({"name": "cost", "part": [{"name": "funder", "valueCode": funder},
                                                       {"name": "setting", "valueCode": setting},
                                                       {"name": "amount", "valueMoney": _money(amount)}]})
            out.append({"name": "period", "part": parts})
        if self.unpriced:
            out.append({"name": "unpricedEncounters", "valueInteger": self.unpriced})
        return {"resourceType": "Parameters", "parameter": out}


def _money(value: Decimal) -> dict[str, Any]:
    from hub.fhir.jsontext import FhirDecimal
    return {"value": FhirDecimal(f"{value:.2f}"), "currency": "GBP"}


async def cost_of_care(conn: AsyncConnection, patient_ids: list[str] | None, periods: list[tuple[str, date, date]],
                       *, access: Access) -> CostTable:
    """The cost of care of these people (None: everyone `access` may see) in each labelled
    period, by funder and setting, as far as `access` may see their records."""
    wanted = [Period(label, start, end) for label, start, end in periods]
    table = CostTable(wanted, None if patient_ids is None else len(patient_ids))
    spans = [(p.label, p.start, p.end) for p in wanted]
    for label, funder, setting, kind, total, lines in await money_store.line_totals(conn, patient_ids, spans,
                                                                                     access=access):
        amount = Decimal(total)
        if kind == "refund":
            table.amounts[(label, funder, setting)] -= amount
        elif kind == "spend":
            table.amounts[(label, funder, setting)] += amount
        table.counts[(label, "lines")] += lines
    tariffs = Tariffs(await money_store.definitions(conn, TARIFF_PROFILE))
    for label, class_code, priority, day, count in await money_store.encounter_counts(conn, patient_ids, spans,
                                                                                       access=access):
        price = tariffs.price(class_code, tuple(priority), day)
        if price is None:
            table.unpriced += count
            continue
        table.amounts[(label, "nhs", SETTING[price.activity])] += price.amount * count
        table.counts[(label, price.activity)] += count
    for funder, _option, allocated, status, start, end in await money_store.unspent_accounts(conn, patient_ids,
                                                                                            access=access):
        if start is None or end is None or end < start:
            continue
        per_day = Decimal(allocated) / ((end - start).days + 1)
        for period in wanted:
            overlap = (min(end, period.end) - max(start, period.start)).days + 1
            if overlap > 0:
                table.amounts[(period.label, funder or "other", ALLOCATION_SETTING)] += per_day * overlap
                table.counts[(period.label, "accounts")] += 1
    return table
