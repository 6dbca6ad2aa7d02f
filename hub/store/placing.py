"""Placing resources in people's records: what hub.consent.placement needs from the store — who
an identifier names (among the people the writer may see), whose record a person's own record
is (shared, or held apart with one organisation), and where the entries a resource lists sit —
fetched with at most three statements for a write or for a whole recorder batch.

The statements a write runs depend only on what the write says, never on what the record holds
(a hidden person is looked for exactly as an absent one), so neither the answer nor the time it
takes tells a writer about someone it may not see."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from hub.consent.parts import outside_part
from hub.consent.placement import NOWHERE, Identifier, Key, Place, Pointers, decide, pointers
from hub.search.access import Access, visible_sql
from hub.search.extract import IndexRows

# A Patient retired by a merge names nobody now (its survivor does).
_NOT_RETIRED = "NOT (r.content::jsonb @? '$.link[*] ? (@.type == \"replaced-by\")')"


async def place(conn: AsyncConnection, access: Access, res_type: str, res_id: str, resource: dict[str, Any],
                rows: IndexRows) -> Place:
    """The place of one resource `access` is about to write."""
    if res_type == "Group" and outside_part(resource) is not None:
        # A Group about many people at once that says which part it holds (a cohort's members)
        # sits outside every record in that part, not held apart with its writer.
        return _outside(resource)
    found = pointers(res_type, res_id, resource, rows)
    if not found.needs_store() and not found.foreign:
        return _outside(resource)
    placed = (await resolve(conn, access, [found], known={}))[0]
    return _outside(resource) if placed == NOWHERE else placed


def _outside(resource: dict[str, Any]) -> Place:
    """A resource in nobody's record sits in the part its tag names, if any (a cohort's member
    Group: data about many people that only classes seeing that part by default may read)."""
    part = outside_part(resource)
    return NOWHERE if part is None else Place(None, part)


async def resolve(conn: AsyncConnection, access: Access, found: list[Pointers], *,
                  known: dict[Key, Place]) -> list[Place]:
    """The places of several resources written together (a recorder batch): `known` holds the
    places of what the batch itself writes, which entries may name."""
    identifiers = sorted({i for f in found for i in f.identifiers})
    people = await _people(conn, access, identifiers)
    persons = {p for f in found for p in f.primary | f.secondary | ({f.self_patient} if f.self_patient else set())}
    persons |= {p for p in people.values() if p}
    owners = await _owners(conn, persons)
    wanted = sorted({k for f in found for k in f.entries | f.used if k not in known})
    entry_places = {**await places(conn, wanted), **known}
    return [decide(f, people=people, entry_places=entry_places, owners=owners, writer=access.owner_key)
            for f in found]


async def _people(conn: AsyncConnection, access: Access, identifiers: list[Identifier]) -> dict[Identifier, str | None]:
    """Each identifier → the one current Patient `access` may see who carries it; None when
    nobody it may see does, or several do (it names no one in particular)."""
    if not identifiers:
        return {}
    visible = visible_sql(access, "r")
    predicate, params = visible if visible is not None else ("TRUE", [])
    cur = await conn.execute(
        "SELECT DISTINCT k.system, k.code, r.res_id FROM unnest(%s::text[], %s::text[]) AS k(system, code) "
        "JOIN idx_token t ON t.res_type = 'Patient' AND t.param = 'identifier' AND t.system = k.system "
        "AND t.code = k.code JOIN resource r ON r.res_type = 'Patient' AND r.res_id = t.res_id AND NOT r.deleted "
        f"WHERE {_NOT_RETIRED} AND {predicate}",
        [[s for s, _ in identifiers], [v for _, v in identifiers], *params])
    found: dict[Identifier, set[str]] = {}
    for system, code, patient_id in await cur.fetchall():
        found.setdefault((system, code), set()).add(patient_id)
    return {i: (next(iter(found[i])) if len(found.get(i, ())) == 1 else None) for i in identifiers}


async def _owners(conn: AsyncConnection, persons: Iterable[str]) -> dict[str, str | None]:
    """Each stored Patient → the owner of their record (None: the shared record)."""
    ordered = sorted(persons)
    if not ordered:
        return {}
    cur = await conn.execute("SELECT res_id, owner FROM resource WHERE res_type = 'Patient' AND res_id = ANY(%s)",
                             (ordered,))
    return dict(await cur.fetchall())


_PLACES = ("SELECT r.res_type, r.res_id, r.patient_id, r.part, r.owner FROM resource r "
           "JOIN unnest(%s::text[], %s::text[]) AS k(res_type, res_id) USING (res_type, res_id) "
           "WHERE r.patient_id IS NOT NULL OR r.owner IS NOT NULL")


async def places(conn: AsyncConnection, keys: list[Key]) -> dict[Key, Place]:
    """The place of each stored resource among `keys` that sits in someone's record or apart."""
    if not keys:
        return {}
    cur = await conn.execute(_PLACES, ([t for t, _ in keys], [i for _, i in keys]))
    return {(t, i): Place(p, part, owner) for t, i, p, part, owner in await cur.fetchall()}
