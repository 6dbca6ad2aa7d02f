"""One personalised care and support plan per person for any period. Two open plans for the same
person and overlapping dates would leave coordinators, commissioners and the person unsure which
one is agreed; a plan that `replaces` another may overlap the one it replaces (and closes it once
agreed: hub.plans.followups). The store enforces this on every write (hub.store.plans)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from hub.fhir.errors import FhirError
from hub.plans.model import PLAN, is_open, plan_kind
from hub.search.values import DATE_MAX, DATE_MIN, date_range


def is_open_ipc_plan(resource: dict[str, Any]) -> bool:
    return plan_kind(resource) == PLAN and is_open(resource)


def periods_overlap(plan: dict[str, Any], other: dict[str, Any]) -> bool:
    mine, theirs = _period(plan), _period(other)
    return mine[0] < theirs[1] and theirs[0] < mine[1]


def same_person(plan: dict[str, Any], other: dict[str, Any]) -> bool:
    return (is_open_ipc_plan(plan) and is_open_ipc_plan(other)
            and (plan.get("subject") or {}).get("reference") == (other.get("subject") or {}).get("reference"))


def clash(plan: dict[str, Any], other: dict[str, Any], other_id: str) -> bool:
    """Open plans whose periods overlap, unless `plan` says it replaces the other."""
    if f"CarePlan/{other_id}" in {ref.get("reference") for ref in plan.get("replaces") or []}:
        return False
    return periods_overlap(plan, other)


def two_plans(plan: dict[str, Any], other_id: str) -> FhirError:
    person = (plan.get("subject") or {}).get("reference")
    return FhirError(
        "business-rule",
        f"{person} already has an open care and support plan (CarePlan/{other_id}) for an "
        "overlapping period; one plan per person and period (close that plan, or say this plan "
        "replaces it)",
        expression="CarePlan.period",
    )


def _period(plan: dict[str, Any]) -> tuple[datetime, datetime]:
    """The plan's period as a half-open range; an open end is open-ended."""
    period = plan.get("period") or {}
    start = date_range(period["start"]) if period.get("start") else None
    end = date_range(period["end"]) if period.get("end") else None
    return (start[0] if start else DATE_MIN, end[1] if end else DATE_MAX)
