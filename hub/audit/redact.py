"""What one reader may see of the audit trail (issue 20, finding 5).

An audit record names people, resources and the query a caller sent (an NHS number searched
for, say). A reader from another organisation sees of it only what points at what it may see:
the patients and resources whose current rows its access admits (hub.search.access), and
another organisation's query text or path (which can name anything, found or not) only when the
record names someone and everything it names is visible to the reader. The
organisation that made the request (and the hub's own trusted access) sees its own records
whole: they say nothing it did not send. A search by a patient or resource the reader may not
see matches only the reader's own organisation's records, so a count cannot tell it that
someone else looked at a hidden person either."""
from __future__ import annotations

from dataclasses import replace

from psycopg import AsyncConnection

from hub.audit.record import AuditRecord
from hub.search.access import Access, visible_sql


def own(access: Access, record: AuditRecord) -> bool:
    """Whether `record` is of a request `access`'s organisation made (or `access` is the hub)."""
    return access.trusted or (record.organisation is not None and record.organisation == access.org_code
                              and (record.organisation_system or None) == (access.org_system or None))


def own_organisation_sql(access: Access) -> tuple[str, list[object]]:
    """The audit search condition: records of requests `access`'s organisation made."""
    return ("(organisation = %s AND organisation_system IS NOT DISTINCT FROM %s)",
            [access.org_code, access.org_system or None])


async def visible(conn: AsyncConnection, access: Access, refs: set[str]) -> set[str]:
    """Those of `refs` (`Type/id`) that name a stored resource `access` may see."""
    if not refs:
        return set()
    if access.trusted:
        return set(refs)
    predicate, params = visible_sql(access, "r") or ("TRUE", [])
    pairs = sorted(tuple(ref.split("/", 1)) for ref in refs if "/" in ref)
    cur = await conn.execute(
        "SELECT r.res_type, r.res_id FROM resource r JOIN unnest(%s::text[], %s::text[]) AS k(res_type, res_id) "
        f"USING (res_type, res_id) WHERE {predicate}",
        [[t for t, _ in pairs], [i for _, i in pairs], *params])
    return {f"{t}/{i}" for t, i in await cur.fetchall()}


def references(record: AuditRecord) -> set[str]:
    return {f"Patient/{p}" for p in record.patients} | set(record.entities)


def redact(access: Access, record: AuditRecord, seen: set[str]) -> AuditRecord:
    """`record` as `access` may see it, `seen` being the references it may see. The query and
    path are kept only when the record names at least one person and the reader may see every
    person and resource it names: a search that found nobody (an NHS number looked for, say)
    or found something hidden keeps what was asked to the organisation that asked."""
    if own(access, record):
        return record
    patients = [p for p in record.patients if f"Patient/{p}" in seen]
    entities = [e for e in record.entities if e in seen]
    whole = bool(record.patients) and len(patients) == len(record.patients) and len(entities) == len(record.entities)
    if whole:
        return record
    return replace(record, patients=patients, entities=entities, path="", query="")
