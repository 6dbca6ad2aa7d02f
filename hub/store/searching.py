"""The search run: a parsed search's page, total and includes; history; a person's whole record
($everything). SQL text comes from hub.search.sql; this module runs it, with the caller's
`Access` in every query, and turns rows into Versions."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from hub.search.access import Access, visible_sql
from hub.search.parse import SearchRequest
from hub.search.sql import (
    build_count_sql,
    build_include_sql,
    build_revinclude_sql,
    build_search_sql,
    known_total,
)
from hub.store.resources import Version, read


async def history(
    conn: AsyncConnection,
    *,
    res_type: str | None = None,
    res_id: str | None = None,
    since: datetime | None = None,
    count: int = 50,
    offset: int = 0,
    access: Access,
    types: list[str] | None = None,
) -> tuple[list[Version], int]:
    """Versions newest first, for one resource, one type or the whole server; and their total.
    Only the versions `access` may see (each judged by its own record part), of
    `types` when given (system history: the types the client may search)."""
    where: list[str] = []
    args: list[Any] = []
    visible = visible_sql(access, "resource_version")
    if visible is not None:
        where.append(visible[0])
        args += visible[1]
    if types is not None:
        where.append("res_type = ANY(%s)")
        args.append(types)
    if res_type is not None:
        where.append("res_type = %s")
        args.append(res_type)
    if res_id is not None:
        where.append("res_id = %s")
        args.append(res_id)
    if since is not None:
        where.append("last_updated >= %s")
        args.append(since)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    cur = await conn.execute(
        "SELECT res_type, res_id, version, last_updated, deleted, method, content::text, patient_id, "
        f"count(*) OVER () FROM resource_version {clause} "
        "ORDER BY last_updated DESC, res_type, res_id, version DESC LIMIT %s OFFSET %s",
        (*args, count, offset),
    )
    rows = await cur.fetchall()
    if not rows and offset:
        cur = await conn.execute(f"SELECT count(*) FROM resource_version {clause}", args)
        total = (await cur.fetchone())[0]
    else:
        total = rows[0][8] if rows else 0
    versions = [Version(t, i, v, lu, c, d, m, p) for t, i, v, lu, d, m, c, p, _ in rows]
    return versions, total


async def everything(
    conn: AsyncConnection,
    patient_id: str,
    *,
    types: list[str] | None = None,
    count: int,
    offset: int,
    access: Access,
) -> tuple[list[Version], int]:
    """The person's whole record: the Patient, every resource that references them, and what
    the Patient itself references (registered GP, managing organisation, linked records).
    Only what `access` may see; `types` (also the client's readable types) narrows."""
    await read(conn, "Patient", patient_id, access=access)  # 404 / 410 for an unknown, hidden or deleted person
    type_filter = "AND r.res_type = ANY(%s)" if types is not None else ""
    args: list[Any] = [patient_id, patient_id, patient_id]
    if types is not None:
        args.append(types)
    visible = visible_sql(access, "r")
    if visible is not None:
        type_filter += f" AND {visible[0]}"
        args += visible[1]
    cur = await conn.execute(
        "WITH members AS ("
        "  SELECT 'Patient' AS res_type, %s AS res_id"
        "  UNION SELECT res_type, res_id FROM idx_reference"
        "        WHERE target_type = 'Patient' AND target_id = %s"
        "  UNION SELECT target_type, target_id FROM idx_reference"
        "        WHERE res_type = 'Patient' AND res_id = %s AND target_id IS NOT NULL)"
        " SELECT r.res_type, r.res_id, r.version, r.last_updated, r.content::text, r.patient_id, count(*) OVER ()"
        " FROM resource r JOIN members m USING (res_type, res_id)"
        f" WHERE NOT r.deleted {type_filter}"
        " ORDER BY r.res_type <> 'Patient', r.res_type, r.res_id LIMIT %s OFFSET %s",
        (*args, count, offset),
    )
    rows = await cur.fetchall()
    total = rows[0][6] if rows else 0
    return [Version(t, i, v, lu, c, patient_id=p) for t, i, v, lu, c, p, _ in rows], total


@dataclass(slots=True)
class SearchResult:
    matches: list[Version]
    included: list[Version]
    total: int | None  # None when the client asked for no total (_total=none)
    more: bool  # another page follows


async def search(conn: AsyncConnection, req: SearchRequest, *, access: Access,
                 with_total: bool = True) -> SearchResult:
    """One page of matches, what they include, and the total (counted only when the page alone
    cannot tell it). Matches, total and includes count only what `access` may see,
    and includes only of types it may read."""
    if req.summary == "count":
        sql, params = build_count_sql(req, access=access)
        cur = await conn.execute(sql, params)
        return SearchResult([], [], (await cur.fetchone())[0], False)
    sql, params = build_search_sql(req, extra_row=True, access=access)
    cur = await conn.execute(sql, params)
    rows = await cur.fetchall()
    more = len(rows) > req.count
    matches = [Version(req.res_type, i, v, lu, c, patient_id=p) for i, v, lu, c, p in rows[: req.count]]
    total = None
    if with_total and req.total != "none":
        total = known_total(req, len(matches))
        if total is None:
            sql, params = build_count_sql(req, access=access)
            cur = await conn.execute(sql, params)
            total = (await cur.fetchone())[0]
    included = await _included(conn, req, matches, access) if (req.include or req.revinclude) else []
    return SearchResult(matches, included, total, more)


_INCLUDE_LEVELS = 4  # how far :iterate follows references before stopping


async def _included(conn: AsyncConnection, req: SearchRequest, matches: list[Version],
                    access: Access) -> list[Version]:
    seen = {(v.res_type, v.res_id) for v in matches}
    included: list[Version] = []
    frontier = matches
    for level in range(_INCLUDE_LEVELS):
        includes = [i for i in req.include if level == 0 or i.iterate]
        revincludes = [i for i in req.revinclude if level == 0 or i.iterate]
        found: list[Version] = []
        for res_type in {v.res_type for v in frontier}:
            ids = [v.res_id for v in frontier if v.res_type == res_type]
            for built in (build_include_sql(res_type, ids, includes, access=access),
                          build_revinclude_sql(res_type, ids, revincludes, access=access)):
                if built is None:
                    continue
                cur = await conn.execute(*built)
                for t, i, v, lu, c, p in await cur.fetchall():
                    if (t, i) not in seen:
                        seen.add((t, i))
                        found.append(Version(t, i, v, lu, c, patient_id=p))
        included += found
        frontier = found
        if not found:
            break
    return included
