"""The summary of a cohort's linked rows as a FHIR `MeasureReport` (type summary): the figures a
commissioner plans with and shows what changed by — people identified, offered, accepted, with a
plan, with a PB/PHB/IPB, reviews on time, spend against budget, outcome measures — and the same
figures as CSV rows for a spreadsheet. Pure functions of the rows `hub.datasets.linked` builds.

Small numbers: a count from 1 to minimum-1 is withheld (the group says so in its text, and has no
count), so a small count cannot be told apart from another; a total or mean over fewer than
`minimum` people is withheld the same way. Each figure is judged on its own (primary
suppression only): where two shown figures differ by a small number (identified and offered, say)
the difference is not withheld; the DPIA records this, and the linked rows carry the same caveat."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from hub.fhir.identifiers import CANONICAL_BASE

MEASURE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/ipc-cohort-measure"
MEASURE = f"{CANONICAL_BASE}/Measure/ipc-cohort-summary"


@dataclass(frozen=True, slots=True)
class Figure:
    """One line of the summary: a count of people, or a sum or mean (`unit`) over `people`."""

    code: str
    words: str
    people: int
    value: Decimal | None = None   # None: the figure is the count of people itself
    unit: str | None = None        # "GBP", "score", "%"


def _count(rows: list[dict[str, str]], test) -> int:
    return sum(1 for r in rows if test(r))


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text) if text not in ("", "*") else None
    except ArithmeticError:
        return None


def figures(rows: list[dict[str, str]]) -> list[Figure]:
    """Every figure of the summary, before suppression, over the people in the cohort now."""
    now = [r for r in rows if not r["left_month"]]
    budgets = [r for r in now if r["budget_gbp"]]
    with_review = [r for r in now if r["review_overdue"]]
    twice = [r for r in now if r["wellbeing_change"]]
    attained = [r for r in now if r["goal_attainment"]]
    due = sum(int(r["reviews_due"] or 0) for r in now)
    held = sum(int(r["reviews_on_time"] or 0) for r in now)

    def total(column: str) -> Decimal:
        return sum((_number(r[column]) or Decimal(0) for r in budgets), Decimal(0))

    def mean(people: list[dict[str, str]], column: str) -> Decimal | None:
        values = [v for v in (_number(r[column]) for r in people) if v is not None]
        return (sum(values, Decimal(0)) / len(values)).quantize(Decimal("0.1"), ROUND_HALF_UP) if values else None

    spent = total("spent_gbp")
    budget = total("budget_gbp")
    return [
        Figure("identified", "people in the cohort now", len(now)),
        Figure("offered", "offered IPC", _count(now, lambda r: r["offer_status"])),
        Figure("accepted", "accepted the offer", _count(now, lambda r: r["offer_status"] in ("accepted", "completed"))),
        Figure("with-plan", "with an active care and support plan", _count(now, lambda r: r["has_plan"] == "yes")),
        Figure("with-budget", "with a PB, PHB or IPB", _count(now, lambda r: bool(r["budget_type"]))),
        Figure("review-in-date", "with an active plan whose review is not overdue",
               _count(with_review, lambda r: r["review_overdue"] == "no")),
        Figure("review-overdue", "with an active plan whose review is overdue",
               _count(with_review, lambda r: r["review_overdue"] == "yes")),
        Figure("reviews-on-time", "reviews held by their due date, of reviews due (%)", len(with_review),
               (Decimal(100) * held / due).quantize(Decimal("0.1"), ROUND_HALF_UP) if due else None, "%"),
        Figure("budget-total", "indicative budgets, total (GBP)", len(budgets), budget, "GBP"),
        Figure("spent-total", "spent from those budgets, total (GBP)", len(budgets), spent, "GBP"),
        Figure("spent-share", "spent against budget (%)", len(budgets),
               (Decimal(100) * spent / budget).quantize(Decimal("0.1"), ROUND_HALF_UP) if budget else None, "%"),
        Figure("wellbeing-measured", "life satisfaction (ONS4) measured twice or more", len(twice)),
        Figure("wellbeing-improved", "life satisfaction improved", _count(twice, lambda r: (_number(r["wellbeing_change"]) or 0) > 0)),
        Figure("wellbeing-change", "mean change in life satisfaction (0-10 scale)", len(twice),
               mean(twice, "wellbeing_change"), "score"),
        Figure("goal-attainment", "mean goal attainment (-2 to +2)", len(attained), mean(attained, "goal_attainment"),
               "score"),
    ]


def withheld(figure: Figure, minimum: int) -> bool:
    """A count of 1..minimum-1 people, or a sum or mean over 1..minimum-1 people (over nobody
    there is nothing to withhold: the figure is a count of 0 and has no value)."""
    return 0 < figure.people < minimum


def report(cohort: str, rows: list[dict[str, str]], minimum: int, today: date) -> dict[str, Any]:
    """The MeasureReport: one group per figure; the count in `population.count`, a sum or mean in
    `measureScore` (a Quantity), a withheld figure with neither and the reason in its text."""
    groups = []
    for figure in figures(rows):
        group: dict[str, Any] = {"code": {"coding": [{"system": MEASURE_SYSTEM, "code": figure.code}],
                                          "text": figure.words}}
        if withheld(figure, minimum):
            group["population"] = [{"code": {"text": f"suppressed: fewer than {minimum}"}}]
        else:
            group["population"] = [{"count": figure.people}]
            if figure.unit is not None and figure.value is not None:
                group["measureScore"] = _quantity(figure.value, figure.unit)
        groups.append(group)
    return {"resourceType": "MeasureReport", "status": "complete", "type": "summary", "measure": MEASURE,
            "subject": {"reference": cohort}, "date": today.isoformat(),
            "period": {"start": today.isoformat(), "end": today.isoformat()}, "group": groups}


def _quantity(value: Decimal, unit: str) -> dict[str, Any]:
    if unit == "GBP":
        return {"value": float(value.quantize(Decimal(1))), "unit": "GBP", "system": "urn:iso:std:iso:4217", "code": "GBP"}
    if unit == "%":
        return {"value": float(value), "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    return {"value": float(value), "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}"}


def read(measure_report: dict[str, Any]) -> list[dict[str, Any]]:
    """A summary MeasureReport back as plain figures: code, words, people (None: withheld),
    value and unit (None when the figure is a count)."""
    out = []
    for group in measure_report.get("group") or ():
        coding = ((group.get("code") or {}).get("coding") or [{}])[0]
        population = (group.get("population") or [{}])[0]
        score = group.get("measureScore") or {}
        out.append({"code": coding.get("code", ""), "words": (group.get("code") or {}).get("text", ""),
                    "people": population.get("count"), "value": score.get("value"), "unit": score.get("unit")})
    return out


def as_csv(reports: list[tuple[str, dict[str, Any]]]) -> str:
    """Every figure of several cohorts' reports, one row each: cohort name, measure, meaning,
    people, value, unit; a withheld figure reads `suppressed`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["cohort", "measure", "meaning", "people", "value", "unit", "date"])
    for name, measure_report in reports:
        for f in read(measure_report):
            people = "suppressed" if f["people"] is None else f["people"]
            value = "" if f["people"] is None or f["value"] is None else f["value"]
            writer.writerow([name, f["code"], f["words"], people, value, f["unit"] or "", measure_report.get("date", "")])
    return out.getvalue()
