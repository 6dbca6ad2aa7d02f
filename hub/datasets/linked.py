"""The linked, de-identified dataset for commissioners: one row per person in a cohort, built
from what the recipient may read of their record. Pure functions: given the records, the rows,
the data dictionary and the summary.

How it is de-identified, and why each step:
- no NHS number, name, address, contact details, identifiers or exact dates leave;
- each person is a **pseudonym**: HMAC-SHA256 under a key that belongs to the recipient, of the
  person's NHS number (or the hub's id where there is none). The same recipient gets the same
  pseudonym for a person in every release, so it can follow them over time; two recipients get
  different pseudonyms, so they cannot join their files;
- dates are **coarsened**: birth date to a five-year age band (90 and over together), every other
  date to its month;
- **small numbers are suppressed**: in the quasi-identifying columns (age band, sex, budget type)
  a value that fewer than `minimum` people share is replaced by `*`, so a rare combination does not
  single a person out; in the summary a count below `minimum` (and not zero) is withheld;
- money is rounded to the nearest £100."""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from hub.fhir.identifiers import CANONICAL_BASE
from hub.money import ledger

NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
SD = f"{CANONICAL_BASE}/StructureDefinition/"
BUDGET_TYPE = SD + "budget-type"
INDICATIVE = SD + "indicative-amount"
PLAN_CATEGORY = f"{CANONICAL_BASE}/CodeSystem/ipc-plan-category"
OFFER_CODE = "offer-ipc"
SUPPRESSED = "*"
QUASI_IDENTIFIERS = ("age_band", "sex", "budget_type")

# The data dictionary: every column, what it means, and how it was derived.
DICTIONARY: list[tuple[str, str, str]] = [
    ("pseudonym", "the person, as this recipient alone can recognise them",
     "HMAC-SHA256 of the NHS number (else the hub's id) under the recipient's own key; first 32 hex digits"),
    ("age_band", "age in five-year bands on the day of release (90+ together)",
     "from Patient.birthDate; '*' where fewer than the minimum share the band"),
    ("sex", "administrative gender", "Patient.gender; '*' where fewer than the minimum share it"),
    ("entered_month", "month the person entered the cohort", "Group.member.period.start, as YYYY-MM"),
    ("left_month", "month the person left the cohort (empty: still in it)", "Group.member.period.end, as YYYY-MM"),
    ("offer_status", "the IPC offer: requested, accepted, rejected, cancelled, completed (empty: none)",
     "the latest offer Task's status"),
    ("has_plan", "an active personalised care and support plan", "CarePlan category care-support-plan, status active"),
    ("plan_start_month", "month the earliest such plan started", "CarePlan.period.start, as YYYY-MM"),
    ("budget_type", "personal budget, personal health budget or integrated personal budget",
     "budget statement's budget-type code; '*' where fewer than the minimum share it"),
    ("budget_gbp", "indicative budget, nearest £100", "sum of budget statements' indicative-amount"),
    ("spent_gbp", "spent so far, nearest £100", "the spend lines paid out less refunds (hub.money.ledger)"),
    ("goals", "goals in the plan", "count of the person's Goals"),
    ("goals_achieved", "goals achieved", "Goal.achievementStatus achieved"),
]
COLUMNS = [name for name, _, _ in DICTIONARY]


@dataclass(slots=True)
class Person:
    """What the dataset reads of one person (only what the recipient may see)."""

    id: str
    patient: dict[str, Any] | None = None
    member: dict[str, Any] = field(default_factory=dict)
    plans: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    offers: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)  # spend lines (ChargeItem)


@dataclass(slots=True)
class Dataset:
    rows: list[dict[str, str]]
    suppressed: int
    csv: str
    dictionary: str


def pseudonym(key: bytes, patient: dict[str, Any], fallback_id: str) -> str:
    nhs = next((i.get("value") for i in patient.get("identifier") or () if i.get("system") == NHS_NUMBER
                and i.get("value")), None)
    subject = f"nhs:{nhs}" if nhs else f"id:{fallback_id}"
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()[:32]


def age_band(birth: str | None, today: date) -> str:
    if not birth or len(birth) < 4:
        return ""
    parts = birth[:10].split("-")
    year = int(parts[0])
    born_month = int(parts[1]) if len(parts) > 1 else 7  # a year alone: taken as mid-year
    born_day = int(parts[2]) if len(parts) > 2 else 1
    age = today.year - year - ((today.month, today.day) < (born_month, born_day))
    if age >= 90:
        return "90+"
    low = max(age, 0) // 5 * 5
    return f"{low}-{low + 4}"


def month(value: str | None) -> str:
    return value[:7] if value and len(value) >= 7 else ""


def _gbp(amount: Decimal) -> str:
    return str(int((amount / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP) * 100))


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str((value or {}).get("value", 0)))
    except ArithmeticError:
        return Decimal(0)


def _is_budget(plan: dict[str, Any]) -> bool:
    return any(e.get("url") == BUDGET_TYPE for e in plan.get("extension") or ())


