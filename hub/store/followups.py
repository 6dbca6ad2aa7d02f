"""What the plan worker (hub.pipeline.planlife) reads and claims: the follow-up queue written
beside plan writes (hub.store.plans.queue_followups), a plan with everything that hangs off it,
the plans whose review falls due, and the (plan, due date) claims that make each review Task
raised exactly once however many workers run.

All of it is the hub's own work on the whole record (no caller's access applies); each function
takes the worker's connection inside its transaction."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.plans.followups import PlanState
from hub.plans.model import PLAN, PLAN_CATEGORY_SYSTEM
from hub.store.plans import budgets_of, open_plans

_CLAIM = (
    "DELETE FROM plan_followup WHERE seq IN (SELECT seq FROM plan_followup ORDER BY seq LIMIT %s "
    "FOR UPDATE SKIP LOCKED) RETURNING res_type, res_id"
)
_CONTENT = "SELECT content::text FROM resource WHERE res_type = %s AND res_id = %s AND NOT deleted"
# Current resources of one type whose `param` reference names CarePlan/<id>.
_ABOUT = (
    "SELECT r.res_id, r.content::text FROM resource r"
    " JOIN idx_reference x ON x.res_type = r.res_type AND x.res_id = r.res_id"
    "  AND x.param = %s AND x.target_type = 'CarePlan' AND x.target_id = %s"
    " WHERE r.res_type = %s AND NOT r.deleted"
)
# Agreed care and support plans whose next review date falls before `until` and whose review
# for that date no scheduler has raised yet.
_DUE = (
    "SELECT r.res_id, r.content::text FROM resource r"
    " JOIN idx_date d ON d.res_type = r.res_type AND d.res_id = r.res_id AND d.param = 'next-review-date'"
    " WHERE r.res_type = 'CarePlan' AND NOT r.deleted AND d.low < %s"
    " AND EXISTS (SELECT 1 FROM idx_token c WHERE c.res_type = r.res_type AND c.res_id = r.res_id"
    "  AND c.param = 'category' AND c.system = %s AND c.code = %s)"
    " AND EXISTS (SELECT 1 FROM idx_token t WHERE t.res_type = r.res_type AND t.res_id = r.res_id"
    "  AND t.param = 'status' AND t.code = 'active')"
    " AND NOT EXISTS (SELECT 1 FROM plan_review_raised c WHERE c.plan_id = r.res_id"
    "  AND c.due = (d.low AT TIME ZONE 'UTC')::date)"
    " ORDER BY d.low, r.res_id LIMIT %s"
)
_CLAIM_REVIEW = ("INSERT INTO plan_review_raised (plan_id, due, task_id) VALUES (%s, %s, %s) "
                 "ON CONFLICT DO NOTHING RETURNING 1")


async def claim(conn: AsyncConnection, limit: int = 100) -> list[tuple[str, str]]:
    """Take up to `limit` queued follow-ups (each once, in queue order, none another worker
    holds): gone when the caller's transaction commits, back in the queue if it rolls back."""
    cur = await conn.execute(_CLAIM, (limit,))
    seen, out = set(), []
    for key in await cur.fetchall():
        if key not in seen:
            seen.add(key)
            out.append((key[0], key[1]))
    return out


