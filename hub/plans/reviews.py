"""The review schedule: how often a plan is reviewed, when the next review is due, and the review
Task the hub raises before it.

A plan's own `review-interval` (agreed with the person) wins. Without one, the interval of its
IPC programme applies (its `ipc-programme` category: IPC for Veterans plans are reviewed yearly,
"the VWM will initiate an annual review"), taken from the guide's CodeSystem (property
`default-review-interval`) unless `HUB_REVIEW_INTERVALS` says otherwise for that programme
(`ipc4v=12mo;ipc-adult=6mo;*=12mo`: `*` for plans of no listed programme); failing both, 12 months."""
from __future__ import annotations

import calendar
import os
import re
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from hub.fhir.ids import derived_id
from hub.plans.model import (
    PLAN_TASK_SYSTEM,
    PROGRAMME_SYSTEM,
    concept,
    coordinator,
    programmes,
    review_interval,
    subject,
)

Interval = tuple[int, str]   # (number, UCUM unit: a, mo, wk, d)
DEFAULT: Interval = (12, "mo")
UNITS = {"a": "year", "mo": "month", "wk": "week", "d": "day"}
_INTERVAL = re.compile(r"^([1-9][0-9]{0,3})(a|mo|wk|d)$")
# The hub's dates (a review due "today") are the person's: UK local time.
ZONE = ZoneInfo("Europe/London")


def today() -> date:
    return datetime.now(ZONE).date()


def parse_interval(text: str) -> Interval:
    """`12mo`, `1a`, `26wk`, `90d` → (number, unit); ValueError for anything else."""
    found = _INTERVAL.match(text.strip())
    if not found:
        raise ValueError(f"'{text}' is not a review interval such as 12mo, 1a, 26wk or 90d")
    return int(found.group(1)), found.group(2)


def parse_intervals(text: str) -> dict[str, Interval]:
    """`HUB_REVIEW_INTERVALS`: `programme=interval` pairs separated by `;` (`*` for any other)."""
    out: dict[str, Interval] = {}
    for pair in filter(None, (p.strip() for p in (text or "").split(";"))):
        name, sep, interval = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"'{pair}' is not programme=interval (e.g. ipc4v=12mo)")
        out[name.strip()] = parse_interval(interval)
    return out


@lru_cache(maxsize=8)
def _configured(text: str) -> dict[str, Interval]:
    """HUB_REVIEW_INTERVALS as every process reads it. The API and the plan worker refuse to
    start with a bad value; a process that did not check reads a bad one as unset."""
    try:
        return parse_intervals(text)
    except ValueError:
        return {}


@lru_cache(maxsize=1)
def guide_intervals() -> dict[str, Interval]:
    """Each programme's default review interval, as the guide's `ipc-programme` CodeSystem says."""
    from hub.fhir.validation.guide import load_guide

    system = load_guide().code_systems.get(PROGRAMME_SYSTEM) or {}
    out = {}
    for item in system.get("concept") or ():
        for prop in item.get("property") or ():
            if prop.get("code") == "default-review-interval" and prop.get("valueString"):
                out[item["code"]] = parse_interval(prop["valueString"])
    return out


def interval_for(plan: dict[str, Any]) -> Interval:
    own = review_interval(plan)
    if own is not None:
        return own
    configured = _configured(os.environ.get("HUB_REVIEW_INTERVALS", ""))
    guide = guide_intervals()
    for programme in programmes(plan):
        if programme in configured:
            return configured[programme]
        if programme in guide:
            return guide[programme]
    return configured.get("*", DEFAULT)


def add_interval(day: date, interval: Interval) -> date:
    """`day` plus the interval; a month or year landing past a month's end keeps to its last day
    (31 January + 1 month = 28 or 29 February)."""
    number, unit = interval
    if unit == "d":
        return date.fromordinal(day.toordinal() + number)
    if unit == "wk":
        return date.fromordinal(day.toordinal() + 7 * number)
    months = number * (12 if unit == "a" else 1)
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def next_review_after(plan: dict[str, Any], day: date) -> str:
    return add_interval(day, interval_for(plan)).isoformat()


def describe(interval: Interval) -> str:
    number, unit = interval
    return f"{number} {UNITS[unit]}{'s' if number != 1 else ''}"


def review_task_id(plan_id: str, due: str) -> str:
    return derived_id("plan-review", plan_id, due)


def review_task(plan: dict[str, Any], plan_id: str, due: str, raised: str) -> dict[str, Any]:
    """The Task the scheduler raises before a review is due: the coordinator's, about the plan,
    due on the plan's next review date (`restriction.period.end`, searched as `due-date`)."""
    task: dict[str, Any] = {
        "resourceType": "Task", "id": review_task_id(plan_id, due),
        "meta": {"profile": ["https://ipc-hub.example.org/fhir/StructureDefinition/ipc-review-task"]},
        "status": "requested", "intent": "order", "priority": "routine",
        "code": concept(PLAN_TASK_SYSTEM, "plan-review", "Plan review"),
        "description": f"Review the personalised care and support plan with the person, their carers and "
                       f"team (due {due})",
        "basedOn": [{"reference": f"CarePlan/{plan_id}"}],
        "focus": {"reference": f"CarePlan/{plan_id}"},
        "for": {"reference": subject(plan)},
        "authoredOn": raised,
        "restriction": {"period": {"end": due}},
    }
    owner = coordinator(plan)
    if owner:
        task["owner"] = {"reference": owner}
    return task


def as_day(text: str | None) -> date | None:
    """A FHIR date (or the date of a dateTime) as a day; a partial date ("2026-05", "2026") is
    its first day, as the search index reads it."""
    if not isinstance(text, str) or len(text) < 4:
        return None
    parts = text[:10].split("-")
    try:
        return date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, int(parts[2]) if len(parts) > 2 else 1)
    except ValueError:
        return None


def is_due(next_review: str | None, lead_days: int, day: date) -> bool:
    """Whether a review due on `next_review` should be raised on `day`, `lead_days` ahead."""
    due = as_day(next_review)
    return due is not None and due.toordinal() - lead_days <= day.toordinal()
