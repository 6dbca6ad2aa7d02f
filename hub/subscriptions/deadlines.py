"""The time-based topics: events raised because a deadline passed, not because something was
written. A GP registration handover still open after its due date (`handover-overdue`), an
agreed plan's next review date arriving (`review-due`) and passing with the review not held
(`review-overdue`).

The due dates are the ones the hub already keeps: the handover Task's `restriction.period.end`
(the MOD mapping's due date, 28 days after discharge unless the document says) and the plan's
`next-review-date` (kept by hub/plans: set when the plan is agreed and moved when a review is
held). A day is the person's: a date passes at midnight UK time (hub.plans.reviews.ZONE).

`raise_due(conn, now)` is the scheduler's one pass, run by the notifier every SCAN_EVERY_S:
each deadline passed by `now` and not raised before is claimed (hub.store.deadlines, one row
per topic, focus and due date) in the same transaction that queues its event for every
subscription listening since before the deadline whose filters the focus passes. So a deadline
is raised exactly once, across restarts and however many notifiers run; its events are then
judged and delivered like any other (consent at delivery, numbering, retries, `$events`)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg import AsyncConnection

from hub.plans.model import next_review, subject
from hub.plans.reviews import ZONE, as_day
from hub.store import deadlines as store
from hub.store import subscriptions as state
from hub.subscriptions.matching import queue_for
from hub.subscriptions.topics import BY_URL, TOPIC_BASE, Topic

log = logging.getLogger(__name__)

SCAN_EVERY_S = 60.0
# A deadline event's method in the notification's entry: nothing was written, the focus is as it
# stood when the deadline passed (its current version then).
METHOD = "GET"


def midnight(day: date) -> datetime:
    """The moment `day` begins, UK time."""
    return datetime.combine(day, time(), tzinfo=ZONE).astimezone(UTC)


def _handover_due(task: dict[str, Any]) -> date | None:
    return as_day(((task.get("restriction") or {}).get("period") or {}).get("end"))


# Each time-based topic: how to find its candidates (in a range of due dates), a candidate's
# due date, and when, after the due date's midnight, the deadline passes (0 or 1 day).
Finder = Callable[[AsyncConnection, str, date, date], Any]
_KINDS: dict[str, tuple[str, Finder, Callable[[dict[str, Any]], date | None], int]] = {
    "handover-overdue": ("Task", store.open_handovers, _handover_due, 1),
    "review-due": ("CarePlan", store.agreed_plans, lambda plan: as_day(next_review(plan)), 0),
    "review-overdue": ("CarePlan", store.agreed_plans, lambda plan: as_day(next_review(plan)), 1),
}


def _patient(res_type: str, resource: dict[str, Any]) -> str | None:
    ref = subject(resource) if res_type == "CarePlan" else (resource.get("for") or {}).get("reference")
    return ref.split("/", 1)[1] if isinstance(ref, str) and ref.startswith("Patient/") else None


async def raise_due(conn: AsyncConnection, now: datetime) -> int:
    """Raise every deadline of a time-based topic that has passed by `now` since the earliest
    subscription listening to it began; the number of deadlines raised by this pass. `conn`
    is in autocommit mode: each deadline is its own transaction."""
    by_topic: dict[str, list[tuple[state.Row, Topic]]] = {}
    for row in await state.listening(conn):
        topic = BY_URL.get(row.topic)
        if topic is not None and topic.name in _KINDS:
            by_topic.setdefault(topic.name, []).append((row, topic))
    raised = 0
    for name, listening in by_topic.items():
        res_type, find, due_of, after_days = _KINDS[name]
        earliest = min(row.created_at for row, _ in listening)
        first = earliest.astimezone(ZONE).date() - timedelta(days=after_days)
        last = now.astimezone(ZONE).date() - timedelta(days=after_days)
        if last < first:
            continue
        for res_id, version, resource in await find(conn, TOPIC_BASE + name, first, last):
            due = due_of(resource)
            if due is None:
                continue
            passed = midnight(due + timedelta(days=after_days))
            if passed > now or passed < earliest:
                continue
            async with conn.transaction():
                if not await store.claim(conn, TOPIC_BASE + name, res_type, res_id, due):
                    continue  # raised before, or by another notifier
                await queue_for(conn, listening, occurred=passed, source=f"deadline:{name}:{res_id}:{due}",
                                res_type=res_type, res_id=res_id, version=version, method=METHOD,
                                resource=resource, patient=_patient(res_type, resource), part=None)
            raised += 1
    if raised:
        log.info("notifier: %d deadlines raised", raised)
    return raised