async def lock_plan(conn: AsyncConnection, plan_id: str) -> None:
    """One worker at a time follows up one plan (until the transaction ends)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"ipc-plan-followup:{plan_id}",))


async def content(conn: AsyncConnection, res_type: str, res_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(_CONTENT, (res_type, res_id))
    row = await cur.fetchone()
    return jsontext.loads(row[0]) if row else None


async def _about(conn: AsyncConnection, res_type: str, param: str, plan_id: str) -> dict[str, dict[str, Any]]:
    cur = await conn.execute(_ABOUT, (param, plan_id, res_type))
    return {res_id: jsontext.loads(text) for res_id, text in await cur.fetchall()}


async def plan_state(conn: AsyncConnection, plan_id: str) -> PlanState | None:
    """The plan with its open budget statements, the Tasks focused on it, the Flags and meetings
    about it and the plans it replaces; None if it is not a current resource."""
    plan = await content(conn, "CarePlan", plan_id)
    if plan is None:
        return None
    replaced = {}
    for ref in plan.get("replaces") or ():
        old_id = str(ref.get("reference", "")).removeprefix("CarePlan/")
        if old_id and "/" not in old_id:
            old = await content(conn, "CarePlan", old_id)
            if old is not None:
                replaced[old_id] = old
    return PlanState(plan_id, plan, budgets=list((await budgets_of(conn, plan_id)).values()),
                     tasks=await _about(conn, "Task", "focus", plan_id),
                     flags=await _about(conn, "Flag", "care-plan", plan_id),
                     encounters=await _about(conn, "Encounter", "care-plan", plan_id),
                     replaced=replaced)


async def due_for_review(conn: AsyncConnection, until: date, limit: int = 200) -> list[tuple[str, dict[str, Any]]]:
    """(id, content) of agreed plans whose next review date is before `until` and whose review for
    that date has not been raised."""
    cutoff = datetime.combine(until, time(), tzinfo=UTC)
    cur = await conn.execute(_DUE, (cutoff, PLAN_CATEGORY_SYSTEM, PLAN, limit))
    return [(res_id, jsontext.loads(text)) for res_id, text in await cur.fetchall()]


async def claim_review(conn: AsyncConnection, plan_id: str, due: date, task_id: str) -> bool:
    """Claim the review of `plan_id` due on `due` for this transaction. False if another
    scheduler has (it waits for that one's transaction: a claim is final only when committed)."""
    cur = await conn.execute(_CLAIM_REVIEW, (plan_id, due, task_id))
    return await cur.fetchone() is not None


# --- children and young people (hub.plans.ehc, hub.plans.growing_up) -----------------------------

# The people the growing-up steps are for, with their birth date: the subject of a current EHC
# plan, or the carer's own Patient of a young carer (hub.plans.growing_up.YOUNG_CARER).
_CHILDREN = (
    "SELECT DISTINCT p.res_id, p.content->>'birthDate' FROM resource r"
    " JOIN idx_reference s ON s.res_type = r.res_type AND s.res_id = r.res_id AND s.param = 'subject'"
    "  AND s.target_type = 'Patient'"
    " JOIN resource p ON p.res_type = 'Patient' AND p.res_id = s.target_id AND NOT p.deleted"
    " WHERE r.res_type = 'CarePlan' AND NOT r.deleted"
    " AND EXISTS (SELECT 1 FROM idx_token c WHERE c.res_type = r.res_type AND c.res_id = r.res_id"
    "  AND c.param = 'category' AND c.system = %s AND c.code = 'ehc-plan')"
    " AND EXISTS (SELECT 1 FROM idx_token t WHERE t.res_type = r.res_type AND t.res_id = r.res_id"
    "  AND t.param = 'status' AND t.code = ANY(%s))"
)
_YOUNG_CARERS = (
    "SELECT DISTINCT p.res_id, p.content->>'birthDate' FROM resource r"
    " CROSS JOIN LATERAL json_array_elements(r.content->'extension') own"
    " CROSS JOIN LATERAL json_array_elements(own->'extension') link"
    " JOIN resource p ON p.res_type = 'Patient' AND NOT p.deleted"
    "  AND 'Patient/' || p.res_id = link->'valueReference'->>'reference'"
    " WHERE r.res_type = 'RelatedPerson' AND NOT r.deleted"
    " AND own->>'url' = %s AND link->>'url' = 'person'"
    " AND r.content::jsonb @> %s::jsonb"
)
# Children and young people in children's continuing care: the subject of an active Flag with
# that code (hub.plans.growing_up.CONTINUING_CARE), under 25, and its author (who recorded it).
_IN_CONTINUING_CARE = (
    "SELECT DISTINCT ON (p.res_id) p.res_id, p.content->>'birthDate', f.content->'author' FROM resource f"
    " JOIN idx_reference s ON s.res_type = f.res_type AND s.res_id = f.res_id AND s.param = 'subject'"
    "  AND s.target_type = 'Patient'"
    " JOIN resource p ON p.res_type = 'Patient' AND p.res_id = s.target_id AND NOT p.deleted"
    " WHERE f.res_type = 'Flag' AND NOT f.deleted AND f.content->>'status' = 'active'"
    " AND f.content::jsonb @> %s::jsonb"   # Flag has no `code` search parameter to index
    " ORDER BY p.res_id, f.res_id"
)
_CLAIM_STEP = ("INSERT INTO child_transition_raised (patient_id, step, written) VALUES (%s, %s, %s) "
               "ON CONFLICT DO NOTHING RETURNING 1")


async def ehc_due_for_review(conn: AsyncConnection, until: date, limit: int = 200) -> list[tuple[str, dict[str, Any]]]:
    """(id, content) of active EHC plans whose next review is before `until`, not yet raised."""
    cutoff = datetime.combine(until, time(), tzinfo=UTC)
    cur = await conn.execute(_DUE, (cutoff, PLAN_CATEGORY_SYSTEM, "ehc-plan", limit))
    return [(res_id, jsontext.loads(text)) for res_id, text in await cur.fetchall()]


async def children(conn: AsyncConnection) -> list[tuple[str, str | None]]:
    """(Patient id, birth date) of everyone with a current EHC plan."""
    cur = await conn.execute(_CHILDREN, (PLAN_CATEGORY_SYSTEM, ["draft", "active", "on-hold"]))
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def in_continuing_care(conn: AsyncConnection, system: str,
                             code: str) -> list[tuple[str, str | None, dict[str, Any] | None]]:
    """(Patient id, birth date, the Flag's author) of everyone with an active Flag of this code."""
    marker = json.dumps({"code": {"coding": [{"system": system, "code": code}]}})
    cur = await conn.execute(_IN_CONTINUING_CARE, (marker,))
    return [(row[0], row[1], row[2] if isinstance(row[2], dict) else None) for row in await cur.fetchall()]


async def young_carers(conn: AsyncConnection, own_record: str, carer_type: str) -> list[tuple[str, str | None]]:
    """(Patient id, birth date) of each assessed young carer's own record (the carer's
    RelatedPerson has carer type `young-carer` and a `carer-own-record` person)."""
    marker = json.dumps({"extension": [{"url": carer_type, "valueCodeableConcept": {
        "coding": [{"code": "young-carer"}]}}]})
    cur = await conn.execute(_YOUNG_CARERS, (own_record, marker))
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def open_plans_of(conn: AsyncConnection, patient_id: str, category: str) -> list[tuple[str, dict[str, Any]]]:
    """(id, content) of the person's open plans of an IPC plan category, oldest id first."""
    return [(res_id, jsontext.loads(text)) for res_id, text in await open_plans(conn, "Patient", patient_id, category)]


async def steps_raised(conn: AsyncConnection) -> dict[str, set[str]]:
    """The growing-up steps raised so far, by person (a sweep skips people with nothing new)."""
    cur = await conn.execute("SELECT patient_id, step FROM child_transition_raised")
    out: dict[str, set[str]] = {}
    for patient_id, step in await cur.fetchall():
        out.setdefault(patient_id, set()).add(step)
    return out


async def claim_step(conn: AsyncConnection, patient_id: str, step: str, written: str) -> bool:
    """Claim a growing-up step of a person for this transaction; False if it was raised before."""
    cur = await conn.execute(_CLAIM_STEP, (patient_id, step, written))
    return await cur.fetchone() is not None
