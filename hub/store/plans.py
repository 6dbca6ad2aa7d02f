"""The record's one rule that spans resources: a person has one personalised care and support
plan for any period. Two open plans for the same person and overlapping dates would leave
coordinators, commissioners and the person unsure which one is agreed; a plan that `replaces`
another may overlap the one it replaces."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.references import parse_reference
from hub.search.values import DATE_MAX, DATE_MIN, date_range

PLAN_CATEGORY_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/ipc-plan-category"
PLAN_CATEGORY_CODE = "care-support-plan"
# A plan in these states is the person's plan for its period; completed, revoked and
# entered-in-error plans are history.
OPEN_STATUSES = ("draft", "active", "on-hold")

_CANDIDATES = (
    "SELECT r.res_id, r.content::text FROM resource r"
    " JOIN idx_reference s ON s.res_type = r.res_type AND s.res_id = r.res_id"
    "  AND s.param = 'subject' AND s.target_type = %s AND s.target_id = %s"
    " WHERE r.res_type = 'CarePlan' AND NOT r.deleted AND r.res_id <> %s"
    " AND EXISTS (SELECT 1 FROM idx_token c WHERE c.res_type = r.res_type AND c.res_id = r.res_id"
    "  AND c.param = 'category' AND c.system = %s AND c.code = %s)"
    " AND EXISTS (SELECT 1 FROM idx_token t WHERE t.res_type = r.res_type AND t.res_id = r.res_id"
    "  AND t.param = 'status' AND t.code = ANY(%s))"
)


async def lock_plans_of(conn: AsyncConnection, subject_type: str, subject_id: str) -> None:
    """Serialise, until the transaction ends, everything that decides which plans a person has."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                       (f"ipc-plan:{subject_type}/{subject_id}",))


async def open_plans(conn: AsyncConnection, subject_type: str, subject_id: str,
                     category_code: str) -> list[tuple[str, str]]:
    """(id, content) of the subject's open CarePlans of an IPC plan category, oldest id first."""
    cur = await conn.execute(_CANDIDATES + " ORDER BY r.res_id",
                             (subject_type, subject_id, "", PLAN_CATEGORY_SYSTEM, category_code,
                              list(OPEN_STATUSES)))
    return [(row[0], row[1]) for row in await cur.fetchall()]


def periods_overlap(plan: dict[str, Any], other: dict[str, Any]) -> bool:
    mine, theirs = _period(plan), _period(other)
    return mine[0] < theirs[1] and theirs[0] < mine[1]


def is_open_ipc_plan(resource: dict[str, Any]) -> bool:
    if resource.get("resourceType") != "CarePlan" or resource.get("status") not in OPEN_STATUSES:
        return False
    return any(coding.get("system") == PLAN_CATEGORY_SYSTEM and coding.get("code") == PLAN_CATEGORY_CODE
               for concept in resource.get("category") or [] for coding in concept.get("coding") or [])


async def check_plans_written_together(conn: AsyncConnection, plans: list[tuple[dict[str, Any], str]]) -> None:
    """The rule for several plans written in one statement (the recorder's batches): each against
    the store, and each against the ones before it in the batch, which the store cannot see yet."""
    for index, (resource, res_id) in enumerate(plans):
        await check_one_plan_per_period(conn, resource, res_id)
        for earlier, earlier_id in plans[:index]:
            if _same_person(resource, earlier) and _clash(resource, earlier, earlier_id):
                raise _two_plans(resource, earlier_id)


async def check_one_plan_per_period(conn: AsyncConnection, resource: dict[str, Any], res_id: str) -> None:
    """Refuse (422, business-rule) an open IPC plan whose period overlaps another open IPC plan
    of the same person. Serialised per person by an advisory lock, so two plans written at the
    same moment cannot both pass; call it inside the write's transaction."""
    if not is_open_ipc_plan(resource):
        return
    subject = parse_reference((resource.get("subject") or {}).get("reference") or "")
    if subject is None or subject[0] is None:
        return
    target_type, target_id = subject[0], subject[1]
    await lock_plans_of(conn, target_type, target_id)
    cur = await conn.execute(_CANDIDATES, (target_type, target_id, res_id, PLAN_CATEGORY_SYSTEM,
                                           PLAN_CATEGORY_CODE, list(OPEN_STATUSES)))
    for other_id, content in await cur.fetchall():
        if _clash(resource, jsontext.loads(content), other_id):
            raise _two_plans(resource, other_id)


def _same_person(plan: dict[str, Any], other: dict[str, Any]) -> bool:
    return (is_open_ipc_plan(plan) and is_open_ipc_plan(other)
            and (plan.get("subject") or {}).get("reference") == (other.get("subject") or {}).get("reference"))


def _clash(plan: dict[str, Any], other: dict[str, Any], other_id: str) -> bool:
    """Open plans whose periods overlap, unless `plan` says it replaces the other."""
    if f"CarePlan/{other_id}" in {ref.get("reference") for ref in plan.get("replaces") or []}:
        return False
    return periods_overlap(plan, other)


def _two_plans(plan: dict[str, Any], other_id: str) -> FhirError:
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
