"""The queries cohort finding runs (hub/cohorts): the definitions, which people a criterion
finds, the rows a FHIRPath criterion reads, and the member Group's lock. Cohort finding is the
hub's own work for the people's care teams, so these read the whole record (trusted access);
what a client may then see of a cohort is decided when it reads the member Group or exports it."""
from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.search.access import Access
from hub.search.parse import SearchRequest
from hub.search.sql import build_rows_sql


async def groups_with_profile(conn: AsyncConnection, profile: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(id, version, content) of every current Group claiming `profile`."""
    cur = await conn.execute(
        "SELECT res_id, version, content::text FROM resource WHERE res_type = 'Group' AND NOT deleted "
        "AND content::jsonb -> 'meta' -> 'profile' ? %s ORDER BY res_id", (profile,))
    return [(i, v, jsontext.loads(c)) for i, v, c in await cur.fetchall()]


async def hold(conn: AsyncConnection, cohort_id: str) -> None:
    """Hold the cohort until the transaction ends (an advisory lock, so it works before the
    member Group first exists): one evaluation of a cohort at a time."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('cohort:' || %s))", (cohort_id,))


async def lock(conn: AsyncConnection, res_type: str, res_id: str) -> tuple[int, dict[str, Any]] | None:
    """The current version and content of a resource, locked until the transaction ends (None if
    there is none, or it is deleted)."""
    cur = await conn.execute("SELECT version, content::text FROM resource WHERE res_type = %s AND res_id = %s "
                             "AND NOT deleted FOR UPDATE", (res_type, res_id))
    row = await cur.fetchone()
    return (row[0], jsontext.loads(row[1])) if row else None


# Above this many people, a criterion is read as a whole-population pass (see _whole_population).
BULK_SCOPE = 2000


@asynccontextmanager
async def _whole_population(conn: AsyncConnection, patients: Collection[str] | None) -> AsyncIterator[None]:
    """Hash joins, not nested loops, while a criterion is read for a whole population.

    A criterion's query tests each resource's index rows with EXISTS (hub.search.sql), and the
    planner, estimating a few thousand matches where a population has hundreds of thousands,
    answers with nested loops of index probes: 6.5 s for 150,000 Conditions of 100,000 people
    where hash joins take 0.9 s (EXPLAIN ANALYZE, make bench section cohorts). For the few
    people of one change event the probes are right, so only a large or unscoped evaluation
    turns them off, for its own statements (restored before anything else runs)."""
    if patients is not None and len(patients) <= BULK_SCOPE:
        yield
        return
    cur = await conn.execute("SELECT current_setting('enable_nestloop'), set_config('enable_nestloop', 'off', true)")
    before = (await cur.fetchone())[0]
    try:
        yield
    finally:
        await conn.execute("SELECT set_config('enable_nestloop', %s, true)", (before,))


async def people_found(conn: AsyncConnection, res_type: str, search: SearchRequest, minimum: int,
                       patients: Collection[str] | None) -> set[str]:
    """The people whose record holds at least `minimum` current resources of `res_type` matching
    `search` (among `patients`, when given)."""
    inner, params = build_rows_sql(res_type, "r.patient_id", access=Access.system(), filters=[search],
                                   patients=list(patients) if patients is not None else None, in_a_record=True)
    async with _whole_population(conn, patients):
        cur = await conn.execute(f"SELECT patient_id FROM ({inner}) m GROUP BY patient_id HAVING count(*) >= %s",
                                 (*params, minimum))
        return {row[0] for row in await cur.fetchall()}


async def rows_in_records(conn: AsyncConnection, res_type: str, patients: Collection[str] | None,
                          chunk: int = 2000) -> AsyncIterator[tuple[str, str]]:
    """(patient id, content) of every current `res_type` in someone's record (among `patients`,
    when given), read with a server-side cursor in chunks: bounded memory."""
    sql, params = build_rows_sql(res_type, "r.patient_id, r.content::text", access=Access.system(),
                                 patients=list(patients) if patients is not None else None, in_a_record=True)
    async with _whole_population(conn, patients), conn.cursor(name="cohort_rows") as cur:
        await cur.execute(sql, params)
        while rows := await cur.fetchmany(chunk):
            for row in rows:
                yield row


async def current_people(conn: AsyncConnection, patients: Collection[str]) -> set[str]:
    """Those among `patients` whose Patient is a current record of a person: not deleted and not
    retired into another by a merge (`link` of type replaced-by). Ids only: a re-evaluation
    of 100,000 people reads no Patient it does not need."""
    cur = await conn.execute(
        "SELECT res_id FROM resource WHERE res_type = 'Patient' AND res_id = ANY(%s) "
        "AND NOT deleted AND NOT coalesce(content::jsonb @> '{\"link\": [{\"type\": \"replaced-by\"}]}', false)",
        (list(patients),))
    return {row[0] for row in await cur.fetchall()}


async def patient_contents(conn: AsyncConnection, ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """The current Patients with these ids, by id (for the offers to new members: their
    preferred language and format)."""
    cur = await conn.execute("SELECT res_id, content::text FROM resource WHERE res_type = 'Patient' "
                             "AND res_id = ANY(%s) AND NOT deleted", (list(ids),))
    return {i: jsontext.loads(c) for i, c in await cur.fetchall()}


async def open_offers(conn: AsyncConnection, cohort_ref: str, patients: Collection[str]) -> list[tuple[str, dict]]:
    """(id, content) of the offer Tasks of a cohort for these people still waiting to be made."""
    cur = await conn.execute(
        "SELECT t.res_id, t.content::text FROM resource t "
        "JOIN idx_reference f ON f.res_type = 'Task' AND f.res_id = t.res_id AND f.param = 'focus' "
        "JOIN idx_reference p ON p.res_type = 'Task' AND p.res_id = t.res_id AND p.param = 'patient' "
        "WHERE t.res_type = 'Task' AND NOT t.deleted AND f.target_type = 'Group' AND f.target_id = %s "
        "AND p.target_id = ANY(%s) AND t.content::jsonb ->> 'status' = 'requested'",
        (cohort_ref.split("/")[1], list(patients)))
    return [(i, jsontext.loads(c)) for i, c in await cur.fetchall()]
