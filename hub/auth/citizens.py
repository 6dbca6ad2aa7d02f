"""Linking citizen accounts to records (issue 18): the person themselves (their Patient) or someone
acting for them (their RelatedPerson), by `ipc-hub users add-person` / `link-person` or by a
coordinator in the workspace (hub/web/person_access.py) — one set of checks for both:

- the Patient or RelatedPerson is in the record (current, not deleted), and a RelatedPerson
  names a Patient of this hub, whose record the account then opens;
- a person's account opens only their own record; a user name is one word and not taken; a
  password meets the policy (hub.auth.passwords);
- a further record for an existing account (a parent of two children) only for a proxy's
  account, as the RelatedPerson of that other person, and not a record it opens already.

Linking decides nothing about what the account sees: the person sees their record less what is
withheld from them, a proxy only what that person's delegation Consent allows (hub/consent/
delegation.py), judged per person on every request."""
from __future__ import annotations

from psycopg import AsyncConnection

from hub.auth.accounts import AccountError, new_citizen_account
from hub.auth.passwords import PasswordPolicyError
from hub.auth.roles import PROXY
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.store import resources
from hub.store import users as store
from hub.store.users import CitizenLink, UserRecord

CLI = "ipc-hub users"  # who linked, when the operator's command line did


async def _record_opened(conn: AsyncConnection, res_type: str, res_id: str) -> tuple[str | None, str]:
    """(the Patient id the Patient or RelatedPerson opens, why not)."""
    try:
        found = await resources.read(conn, res_type, res_id, access=Access.system())
    except FhirError:
        return None, f"{res_type}/{res_id} is not in the record"
    if res_type == "Patient":
        return res_id, ""
    content = jsontext.loads(found.content)
    if content.get("active") is False:
        return None, f"RelatedPerson/{res_id} is marked inactive"
    reference = (content.get("patient") or {}).get("reference") or ""
    if not reference.startswith("Patient/") or reference.count("/") != 1:
        return None, f"RelatedPerson/{res_id} names no Patient in this hub"
    return reference.split("/")[1], ""


async def link_citizen(conn: AsyncConnection, *, username: str, display_name: str, patient: str | None,
                       related_person: str | None, password: str | None,
                       external_subject: str | None = None) -> tuple[UserRecord | None, str]:
    """A new citizen account linked to a Patient (the person) or a RelatedPerson (acting for
    them). (None, why) when it cannot be made."""
    if (patient is None) == (related_person is None):
        return None, "give exactly one of --patient (the person) or --related-person (acting for them)"
    res_type, res_id = ("Patient", patient) if patient else ("RelatedPerson", related_person)
    opens, why = await _record_opened(conn, res_type, res_id)
    if opens is None:
        return None, why
    try:
        user = new_citizen_account(username=username, display_name=display_name, fhir_user=f"{res_type}/{res_id}",
                                   patient_id=opens, password=password, external_subject=external_subject)
    except (AccountError, PasswordPolicyError) as exc:
        return None, str(exc)
    async with conn.transaction():
        if await store.user_by_username(conn, username) is not None:
            return None, f"a user {username} already exists"
        await store.insert_user(conn, user)
    return user, ""


async def add_record(conn: AsyncConnection, *, username: str, related_person: str,
                     linked_by: str) -> tuple[UserRecord | None, CitizenLink | None, str]:
    """Let an existing proxy's account open a further person's record, as that person's
    RelatedPerson: (the account, the new link, "") or (None, None, why)."""
    user = await store.user_by_username(conn, username.strip())
    if user is None:
        return None, None, f"no user {username.strip()[:60]}"
    if user.role != PROXY:
        return None, None, (f"{user.username} is not an account acting for someone: a person's own account opens "
                            "their own record only")
    opens, why = await _record_opened(conn, "RelatedPerson", related_person)
    if opens is None:
        return None, None, why
    link = CitizenLink(f"RelatedPerson/{related_person}", opens)
    if any(found.patient_id == opens for found in await store.links_of(conn, user)):
        return None, None, f"{user.username} already opens that person's record"
    if not await store.add_link(conn, user.user_id, link, linked_by):
        return None, None, f"{user.username} already opens that person's record"
    return user, link, ""
