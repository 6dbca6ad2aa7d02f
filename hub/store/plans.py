"""The plan rules every write of the record passes, on every path (hub.store.resources for REST
and transaction entries and the recorder's single messages, hub.store.batch for its batches),
inside the write's own transaction:

- one open care and support plan per person and period (hub.plans.periods), serialised per
  person by an advisory lock, so two plans written at the same moment cannot both pass;
- an EHC plan ends no later than the day before its subject's 25th birthday (hub.plans.ehc),
  judged against the stored Patient's birth date;
- the plan's life cycle (hub.plans.lifecycle): agreement before `active`, stage entry rules, the
  next review date — judged against the stored version and the funders of the plan's open budget
  statements (written earlier in the same transaction, or in the same batch, included);
- what the plan worker must look at afterwards (hub.plans.followups.triggers) is queued in
  `plan_followup` and announced with NOTIFY at commit."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.references import parse_reference
from hub.plans import ehc, lifecycle, periods
from hub.plans.followups import triggers
from hub.plans.model import BUDGET, OPEN_STATUSES, PLAN, PLAN_CATEGORY_SYSTEM, funders, parent_plans, plan_kind

FOLLOWUP_CHANNEL = "ipc_plan_followup"

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
# The open budget statements that are part of a plan.
_BUDGETS = (
    "SELECT r.res_id, r.content::text FROM resource r"
    " JOIN idx_reference p ON p.res_type = r.res_type AND p.res_id = r.res_id"
    "  AND p.param = 'part-of' AND p.target_type = 'CarePlan' AND p.target_id = %s"
    " WHERE r.res_type = 'CarePlan' AND NOT r.deleted"
    " AND EXISTS (SELECT 1 FROM idx_token c WHERE c.res_type = r.res_type AND c.res_id = r.res_id"
    "  AND c.param = 'category' AND c.system = %s AND c.code = %s)"
    " AND EXISTS (SELECT 1 FROM idx_token t WHERE t.res_type = r.res_type AND t.res_id = r.res_id"
    "  AND t.param = 'status' AND t.code = ANY(%s))"
    " ORDER BY r.res_id"
)
_BIRTH_DATE = ("SELECT content->>'birthDate' FROM resource WHERE res_type = 'Patient' AND res_id = %s"
               " AND NOT deleted")
_STORED = "SELECT content::text, deleted FROM resource WHERE res_type = 'CarePlan' AND res_id = %s"
_ENQUEUE = ("INSERT INTO plan_followup (res_type, res_id) SELECT * FROM unnest(%s::text[], %s::text[])")


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


async def budgets_of(conn: AsyncConnection, plan_id: str) -> dict[str, dict[str, Any]]:
    """The plan's open budget statements, by id."""
    cur = await conn.execute(_BUDGETS, (plan_id, PLAN_CATEGORY_SYSTEM, BUDGET, list(OPEN_STATUSES)))
    return {res_id: jsontext.loads(content) for res_id, content in await cur.fetchall()}


async def funders_of(conn: AsyncConnection, plan_id: str,
                     pending: Iterable[tuple[dict[str, Any], str]] = ()) -> set[str]:
    """The funding sources a plan's open budget statements name: those stored, with `pending`
    ((statement, id) about to be written in the same batch) in place of their stored versions."""
    budgets = await budgets_of(conn, plan_id)
    for resource, res_id in pending:
        if plan_kind(resource) == BUDGET:
            if plan_id in parent_plans(resource) and resource.get("status") in OPEN_STATUSES:
                budgets[res_id] = resource
            else:
                budgets.pop(res_id, None)
    return set().union(*(funders(b) for b in budgets.values())) if budgets else set()


async def settle_plan(conn: AsyncConnection, resource: dict[str, Any], res_id: str,
                      pending: Iterable[tuple[dict[str, Any], str]] = ()) -> dict[str, Any]:
    """The care and support plan to store in place of `resource` (hub.plans.lifecycle), or a
    FhirError naming the rule it breaks; any other resource unchanged."""
    if plan_kind(resource) != PLAN:
        return resource
    cur = await conn.execute(_STORED, (res_id,))
    row = await cur.fetchone()
    previous = jsontext.loads(row[0]) if row is not None and not row[1] and row[0] else None
    return lifecycle.settle(previous, resource, await funders_of(conn, res_id, pending))


async def check_one_plan_per_period(conn: AsyncConnection, resource: dict[str, Any], res_id: str) -> None:
    """Refuse (422, business-rule) an open IPC plan whose period overlaps another open IPC plan
    of the same person; call it inside the write's transaction."""
    if not periods.is_open_ipc_plan(resource):
        return
    subject = parse_reference((resource.get("subject") or {}).get("reference") or "")
    if subject is None or subject[0] is None:
        return
    target_type, target_id = subject[0], subject[1]
    await lock_plans_of(conn, target_type, target_id)
    cur = await conn.execute(_CANDIDATES, (target_type, target_id, res_id, PLAN_CATEGORY_SYSTEM,
                                           PLAN, list(OPEN_STATUSES)))
    for other_id, content in await cur.fetchall():
        if periods.clash(resource, jsontext.loads(content), other_id):
            raise periods.two_plans(resource, other_id)


async def check_ehc_plan_end(conn: AsyncConnection, resource: dict[str, Any]) -> None:
    """Refuse (422, business-rule) an EHC plan without an end or ending after the day before its
    subject's 25th birthday. A subject the record does not hold yet (or without a full birth
    date) leaves only the end's presence to judge."""
    if not ehc.is_ehc_plan(resource):
        return
    subject = parse_reference((resource.get("subject") or {}).get("reference") or "")
    born = None
    if subject is not None and subject[0] == "Patient":
        cur = await conn.execute(_BIRTH_DATE, (subject[1],))
        row = await cur.fetchone()
        born = row[0] if row else None
    ehc.check_ends_by_25(resource, born)


async def check_plans_written_together(conn: AsyncConnection, plans: list[tuple[dict[str, Any], str]]) -> None:
    """The one-plan rule for several plans written in one statement (the recorder's batches): each
    against the store, and each against the ones before it in the batch, which the store cannot
    see yet."""
    for index, (resource, res_id) in enumerate(plans):
        await check_ehc_plan_end(conn, resource)
        await check_one_plan_per_period(conn, resource, res_id)
        for earlier, earlier_id in plans[:index]:
            if periods.same_person(resource, earlier) and periods.clash(resource, earlier, earlier_id):
                raise periods.two_plans(resource, earlier_id)


async def queue_followups(conn: AsyncConnection, written: Iterable[tuple[dict[str, Any], str]]) -> None:
    """Queue what the plan worker must look at after these resources are written (committed or
    rolled back with them), and wake the workers at commit."""
    keys = sorted({key for resource, res_id in written for key in triggers(resource, res_id)})
    if not keys:
        return
    await conn.execute(_ENQUEUE, ([t for t, _ in keys], [i for _, i in keys]))
    await conn.execute("SELECT pg_notify(%s, '')", (FOLLOWUP_CHANNEL,))
