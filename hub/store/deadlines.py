"""The deadlines behind the time-based subscription topics (migration 0072): open GP
registration handovers and agreed care and support plans, found by their due dates through the
search index, and the claim that raises each deadline once (hub.subscriptions.deadlines)."""
from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.identifiers import CANONICAL_BASE
from hub.plans.model import PLAN, PLAN_CATEGORY_SYSTEM

TRANSITION = f"{CANONICAL_BASE}/CodeSystem/ipc-transition"
# A Task in one of these states is over: its deadline can no longer be missed.
TASK_OVER = ("completed", "cancelled", "failed", "rejected", "entered-in-error")

# Handover Tasks not yet over whose due date (`due-date`: Task.restriction.period.end, where the
# MOD mapping puts it) falls in a range of days, not yet raised for the topic.
_HANDOVERS = (
    "SELECT r.res_id, r.version, r.content::text FROM resource r"
    " JOIN idx_date d ON d.res_type = r.res_type AND d.res_id = r.res_id AND d.param = 'due-date'"
    " WHERE r.res_type = 'Task' AND NOT r.deleted"
    " AND (d.low AT TIME ZONE 'UTC')::date BETWEEN %(first)s AND %(last)s"
    " AND EXISTS (SELECT 1 FROM idx_token c WHERE c.res_type = r.res_type AND c.res_id = r.res_id"
    "  AND c.param = 'code' AND c.system = %(system)s AND c.code = 'gp-registration-handover')"
    " AND NOT EXISTS (SELECT 1 FROM idx_token s WHERE s.res_type = r.res_type AND s.res_id = r.res_id"
    "  AND s.param = 'status' AND s.code = ANY(%(over)s))"
    " AND NOT EXISTS (SELECT 1 FROM subscription_deadline k WHERE k.topic = %(topic)s AND k.res_type = 'Task'"
    "  AND k.res_id = r.res_id AND k.due = (d.low AT TIME ZONE 'UTC')::date)"
    " ORDER BY d.low, r.res_id LIMIT %(limit)s"
)
# Agreed (active) care and support plans whose next review date falls in a range of days, not
# yet raised for the topic (the plan worker keeps `next-review-date`; a review held moves it).
_REVIEWS = (
    "SELECT r.res_id, r.version, r.content::text FROM resource r"
    " JOIN idx_date d ON d.res_type = r.res_type AND d.res_id = r.res_id AND d.param = 'next-review-date'"
    " WHERE r.res_type = 'CarePlan' AND NOT r.deleted"
    " AND (d.low AT TIME ZONE 'UTC')::date BETWEEN %(first)s AND %(last)s"
    " AND EXISTS (SELECT 1 FROM idx_token c WHERE c.res_type = r.res_type AND c.res_id = r.res_id"
    "  AND c.param = 'category' AND c.system = %(system)s AND c.code = %(plan)s)"
    " AND EXISTS (SELECT 1 FROM idx_token t WHERE t.res_type = r.res_type AND t.res_id = r.res_id"
    "  AND t.param = 'status' AND t.code = 'active')"
    " AND NOT EXISTS (SELECT 1 FROM subscription_deadline k WHERE k.topic = %(topic)s AND k.res_type = 'CarePlan'"
    "  AND k.res_id = r.res_id AND k.due = (d.low AT TIME ZONE 'UTC')::date)"
    " ORDER BY d.low, r.res_id LIMIT %(limit)s"
)
_CLAIM = ("INSERT INTO subscription_deadline (topic, res_type, res_id, due) VALUES (%s, %s, %s, %s) "
          "ON CONFLICT DO NOTHING RETURNING 1")

Found = tuple[str, int, dict[str, Any]]  # id, current version, content


async def open_handovers(conn: AsyncConnection, topic: str, first: date, last: date, limit: int = 500) -> list[Found]:
    cur = await conn.execute(_HANDOVERS, {"first": first, "last": last, "system": TRANSITION, "over": list(TASK_OVER),
                                          "topic": topic, "limit": limit})
    return [(res_id, version, jsontext.loads(text)) for res_id, version, text in await cur.fetchall()]


async def agreed_plans(conn: AsyncConnection, topic: str, first: date, last: date, limit: int = 500) -> list[Found]:
    cur = await conn.execute(_REVIEWS, {"first": first, "last": last, "system": PLAN_CATEGORY_SYSTEM, "plan": PLAN, "topic": topic,
                                        "limit": limit})
    return [(res_id, version, jsontext.loads(text)) for res_id, version, text in await cur.fetchall()]


async def claim(conn: AsyncConnection, topic: str, res_type: str, res_id: str, due: date) -> bool:
    """Claim a deadline for this transaction. False if it was raised before (or another
    scheduler's transaction has it: the INSERT waits for that one, and a claim is final only
    when committed)."""
    cur = await conn.execute(_CLAIM, (topic, res_type, res_id, due))
    return await cur.fetchone() is not None
