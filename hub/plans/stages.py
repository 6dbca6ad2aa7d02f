"""The IPC stages a plan moves through (context → preparation → conversation → record and agree
→ make it happen → review, Annex A of the IPC for Veterans framework) and what a plan must be
before it enters each. A plan may go back to any earlier stage (a review is "a proportionate
repeat of stages 2, 3, 4 and 5"); it enters a stage, forwards or back, only when that stage's
entry rule holds. A refused move is a 422 naming the rule."""
from __future__ import annotations

from typing import Any

from hub.fhir.errors import FhirError
from hub.plans.model import OPEN_STATUSES, STAGE_NAMES, STAGES, coordinator, goals, stage, stage_rank

# An open plan in either of these states has been agreed (on hold: agreed, and paused).
AGREED = ("active", "on-hold")

# stage → (rule key, what the plan must be to enter it, the check)
ENTRY_RULES: dict[str, tuple[str, str]] = {
    "record-and-agree": ("ipc-stage-1", "a plan enters 'record and agree' only once it names its coordinator "
                                        "and has at least one goal (the outcomes the person wants)"),
    "make-it-happen": ("ipc-stage-2", "a plan enters 'make it happen' only once it is agreed (status active or "
                                      "on-hold: the person and every funder have agreed it)"),
    "review": ("ipc-stage-3", "a plan enters 'review' only once it is agreed (status active or on-hold)"),
}


def entry_problem(code: str, plan: dict[str, Any]) -> tuple[str, str] | None:
    """(rule key, rule text) if `plan` may not be at stage `code`; None if it may. The rules bind
    open plans; a completed, revoked or entered-in-error plan is history, closed at whatever
    stage it had reached."""
    if plan.get("status") not in OPEN_STATUSES:
        return None
    if code == "record-and-agree" and not (coordinator(plan) and goals(plan)):
        return ENTRY_RULES[code]
    if code in ("make-it-happen", "review") and plan.get("status") not in AGREED:
        return ENTRY_RULES[code]
    return None


def check(previous: dict[str, Any] | None, plan: dict[str, Any]) -> None:
    """Refuse a plan whose stage it may not (still) be at: checked when the plan is first
    written, and whenever its stage or its status changes (a plan at 'make it happen' cannot go
    back to draft without moving back a stage)."""
    code = stage(plan)
    if code is None:
        return
    if previous is not None and stage(previous) == code and previous.get("status") == plan.get("status"):
        return
    problem = entry_problem(code, plan)
    if problem is not None:
        key, text = problem
        came_from = stage(previous) if previous is not None else None
        move = (f"from '{STAGE_NAMES.get(came_from, came_from)}' to '{STAGE_NAMES[code]}'" if came_from and came_from != code
                else f"at '{STAGE_NAMES[code]}'")
        raise FhirError("business-rule", f"{key}: the plan cannot be {move}: {text}",
                        expression="CarePlan.extension:stage")


def furthest_allowed(plan: dict[str, Any], proposed: str | None, current: str | None) -> str | None:
    """The stage a feed's part may move a plan to. A feed reports what it sees happening (the
    council arranging services), so before the plan is agreed it moves forward to the furthest
    stage up to the one proposed whose entry rule the plan meets — never backwards and never
    past a rule. Once the plan is agreed (active) its stage is the coordinator's: a feed part
    leaves it where it is, so a coordinator who moved the plan back (to rework it at a review)
    is not overridden by the next extract."""
    if proposed not in STAGES or (current is not None and plan.get("status") in AGREED):
        return current
    floor = stage_rank(current)
    for code in reversed(STAGES[:stage_rank(proposed) + 1]):
        if stage_rank(code) <= floor:
            return current
        if entry_problem(code, plan) is None:
            return code
    return current
