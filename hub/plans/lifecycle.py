"""What a write of a care and support plan must respect and what it brings about, whoever writes
it (REST, a transaction entry, a feed through the recorder, the hub's own plan worker): the
store calls `settle` with the version before the write and the funders of the plan's budget
statements, and stores what it returns.

- Agreement (ipc-agree-1): a plan becomes `active` (or `on-hold`) only once the person or their representative
  and the commissioner of every funding source in its budget statement have agreed. A draft plan
  at 'record and agree' that names its coordinator becomes active by itself when the last of
  those agreements is recorded.
- The review schedule: when a plan becomes active, and each time a review is completed (the plan
  leaves 'review' for 'make it happen'), its next review date is set from its review interval
  (hub.plans.reviews), unless the same write sets the date itself.
- Stages (hub.plans.stages): a plan enters a stage only when that stage's entry rule holds."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from hub.fhir.errors import FhirError
from hub.plans import agreement, reviews, stages
from hub.plans.stages import AGREED
from hub.plans.model import NEXT_REVIEW, PLAN, coordinator, next_review, plan_kind, stage, with_extension


def settle(previous: dict[str, Any] | None, plan: dict[str, Any], funders: Iterable[str], *,
           day: date | None = None) -> dict[str, Any]:
    """The plan to store in place of `plan` (the same object when nothing is derived), or a
    FhirError (422 business-rule) naming the rule it breaks. `previous`: the stored version it
    replaces (None for a new plan); `funders`: the funding sources of its open budget statements."""
    if plan_kind(plan) != PLAN:
        return plan
    funders = set(funders)
    day = day or reviews.today()
    before = previous if previous is not None and plan_kind(previous) == PLAN else None
    was = before.get("status") if before is not None else None
    out = plan
    if (out.get("status") == "draft" and was in (None, "draft") and stage(out) == "record-and-agree"
            and coordinator(out) and not agreement.missing(out, funders)):
        out = {**out, "status": "active"}
    # On hold is an agreed plan paused: reaching it from a draft needs the agreement too.
    becoming_active = out.get("status") in AGREED and was not in AGREED
    if becoming_active:
        still = agreement.missing(out, funders)
        if still:
            raise FhirError("business-rule", f"{agreement.RULE}: {agreement.RULE_TEXT}; still to agree: "
                            f"{agreement.describe(still)}", expression="CarePlan.status")
    set_by_writer = next_review(out) is not None and (before is None or next_review(out) != next_review(before))
    if becoming_active and not set_by_writer:
        agreed = reviews.as_day(agreement.agreed_on(out, funders)) or day
        out = _with_next_review(out, reviews.next_review_after(out, agreed))
    elif (before is not None and stage(before) == "review" and stage(out) == "make-it-happen"
          and not set_by_writer):
        out = _with_next_review(out, reviews.next_review_after(out, day))
    stages.check(before, out)
    return out


def _with_next_review(plan: dict[str, Any], due: str) -> dict[str, Any]:
    return with_extension(plan, NEXT_REVIEW, "valueDate", due)
