"""Acting for someone: what a delegation Consent lets a parent, carer or attorney see.

A delegation is a Consent of the person (`patient`), `status` active, with the category
`proxy-delegation` (ipc-plan-category), whose provision permits one or more actors — each a
RelatedPerson of that person (`actor.reference`), in a relationship that carries authority to
act (`actor.role`: a lasting or enduring power of attorney, a deputy, a guardian, a parent) — the
record parts listed in `provision.code` (`ipc-record-part`), for `provision.period`. Its evidence
(the registered lasting power of attorney, a court order, a birth certificate seen) is
`sourceReference` (a DocumentReference) or `sourceAttachment`; without evidence it grants
nothing. Nested provisions are not read: what a proxy may see must be stated plainly at the top.

Rows go to `proxy_delegation` in the Consent's own transaction (hub.consent.grants.write_grants
calls `write_delegation` on every write path), so withdrawing it (any status but active, or a
delete) ends access on the next request; the period is judged in each query (hub/search/
access.py), so expiry needs no job. A parent's delegation (`PRN`, `MTH`, `FTH`, `GUARD`: parental
responsibility) also records the child's birth date, and ends on the young person's birthday at
HUB_PROXY_PASSES_AT_AGE — from then on the record is theirs alone (docs/person.md gives the law).

Who may write a delegation is decided like a record-sharing consent (hub.consent.authority): the
person, or a staff role the operator authorises after a recorded conversation; never a partner's
system, and never the proxy (no one extends their own authority)."""
from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from hub.consent.parts import PART_SYSTEM, PARTS, PLAN_CATEGORY_SYSTEM
from hub.fhir import jsontext

DELEGATION_CATEGORY = "proxy-delegation"
_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
# Relationships in which someone may act for the person at all (a lasting or enduring power of
# attorney, health care or property; a court-appointed deputy or guardian; a parent).
ATTORNEY_ROLES = frozenset({"POWATT", "HPOWATT", "DPOWATT", "SPOWATT"})
PARENTAL_ROLES = frozenset({"PRN", "MTH", "FTH", "GUARD"})
ACTING_ROLES = ATTORNEY_ROLES | PARENTAL_ROLES


def is_delegation(resource: dict[str, Any] | None) -> bool:
    """A proxy delegation Consent (whatever its status)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Consent":
        return False
    return any(c.get("system") == PLAN_CATEGORY_SYSTEM and c.get("code") == DELEGATION_CATEGORY
               for concept in resource.get("category") or () if isinstance(concept, dict)
               for c in concept.get("coding") or () if isinstance(c, dict))


def _codes(concept: Any, system: str) -> list[str]:
    return [c["code"] for c in (concept.get("coding") or () if isinstance(concept, dict) else ())
            if isinstance(c, dict) and c.get("system") == system and isinstance(c.get("code"), str)]


def evidence(resource: dict[str, Any]) -> str | None:
    """What the delegation rests on: the DocumentReference, or the attachment's title."""
    source = resource.get("sourceReference")
    if isinstance(source, dict) and isinstance(source.get("reference"), str):
        return source["reference"]
    attachment = resource.get("sourceAttachment")
    if isinstance(attachment, dict) and (attachment.get("url") or attachment.get("title") or attachment.get("data")):
        return str(attachment.get("url") or attachment.get("title") or "attachment")
    return None


def delegations_of(resource: dict[str, Any], patient_id: str | None) -> list[tuple[str, str, list[str], str | None,
                                                                                   str | None]]:
    """(related person id, role, parts, period start, period end) for each actor an active
    delegation with evidence names; nothing for anything else."""
    if patient_id is None or resource.get("status") != "active" or not is_delegation(resource):
        return []
    if evidence(resource) is None:
        return []
    provision = resource.get("provision")
    if not isinstance(provision, dict) or provision.get("type", "permit") != "permit":
        return []
    parts = sorted({p for concept in provision.get("code") or () for p in _codes(concept, PART_SYSTEM) if p in PARTS})
    if not parts:
        return []
    period = provision.get("period") if isinstance(provision.get("period"), dict) else {}
    found = []
    for actor in provision.get("actor") or ():
        if not isinstance(actor, dict):
            continue
        reference = (actor.get("reference") or {}).get("reference") if isinstance(actor.get("reference"), dict) else None
        roles = [r for r in _codes(actor.get("role"), _ROLE_CODE) if r in ACTING_ROLES]
        if not roles or not isinstance(reference, str) or not reference.startswith("RelatedPerson/") \
                or reference.count("/") != 1:
            continue
        found.append((reference.split("/")[1], roles[0], parts, period.get("start"), period.get("end")))
    return found


_RELATED = ("SELECT res_id, content::text FROM resource WHERE res_type = 'RelatedPerson' AND res_id = ANY(%s) "
            "AND NOT deleted")
_BIRTH_DATE = "SELECT content->>'birthDate' FROM resource WHERE res_type = 'Patient' AND res_id = %s AND NOT deleted"
_INSERT = ("INSERT INTO proxy_delegation (consent_id, related_person_id, patient_id, parts, period_start, period_end,"
           " child_birth_date, evidence) VALUES (%s, %s, %s, %s, %s::timestamptz, %s::timestamptz, %s::date, %s)")


async def write_delegation(conn: AsyncConnection, consent_id: str, resource: dict[str, Any] | None,
                           patient_id: str | None) -> int:
    """Replace a Consent's delegation rows (None: deleted), in its own transaction. A
    RelatedPerson that is not this person's (or is inactive) is granted nothing. Returns the rows
    written."""
    await conn.execute("DELETE FROM proxy_delegation WHERE consent_id = %s", (consent_id,))
    if resource is None:
        return 0
    found = delegations_of(resource, patient_id)
    if not found:
        return 0
    cur = await conn.execute(_RELATED, ([f[0] for f in found],))
    related = {res_id: jsontext.loads(text) for res_id, text in await cur.fetchall()}
    birth_date = None
    if any(role in PARENTAL_ROLES for _, role, _, _, _ in found):
        cur = await conn.execute(_BIRTH_DATE, (patient_id,))
        row = await cur.fetchone()
        birth_date = _date(row[0]) if row else None
    rows = []
    for related_id, role, parts, start, end in found:
        person = related.get(related_id)
        if person is None or person.get("active") is False or \
                (person.get("patient") or {}).get("reference") != f"Patient/{patient_id}":
            continue
        rows.append((consent_id, related_id, patient_id, parts, _instant(start), _instant(end),
                     birth_date if role in PARENTAL_ROLES else None, evidence(resource)))
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(_INSERT, rows)
    return len(rows)


def _date(text: str | None) -> str | None:
    """A FHIR date as a whole date (a year or year-month alone: its first day, so the young
    person's age is never counted late)."""
    if not text:
        return None
    parts = text.split("-")
    return "-".join([parts[0], parts[1] if len(parts) > 1 else "01", parts[2][:2] if len(parts) > 2 else "01"])


def _instant(text: str | None) -> str | None:
    """A FHIR dateTime for timestamptz (a date alone: the start of that day, UTC)."""
    if not text:
        return None
    return text if "T" in text else f"{_date(text)}T00:00:00Z"