def _category(plan: dict[str, Any]) -> set[str]:
    return {c.get("code") for cc in plan.get("category") or () for c in cc.get("coding") or ()
            if c.get("system") == PLAN_CATEGORY}


def row(person: Person, key: bytes, today: date) -> dict[str, str]:
    patient = person.patient or {}
    plans = [p for p in person.plans if "care-support-plan" in _category(p) and p.get("status") == "active"]
    budgets = [p for p in person.plans if _is_budget(p) and p.get("status") in ("active", "completed")]
    types = sorted({c.get("code", "") for b in budgets for e in b.get("extension") or () if e.get("url") == BUDGET_TYPE
                    for c in (e.get("valueCodeableConcept") or {}).get("coding") or ()})
    budget = sum((_money(e.get("valueMoney")) for b in budgets for e in b.get("extension") or ()
                  if e.get("url") == INDICATIVE), Decimal(0))
    # Spend is never typed into a statement (issue 14): it is what the spend lines paid out, less
    # what payees paid back, as the budget position computes it (hub.money.ledger).
    booked = [line for line in map(ledger.line_of, person.lines) if line is not None]
    spent = (sum((line.amount for line in booked if line.kind == "spend"), Decimal(0))
             - sum((line.amount for line in booked if line.kind == "refund"), Decimal(0)))
    starts = sorted(month((p.get("period") or {}).get("start")) for p in plans if (p.get("period") or {}).get("start"))
    offers = sorted(person.offers, key=lambda t: t.get("authoredOn", ""))
    achieved = sum(1 for g in person.goals for c in (g.get("achievementStatus") or {}).get("coding") or ()
                   if c.get("code") == "achieved")
    period = person.member.get("period") or {}
    return {
        "pseudonym": pseudonym(key, patient, person.id),
        "age_band": age_band(patient.get("birthDate"), today),
        "sex": patient.get("gender", ""),
        "entered_month": month(period.get("start")),
        "left_month": month(period.get("end")),
        "offer_status": offers[-1].get("status", "") if offers else "",
        "has_plan": "yes" if plans else "no",
        "plan_start_month": starts[0] if starts else "",
        "budget_type": "+".join(types),
        "budget_gbp": _gbp(budget) if budgets else "",
        "spent_gbp": _gbp(spent) if budgets else "",
        "goals": str(len(person.goals)),
        "goals_achieved": str(achieved),
    }


def suppress(rows: list[dict[str, str]], minimum: int) -> int:
    """Replace, in each quasi-identifying column, the values fewer than `minimum` rows share by
    `*`. Returns how many values were replaced."""
    replaced = 0
    for column in QUASI_IDENTIFIERS:
        counts = Counter(r[column] for r in rows)
        for r in rows:
            if r[column] and counts[r[column]] < minimum:
                r[column] = SUPPRESSED
                replaced += 1
    return replaced


def build(people: list[Person], key: bytes, minimum: int, today: date) -> Dataset:
    rows = sorted((row(p, key, today) for p in people), key=lambda r: r["pseudonym"])
    replaced = suppress(rows, minimum)
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    words = io.StringIO()
    dictionary = csv.writer(words, lineterminator="\n")
    dictionary.writerow(["column", "meaning", "derivation"])
    dictionary.writerows(DICTIONARY)
    return Dataset(rows, replaced, out.getvalue(), words.getvalue())


def summary(cohort: str, rows: list[dict[str, str]], minimum: int, today: date) -> dict[str, Any]:
    """A MeasureReport of the cohort's counts (before a row-level look): identified, offered,
    accepted, with a plan, with a budget. A count from 1 to minimum-1 is withheld (the group
    says so in its text), so a small count cannot be told apart."""
    current = [r for r in rows if not r["left_month"]]
    counts = [
        ("identified", "people in the cohort now", len(current)),
        ("offered", "offered IPC", sum(1 for r in current if r["offer_status"])),
        ("accepted", "accepted the offer", sum(1 for r in current if r["offer_status"] in ("accepted", "completed"))),
        ("with-plan", "with an active care and support plan", sum(1 for r in current if r["has_plan"] == "yes")),
        ("with-budget", "with a PB, PHB or IPB", sum(1 for r in current if r["budget_type"])),
    ]
    groups = []
    for code, words, n in counts:
        group: dict[str, Any] = {"code": {"coding": [{"system": f"{CANONICAL_BASE}/CodeSystem/ipc-cohort-measure",
                                                      "code": code}], "text": words}}
        if 0 < n < minimum:
            group["population"] = [{"code": {"text": f"suppressed: fewer than {minimum}"}}]
        else:
            group["population"] = [{"count": n}]
        groups.append(group)
    return {"resourceType": "MeasureReport", "status": "complete", "type": "summary",
            "measure": f"{CANONICAL_BASE}/Measure/ipc-cohort-summary",
            "subject": {"reference": cohort}, "date": today.isoformat(),
            "period": {"end": today.isoformat()}, "group": groups}
