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
- money is rounded to the nearest £100;
- outcome scores are the guide's unlicensed, numeric measures only (ONS4 life satisfaction, goal
  attainment scaling): a licensed instrument's items are counted, never scored here.

The summary of the rows (a MeasureReport) is `hub/datasets/summary.py`."""
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
from hub.plans import followups, reviews
from hub.plans.model import OUTCOME_SYSTEM, PLAN_TASK_SYSTEM, code_in, next_review

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
    ("spent_gbp", "spent so far, nearest £100 (empty: the recipient may not read spend lines)",
     "the spend lines paid out less refunds (hub.money.ledger)"),
    ("goals", "goals in the plan", "count of the person's Goals"),
    ("goals_achieved", "goals achieved", "Goal.achievementStatus achieved"),
    ("next_review_month", "month the active plan's next review is due", "the plan's next-review-date, as YYYY-MM"),
    ("review_overdue", "whether the active plan's review is overdue (empty: no active plan with a review date)",
     "'yes' when the plan's next-review-date is before the day of release, else 'no'"),
    ("reviews_due", "plan reviews that fell due up to the day of release",
     "review Tasks (ipc-plan-task plan-review) due on or before that day, not cancelled"),
    ("reviews_on_time", "of those, reviews held on or before their due date",
     "review Tasks completed by a finished review meeting (Encounter type plan-review) held by the Task's due date"),
    ("outcome_measures", "outcome measures recorded", "count of outcome Observations (ipc-outcome-measure codes)"),
    ("wellbeing_first", "first ONS4 life satisfaction score (0-10)", "earliest ons4-life-satisfaction Observation"),
    ("wellbeing_latest", "latest ONS4 life satisfaction score (0-10)", "latest ons4-life-satisfaction Observation"),
    ("wellbeing_change", "latest minus first life satisfaction score (empty: measured fewer than twice)",
     "wellbeing_latest - wellbeing_first"),
    ("goal_attainment", "mean goal attainment (-2 much less than expected .. +2 much more), one decimal",
     "mean over the person's goals of each goal's latest gas-attainment Observation"),
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
    lines: list[dict[str, Any]] | None = field(default_factory=list)  # spend lines (None: may not read)
    reviews: list[dict[str, Any]] = field(default_factory=list)  # review Tasks of their plans
    meetings: list[dict[str, Any]] = field(default_factory=list)  # review meetings (Encounter)
    measures: list[dict[str, Any]] = field(default_factory=list)  # outcome Observations


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
    booked = [line for line in map(ledger.line_of, person.lines or ()) if line is not None]
    spent = (sum((line.amount for line in booked if line.kind == "spend"), Decimal(0))
             - sum((line.amount for line in booked if line.kind == "refund"), Decimal(0)))
    starts = sorted(month((p.get("period") or {}).get("start")) for p in plans if (p.get("period") or {}).get("start"))
    offers = sorted(person.offers, key=lambda t: t.get("authoredOn", ""))
    achieved = sum(1 for g in person.goals for c in (g.get("achievementStatus") or {}).get("coding") or ()
                   if c.get("code") == "achieved")
    period = person.member.get("period") or {}
    due = next((next_review(p) for p in plans if next_review(p)), None)
    due_day = reviews.as_day(due)
    reviews_due, on_time = review_counts(person, today)
    first, latest, change = wellbeing(person.measures)
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
        "spent_gbp": _gbp(spent) if budgets and person.lines is not None else "",
        "goals": str(len(person.goals)),
        "goals_achieved": str(achieved),
        "next_review_month": month(due),
        "review_overdue": "" if due_day is None else ("yes" if due_day < today else "no"),
        "reviews_due": str(reviews_due),
        "reviews_on_time": str(on_time),
        "outcome_measures": str(sum(1 for o in person.measures if _measure(o))),
        "wellbeing_first": first,
        "wellbeing_latest": latest,
        "wellbeing_change": change,
        "goal_attainment": goal_attainment(person.measures),
    }


def is_review_task(task: dict[str, Any]) -> bool:
    return code_in(task.get("code"), PLAN_TASK_SYSTEM) == "plan-review"


def review_counts(person: Person, today: date) -> tuple[int, int]:
    """(reviews due by `today`, of which held on time). A review Task is raised for each due date
    of a plan; the plan worker completes it with the finished review meeting as its output, and
    cancels it when the plan's due date moves (a stale Task is not a review that fell due)."""
    meetings = {f"Encounter/{m.get('id')}": m for m in person.meetings
                if followups.is_review_meeting(m) and m.get("status") == "finished"}
    due = on_time = 0
    for task in person.reviews:
        if not is_review_task(task) or task.get("status") in ("cancelled", "entered-in-error", "rejected"):
            continue
        day = reviews.as_day(((task.get("restriction") or {}).get("period") or {}).get("end"))
        if day is None or day > today:
            continue
        due += 1
        if task.get("status") != "completed":
            continue
        for output in task.get("output") or ():
            meeting = meetings.get((output.get("valueReference") or {}).get("reference", ""))
            held = reviews.as_day(followups.meeting_day(meeting)) if meeting else None
            if held is not None and held <= day:
                on_time += 1
                break
    return due, on_time


def _measure(observation: dict[str, Any]) -> str | None:
    """The outcome measure an Observation records (its ipc-outcome-measure code), if any."""
    if observation.get("status") in ("entered-in-error", "cancelled"):
        return None
    return code_in(observation.get("code"), OUTCOME_SYSTEM)


def _score(observation: dict[str, Any]) -> Decimal | None:
    quantity = observation.get("valueQuantity") or {}
    try:
        return Decimal(str(quantity["value"])) if "value" in quantity else None
    except ArithmeticError:
        return None


def _scores(measures: list[dict[str, Any]], code: str) -> list[tuple[str, dict[str, Any], Decimal]]:
    """(when, observation, score) of one measure, oldest first."""
    found = [(str(o.get("effectiveDateTime") or ""), o, _score(o)) for o in measures if _measure(o) == code]
    return sorted(((when, o, s) for when, o, s in found if s is not None), key=lambda t: t[0])


def wellbeing(measures: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(first, latest, change) of the ONS4 life satisfaction score; change only when measured twice."""
    scores = _scores(measures, "ons4-life-satisfaction")
    if not scores:
        return "", "", ""
    first, latest = scores[0][2], scores[-1][2]
    return str(first), str(latest), (str(latest - first) if len(scores) > 1 else "")


def goal_attainment(measures: list[dict[str, Any]]) -> str:
    latest: dict[str, Decimal] = {}
    for _when, observation, score in _scores(measures, "gas-attainment"):
        for goal in observation.get("focus") or [{"reference": ""}]:
            latest[goal.get("reference", "")] = score  # oldest first: the last written is the latest
    if not latest:
        return ""
    mean = sum(latest.values(), Decimal(0)) / len(latest)
    return str(mean.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


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
