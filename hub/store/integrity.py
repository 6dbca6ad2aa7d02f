"""Referential integrity: a literal local reference in a write (`Patient/123`,
`Patient/123/_history/2`) must name a resource the record holds and has not deleted, and a
resource that current resources still refer to is not deleted out from under them.

Contained (`#id`), absolute and logical (identifier-only) references are not checked: they
name nothing on this server. A reference the caller may not see is treated exactly as a
missing one (the same 422, the same words), so a write cannot be used to learn that, say, a
safeguarding record exists."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from hub.consent.parts import PARTS
from hub.fhir.errors import FhirError, Issue
from hub.fhir.references import LocalReference, literal_references
from hub.search.access import Access, visible_sql
from hub.store.plans import FOLLOWUP_CHANNEL

# How many referrers a refused delete names.
MAX_REFERRERS = 10


@dataclass(slots=True, frozen=True)
class Written:
    """A resource about to be written (or just written, in a transaction checked at its end),
    under the id it is stored as, with a prefix for the location of each problem
    (`Bundle.entry[2]`, or "" for a plain write)."""

    resource: dict[str, Any]
    res_type: str
    res_id: str
    where: str = ""
    # References the stored version already makes (`current_links`): an update that carries
    # them over unchanged is not judged on them again — they were checked when written, and a
    # client re-sending a plan it was given must not be refused for a part it may not see.
    kept: frozenset[tuple[str, str]] = frozenset()


async def check_references(conn: AsyncConnection, access: Access, writes: Iterable[Written], *,
                           pending: set[tuple[str, str]] = frozenset()) -> None:  # type: ignore[assignment]
    """422 `processing` naming each element whose literal local reference resolves to nothing
    the caller may see. A reference to the resource itself, or to a key in `pending` (what
    the same batch writes), resolves."""
    wanted: list[tuple[Written, LocalReference]] = []
    for write in writes:
        for ref in literal_references(write.resource):
            key = (ref.res_type, ref.res_id)
            if key == (write.res_type, write.res_id) and ref.version is None:
                continue
            if key in pending or (ref.version is None and key in write.kept):
                continue
            wanted.append((write, ref))
    if not wanted:
        return
    found = await _resolvable(conn, access, {(r.res_type, r.res_id, r.version) for _, r in wanted})
    issues = []
    for write, ref in wanted:
        if (ref.res_type, ref.res_id, ref.version) not in found:
            element = ref.element
            if write.where:  # Goal.subject → Bundle.entry[2].resource.subject
                element = f"{write.where}.resource{element[len(write.res_type):]}"
            issues.append(Issue("processing", f"{element} refers to {ref.text}, which is not a resource "
                                "in the record (it does not exist, was deleted, or is not visible to "
                                "this client)", element))
    if issues:
        raise FhirError("processing", issues[0].diagnostics, issues=issues, status=422)


async def _resolvable(conn: AsyncConnection, access: Access,
                      keys: set[tuple[str, str, str | None]]) -> set[tuple[str, str, str | None]]:
    """The keys that name a current (and, with a version, existing) resource `access` may see."""
    ordered = sorted(keys, key=lambda k: (k[0], k[1], k[2] or ""))
    visible = visible_sql(access, "v")
    predicate, params = visible if visible is not None else ("TRUE", [])
    # The version named, else the current one; judged by that version's own record part.
    cur = await conn.execute(
        "SELECT k.t, k.i, k.v FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(t, i, v) "
        "JOIN resource r ON r.res_type = k.t AND r.res_id = k.i AND NOT r.deleted "
        "JOIN resource_version v ON v.res_type = k.t AND v.res_id = k.i "
        " AND v.version = CASE WHEN k.v ~ '^[0-9]{1,9}$' THEN k.v::int ELSE r.version END "
        f" AND (k.v IS NULL OR k.v ~ '^[0-9]{{1,9}}$') AND NOT v.deleted WHERE {predicate}",
        [[k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered], *params])
    return {(t, i, v) for t, i, v in await cur.fetchall()}


async def current_links(conn: AsyncConnection, access: Access, res_type: str, res_id: str) -> frozenset[tuple[str, str]]:
    """The unversioned local references the stored current version of a resource makes, if
    `access` may see that version (none otherwise: to it, the resource is absent). One
    statement, whether the resource is absent, hidden or visible."""
    visible = visible_sql(access, "r")
    predicate, params = visible if visible is not None else ("TRUE", [])
    cur = await conn.execute(
        "SELECT l.target_type, l.target_id FROM resource_link l JOIN resource r ON r.res_type = l.res_type "
        f"AND r.res_id = l.res_id WHERE l.res_type = %s AND l.res_id = %s AND {predicate}",
        [res_type, res_id, *params])
    return frozenset((t, i) for t, i in await cur.fetchall())


async def referrers(conn: AsyncConnection, res_type: str, res_id: str) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """(type, id, patient, part, owner) of current resources other than itself that refer to
    `res_type/res_id` (unversioned), oldest type and id first: what the hub's own review of a
    delete looks at (hub.pipeline.dangling), whoever may see them."""
    cur = await conn.execute(
        "SELECT DISTINCT l.res_type, l.res_id, r.patient_id, r.part, r.owner FROM resource_link l "
        "JOIN resource r ON r.res_type = l.res_type AND r.res_id = l.res_id AND NOT r.deleted "
        "WHERE l.target_type = %s AND l.target_id = %s AND NOT (l.res_type = %s AND l.res_id = %s) "
        "ORDER BY 1, 2", (res_type, res_id, res_type, res_id))
    return [(t, i, p, part, o) for t, i, p, part, o in await cur.fetchall()]


async def check_delete(conn: AsyncConnection, access: Access, res_type: str, res_id: str, *,
                       where: str = "") -> None:
    """409 `conflict` when current resources `access` may see still refer to the resource,
    naming up to ten of them (those of types it may read).

    Judged on what the caller may see, and on nothing else (issue 20: no answer tells a hidden
    resource from an absent one): referrers hidden from it by consent count as none, so a
    delete whose only referrers are hidden proceeds exactly as one with no referrer — the same
    statements, the same answer. What keeps the record whole for those who may see the hidden
    referrers is `queue_review`: every delete this check lets through is queued for the hub's
    own review (hub.pipeline.dangling), which raises a review Task in the referrers' record
    when anything still refers to what was deleted, and the deleted resource's last version
    stays readable by vread to whoever may see it (hub/consent/README.md)."""
    visible = visible_sql(access, "r")
    predicate, params = visible if visible is not None else ("TRUE", [])
    cur = await conn.execute(
        "SELECT DISTINCT l.res_type, l.res_id FROM resource_link l JOIN resource r ON r.res_type = l.res_type "
        "AND r.res_id = l.res_id AND NOT r.deleted WHERE l.target_type = %s AND l.target_id = %s "
        f"AND NOT (l.res_type = %s AND l.res_id = %s) AND {predicate} ORDER BY 1, 2 LIMIT %s",
        [res_type, res_id, res_type, res_id, *params, MAX_REFERRERS * 5])
    found = [(t, i) for t, i in await cur.fetchall()]
    if not found:
        await queue_review(conn, res_type, res_id)
        return
    readable = access.types_with("r", sorted({t for t, _ in found}))
    shown = [(t, i) for t, i in found if readable is None or t in readable]
    named = ", ".join(f"{t}/{i}" for t, i in shown[:MAX_REFERRERS])
    more = " and others" if len(shown) > MAX_REFERRERS else ""
    by = f": {named}{more}" if named else ""
    raise FhirError("conflict", f"{res_type}/{res_id} cannot be deleted while current resources refer to "
                    f"it{by} (delete or repoint them first)", status=409, expression=where or None)


async def check_person_delete(conn: AsyncConnection, access: Access, patient_id: str) -> None:
    """403 `forbidden` when a client deletes a person's Patient without sight of every part of
    their record. A delete is judged on the referrers its client may see (`check_delete`), so a
    partner that sees who someone is but not their health could otherwise delete the Patient a
    whole hidden record rests on. Judged on what the client may see of each part — the consent
    rule applied to the parts, not to any stored resource — so the answer is the same whether or
    not anything is recorded in the parts it may not see (a write into such a part answers 403
    alike: hub.store.resources.check_may_write). Called only once the Patient is known to be
    one the client may see (a hidden one is deleted as an absent one: nothing, 204)."""
    visible = visible_sql(access, "r")
    if visible is None:
        return
    predicate, params = visible
    cur = await conn.execute(
        f"SELECT bool_and({predicate}) FROM unnest(%s::text[]) AS p(part), LATERAL (SELECT %s::text AS patient_id, "
        "p.part AS part, (SELECT owner FROM resource WHERE res_type = 'Patient' AND res_id = %s) AS owner) AS r",
        [*params, list(PARTS), patient_id, patient_id])
    (sees_all,) = await cur.fetchone()
    if not sees_all:
        raise FhirError("forbidden", "this client may not delete a person's Patient record: that needs sight of "
                        "every part of their record (ask the person's coordinator)", status=403)


# The plan worker's queue (hub.pipeline.planlife), which also takes deleted resources to review
# for references left pointing at them (hub.pipeline.dangling).
_QUEUE = "INSERT INTO plan_followup (res_type, res_id) VALUES (%s, %s)"


async def queue_review(conn: AsyncConnection, res_type: str, res_id: str) -> None:
    """Queue a deleted resource for the hub's review of what still refers to it, in the delete's
    own transaction (gone with it if it rolls back), on every delete a client makes — whether or
    not anything hidden refers to it, so the request does the same work either way — and wake
    the workers at commit."""
    await conn.execute(_QUEUE, (res_type, res_id))
    await conn.execute("SELECT pg_notify(%s, '')", (FOLLOWUP_CHANNEL,))
