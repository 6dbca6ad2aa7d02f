"""Lookups identity resolution needs, over the search index and the person_link table."""
from __future__ import annotations

from psycopg import AsyncConnection

from hub.search.values import date_range


async def linked_patient(conn: AsyncConnection, source: str, source_id: str) -> str | None:
    cur = await conn.execute("SELECT patient_id FROM person_link WHERE source = %s AND source_id = %s",
                             (source, source_id))
    row = await cur.fetchone()
    return row[0] if row else None


async def linked_patients(conn: AsyncConnection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """linked_patient for many (source, source id) keys in one statement; unlinked keys are absent."""
    if not keys:
        return {}
    cur = await conn.execute(
        "SELECT l.source, l.source_id, l.patient_id FROM person_link l "
        "JOIN unnest(%s::text[], %s::text[]) AS k(source, source_id) USING (source, source_id)",
        ([s for s, _ in keys], [i for _, i in keys]))
    return {(s, i): p for s, i, p in await cur.fetchall()}


async def existing_patients(conn: AsyncConnection, ids: set[str]) -> set[str]:
    """The ids among `ids` of Patients in the record (deleted ones included: a reference to
    them is not dangling, only to a person who was removed)."""
    if not ids:
        return set()
    cur = await conn.execute("SELECT res_id FROM resource WHERE res_type = 'Patient' AND res_id = ANY(%s)",
                             (list(ids),))
    return {row[0] for row in await cur.fetchall()}


async def link_patient(conn: AsyncConnection, source: str, source_id: str, patient_id: str, method: str) -> None:
    await conn.execute(
        "INSERT INTO person_link (source, source_id, patient_id, method) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (source, source_id) DO UPDATE SET patient_id = EXCLUDED.patient_id, method = EXCLUDED.method",
        (source, source_id, patient_id, method))


REVIEW_CHANNEL = "ipc_identity_review"


async def announce_review(conn: AsyncConnection) -> None:
    """Wake the review pass (the plan worker listens) when the writing transaction commits."""
    await conn.execute("SELECT pg_notify(%s, '')", (REVIEW_CHANNEL,))


async def lock_review_pass(conn: AsyncConnection) -> None:
    """One review pass at a time, until the transaction ends (recorders and plan workers)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('ipc-hub:identity-review', 0))")


async def anyone_to_review(conn: AsyncConnection) -> bool:
    # The same people unreviewed_people finds (a link whose Patient is deleted or not there is
    # never scored): otherwise a caller looping until nobody is left would never stop.
    cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM person_link l JOIN resource r ON r.res_type = 'Patient' "
                             "AND r.res_id = l.patient_id AND NOT r.deleted WHERE l.method = 'new-unreviewed')"
                             " OR EXISTS (SELECT 1 FROM held_apart WHERE NOT reviewed)")
    return bool((await cur.fetchone())[0])


async def repoint_links(conn: AsyncConnection, from_patient: str, to_patient: str) -> None:
    """After a merge: every source record that meant `from_patient` now means `to_patient`."""
    await conn.execute("UPDATE person_link SET patient_id = %s, method = 'merge' WHERE patient_id = %s",
                       (to_patient, from_patient))


async def patients_with_identifier(conn: AsyncConnection, system: str, value: str) -> list[str]:
    """Current, undeleted Patients of the shared record carrying system|value, oldest id first
    (a Patient held apart with the organisation that wrote it is no one else's to match)."""
    cur = await conn.execute(
        "SELECT DISTINCT t.res_id FROM idx_token t JOIN resource r "
        "ON r.res_type = t.res_type AND r.res_id = t.res_id AND NOT r.deleted AND r.owner IS NULL "
        "WHERE t.res_type = 'Patient' AND t.param = 'identifier' AND t.system = %s AND t.code = %s "
        "ORDER BY t.res_id", (system, value))
    return [row[0] for row in await cur.fetchall()]


async def candidates_for_review(conn: AsyncConnection, birth_date: str, families: list[str],
                                exclude: str) -> list[tuple[str, str]]:
    """(id, content) of Patients born on `birth_date` who share a family name (compared as
    hub.identity compares names: letters and digits only, lower case) — the only people a
    demographic score can rate a probable match, since birth date and family name are both
    needed to reach its threshold. Capped, as a guard; with both filters it is rarely reached.
    The birth date is matched as the exact day range it indexes to, so the index is searched for
    one key instead of scanned over every earlier birth date."""
    day = date_range(birth_date)
    if day is None:
        return []
    # Planner-proofing, measured: without statistics on the normalised-name filter the planner
    # starts from the family-name index and scans every surname per candidate (5 ms a person).
    # The CTE starts it from the few people born that day, and `param || ''` keeps it on the
    # (res_type, res_id) index for each candidate's names.
    cur = await conn.execute(
        "WITH born AS MATERIALIZED (SELECT res_id FROM idx_date WHERE res_type = 'Patient' "
        "AND param = 'birthdate' AND low = %s AND high = %s AND res_id <> %s) "
        "SELECT r.res_id, r.content::text FROM born b JOIN resource r "
        "ON r.res_type = 'Patient' AND r.res_id = b.res_id AND NOT r.deleted "
        "WHERE EXISTS (SELECT 1 FROM idx_string s WHERE s.res_type = 'Patient' "
        "AND s.res_id = b.res_id AND s.param || '' = 'family' "
        "AND regexp_replace(s.value_norm, '[^[:alnum:]]', '', 'g') = ANY(%s)) LIMIT 200",
        (*day, exclude, families))
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def lock_identity(conn: AsyncConnection, keys: list[str]) -> None:
    """Serialise resolution of people who share a key (an NHS number, an identifier, a birth
    date) until this transaction ends, so two concurrent recorders cannot each create the same
    person, nor miss each other's new record when scoring. Sorted, to keep deadlocks rare (a
    deadlock is retried as a transient failure)."""
    for key in sorted(set(keys)):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


# People scored in one review pass (one transaction): few enough that a pass over a crowd of
# look-alikes (each may raise a Task with up to 200 others, each with its Provenance) ends in a
# second or two, so a worker asked to stop stops (50 took over 30 s on a loaded machine).
REVIEW_PASS_PEOPLE = 5


async def unreviewed_people(conn: AsyncConnection) -> list[tuple[str, str, str]]:
    """(source, patient id, Patient content) of new people the review pass has not yet scored,
    oldest first (by their first version), so of two look-alikes new in one pass the later is
    scored after the earlier has been marked, and raises the pair's one Task."""
    cur = await conn.execute(
        "SELECT l.source, l.patient_id, min(r.content::text), min(v.last_updated) AS first_recorded "
        "FROM person_link l JOIN resource r ON r.res_type = 'Patient' AND r.res_id = l.patient_id AND NOT r.deleted "
        "LEFT JOIN resource_version v ON v.res_type = 'Patient' AND v.res_id = l.patient_id AND v.version = 1 "
        "WHERE l.method = 'new-unreviewed' GROUP BY l.source, l.patient_id "
        "ORDER BY first_recorded NULLS LAST, l.patient_id LIMIT %s", (REVIEW_PASS_PEOPLE,))
    return [(row[0], row[1], row[2]) for row in await cur.fetchall()]


async def still_unreviewed(conn: AsyncConnection, patient_ids: list[str]) -> set[str]:
    """Those of `patient_ids` the review pass has yet to score."""
    if not patient_ids:
        return set()
    cur = await conn.execute("SELECT DISTINCT patient_id FROM person_link WHERE method = 'new-unreviewed' "
                             "AND patient_id = ANY(%s)", (patient_ids,))
    return {row[0] for row in await cur.fetchall()}


async def mark_reviewed(conn: AsyncConnection, patient_id: str) -> None:
    await conn.execute("UPDATE person_link SET method = 'new' WHERE patient_id = %s AND method = 'new-unreviewed'",
                       (patient_id,))


async def people_by_identifier(conn: AsyncConnection, system: str, values: set[str]) -> dict[str, str]:
    """value → the current Patient carrying system|value (a retired one, `replaced-by` another
    after a merge, is passed over for its survivor)."""
    if not values:
        return {}
    cur = await conn.execute(
        "SELECT t.code, min(t.res_id) FROM idx_token t JOIN resource r "
        "ON r.res_type = t.res_type AND r.res_id = t.res_id AND NOT r.deleted "
        "WHERE t.res_type = 'Patient' AND t.param = 'identifier' AND t.system = %s AND t.code = ANY(%s) "
        "AND NOT (r.content::jsonb @? '$.link[*] ? (@.type == \"replaced-by\")') GROUP BY t.code",
        (system, sorted(values)))
    return {row[0]: row[1] for row in await cur.fetchall()}


async def held_apart_unreviewed(conn: AsyncConnection) -> list[tuple[str, str, str]]:
    """(held-apart Patient, the person it duplicates, the organisation that wrote it) for each
    one the review pass has not yet raised a Task for; marked raised as they are read (in the
    review pass's transaction)."""
    cur = await conn.execute(
        "UPDATE held_apart SET reviewed = true WHERE (patient_id, duplicate_of) IN (SELECT patient_id, duplicate_of "
        "FROM held_apart WHERE NOT reviewed ORDER BY held_at LIMIT 1000) RETURNING patient_id, duplicate_of, owner")
    return sorted((row[0], row[1], row[2]) for row in await cur.fetchall())
