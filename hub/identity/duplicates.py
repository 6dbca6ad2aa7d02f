"""One person, one record, for writes through the API: a Patient whose NHS number, MOD service
number or council person id already belongs to another current Patient is refused (422
`duplicate`), so a client cannot make a second record of someone the feeds (or another client)
already recorded. A client that wants the existing record asks for it with a conditional create
(If-None-Exist, or criteria on the POST URL). A probable match on demographics alone is never
refused or merged: it raises a review Task, as the pipeline does.

Placeholder NHS numbers (0000000000, repeated digits, outside the issued ranges; see
hub.fhir.identifiers.is_issuable_nhs_number) identify no one: they are never matched on, and
criteria that would select a person by one are refused."""
from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from hub.fhir.errors import FhirError
from hub.fhir.identifiers import (
    LOCAL_AUTHORITY_PERSON_ID,
    MOD_SERVICE_NUMBER,
    NHS_NUMBER,
    is_issuable_nhs_number,
)
from hub.identity import matching
from hub.search.access import Access, visible_sql
from hub.store import people

# The identifiers that each name one person: two current Patients may not share one.
IDENTIFYING = (NHS_NUMBER, MOD_SERVICE_NUMBER, LOCAL_AUTHORITY_PERSON_ID)


def identifying(patient: dict[str, Any]) -> list[tuple[str, str]]:
    """(system, value) of each identifying identifier a Patient carries; placeholder NHS
    numbers are left out (they identify no one)."""
    found = []
    for system, value in matching.identifiers(patient):
        if system not in IDENTIFYING:
            continue
        if system == NHS_NUMBER:
            value = value.replace(" ", "")
            if not is_issuable_nhs_number(value):
                continue
        found.append((system, value))
    return sorted(set(found))


def refuse_placeholder_criteria(res_type: str, pairs: list[tuple[str, str]]) -> None:
    """422 for conditional criteria that would select a Patient by a placeholder NHS number:
    any person sent with that number would be taken for the one asked about."""
    if res_type != "Patient":
        return
    for name, value in pairs:
        if name.split(":")[0] != "identifier":
            continue
        for token in value.split(","):
            system, bar, code = token.partition("|")
            if bar and system == NHS_NUMBER and not is_issuable_nhs_number(code.replace(" ", "")):
                raise FhirError("processing", f"{code[:20]} is not an NHS number any one person holds (a "
                                "placeholder, or outside the issued ranges): it cannot select a person",
                                expression=name, status=422)


async def check_new_identity(conn: AsyncConnection, access: Access, patient: dict[str, Any],
                             res_id: str | None, *, new: bool = True) -> bool:
    """Refuse (422 `duplicate`) a Patient written as `res_id` whose identifying identifier
    another current Patient already carries (a record retired by a merge, `replaced-by`, does
    not count), naming that Patient. Serialised with the pipeline's identity resolution (the same
    advisory locks), so neither path can create the second record while the other creates the
    first.

    When every Patient carrying the identifier is one `access` may not see, a refusal would tell
    the writer that the person is in the hub (for a veteran with complex needs, itself the
    sensitive fact). A `new` Patient is then answered exactly as one nobody holds — created — but
    held apart: returns True, and the store keeps it as the writer's own record (owner set),
    out of the shared record and of identity matching, with a held_apart row from which the
    review pass raises a review Task in the existing person's record for an operator. The same
    statements run whether or not such a person exists. An existing Patient given such an
    identifier is refused without naming anyone (a record everyone else sees cannot be held
    apart, and one person must not have two shared records)."""
    keys = identifying(patient)
    if not keys:
        return False
    await people.lock_identity(conn, [f"identifier:{s}|{v}" for s, v in keys])
    visible = visible_sql(access, "r")
    predicate, params = visible if visible is not None else ("TRUE", [])
    cur = await conn.execute(
        f"SELECT DISTINCT t.system, t.code, t.res_id, {predicate} FROM idx_token t JOIN resource r "
        "ON r.res_type = t.res_type AND r.res_id = t.res_id AND NOT r.deleted "
        "JOIN unnest(%s::text[], %s::text[]) AS k(system, code) ON t.system = k.system AND t.code = k.code "
        "WHERE t.res_type = 'Patient' AND t.param = 'identifier' AND t.res_id <> %s "
        "AND NOT (r.content::jsonb @? '$.link[*] ? (@.type == \"replaced-by\")') ORDER BY 3",
        [*params, [s for s, _ in keys], [v for _, v in keys], res_id or ""])
    rows = await cur.fetchall()
    seen = [row for row in rows if row[3]]
    hidden = sorted({row[2] for row in rows if not row[3]}) if new else []
    await conn.execute("INSERT INTO held_apart (patient_id, duplicate_of, owner) SELECT %s, d, %s "
                       "FROM unnest(%s::text[]) AS d ON CONFLICT DO NOTHING",
                       (res_id or "", access.owner_key, [] if seen else hidden))
    if not seen and (hidden or not rows):
        return bool(hidden)
    system, value, other, _ = (seen or rows)[0]
    label = {NHS_NUMBER: "NHS number", MOD_SERVICE_NUMBER: "MOD service number",
             LOCAL_AUTHORITY_PERSON_ID: "council person id"}[system]
    who = f"Patient/{other}" if seen else "another person"
    raise FhirError("duplicate", f"{label} {value} already belongs to {who}: one person has one record "
                    "(update that Patient, or create with If-None-Exist to be given it)",
                    expression="Patient.identifier", status=422)


async def queue_review(conn: AsyncConnection, patient_id: str, client: str) -> None:
    """Put a Patient an API client created in the review pass's queue (hub.identity.matching:
    review_new_people), where it is scored against everyone already recorded."""
    await people.link_patient(conn, f"{API_SOURCE}{client}", patient_id, patient_id, "new-unreviewed")
    await people.announce_review(conn)  # the plan worker runs the review pass: no feed needs to arrive


API_SOURCE = "api:"
