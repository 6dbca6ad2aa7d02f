"""The people who sign in (`hub_user`): local accounts and accounts linked to the external
OpenID Connect provider, with what lockout needs (failed attempts, locked until)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from psycopg import AsyncConnection

from hub.store.grants import revoke_families_of_user

_COLUMNS = ("user_id, username, display_name, role, organisation, organisation_system, partner_class, "
            "practitioner_id, practitioner_role_id, password_hash, totp_secret, external_subject, status, "
            "failed_attempts, locked_until, created_at, last_sign_in_at, fhir_user, patient_id")


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    username: str
    display_name: str
    role: str  # coordinator, commissioner, clinician, operator; person, proxy (citizens)
    organisation: str
    organisation_system: str
    partner_class: str
    practitioner_id: str | None  # staff only
    practitioner_role_id: str | None
    password_hash: str | None = None
    totp_secret: str | None = None
    external_subject: str | None = None
    status: str = "active"
    failed_attempts: int = 0
    locked_until: datetime | None = None
    created_at: datetime | None = None
    last_sign_in_at: datetime | None = None
    # Citizens (issue 18): the Patient or RelatedPerson they sign in as, and whose record opens.
    fhir_user: str | None = None
    patient_id: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def is_citizen(self) -> bool:
        return self.fhir_user is not None

    @property
    def practitioner(self) -> str:
        """Who the account is in the record: the staff member's Practitioner, or for a citizen
        their Patient or RelatedPerson (what tokens, audit and Provenance name)."""
        return self.fhir_user if self.fhir_user else f"Practitioner/{self.practitioner_id}"


async def insert_user(conn: AsyncConnection, user: UserRecord) -> None:
    await conn.execute(
        "INSERT INTO hub_user (user_id, username, display_name, role, organisation, organisation_system,"
        " partner_class, practitioner_id, practitioner_role_id, password_hash, totp_secret, external_subject,"
        " fhir_user, patient_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (user.user_id, user.username, user.display_name, user.role, user.organisation,
         user.organisation_system, user.partner_class, user.practitioner_id, user.practitioner_role_id,
         user.password_hash, user.totp_secret, user.external_subject, user.fhir_user, user.patient_id))


async def _one(conn: AsyncConnection, where: str, value: str) -> UserRecord | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM hub_user WHERE {where} = %s", (value,))
    row = await cur.fetchone()
    return UserRecord(*row) if row else None


async def get_user(conn: AsyncConnection, user_id: str) -> UserRecord | None:
    return await _one(conn, "user_id", user_id)


async def user_by_username(conn: AsyncConnection, username: str) -> UserRecord | None:
    return await _one(conn, "lower(username)", username.strip().lower())


async def user_by_external_subject(conn: AsyncConnection, subject: str) -> UserRecord | None:
    return await _one(conn, "external_subject", subject)


async def list_users(conn: AsyncConnection) -> list[UserRecord]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM hub_user ORDER BY username")
    return [UserRecord(*row) for row in await cur.fetchall()]


async def set_status(conn: AsyncConnection, username: str, status: str) -> UserRecord | None:
    """Enable or disable an account; a disabled user's sessions and refresh tokens end now."""
    async with conn.transaction():
        cur = await conn.execute(
            f"UPDATE hub_user SET status = %s WHERE lower(username) = %s RETURNING {_COLUMNS}",
            (status, username.strip().lower()))
        row = await cur.fetchone()
        if row is None:
            return None
        user = UserRecord(*row)
        if status != "active":
            await end_everything_of(conn, user.user_id)
    return user


async def set_password(conn: AsyncConnection, username: str, password_hash: str,
                       totp_secret: str | None, *, keep_totp: bool) -> UserRecord | None:
    """A new password (and TOTP secret unless kept): lockout cleared, sessions ended."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE hub_user SET password_hash = %s, failed_attempts = 0, locked_until = NULL,"
            " totp_secret = CASE WHEN %s THEN totp_secret ELSE %s END"
            f" WHERE lower(username) = %s RETURNING {_COLUMNS}",
            (password_hash, keep_totp, totp_secret, username.strip().lower()))
        row = await cur.fetchone()
        if row is None:
            return None
        user = UserRecord(*row)
        await end_everything_of(conn, user.user_id)
    return user


async def end_everything_of(conn: AsyncConnection, user_id: str) -> None:
    """End a person's browser sessions and refresh tokens (their access tokens run out by
    themselves within the token lifetime; those issued with refresh tokens are revoked now)."""
    await conn.execute("DELETE FROM browser_session WHERE user_id = %s", (user_id,))
    await revoke_families_of_user(conn, user_id)


async def record_failure(conn: AsyncConnection, user_id: str, *, max_failures: int,
                         lockout_s: int) -> tuple[int, datetime | None]:
    """Count a failed sign-in; at `max_failures` in a row the account locks for `lockout_s`.
    Returns (failures so far, locked until)."""
    cur = await conn.execute(
        "UPDATE hub_user SET failed_attempts = failed_attempts + 1,"
        " locked_until = CASE WHEN failed_attempts + 1 >= %s THEN now() + make_interval(secs => %s)"
        "                     ELSE locked_until END"
        " WHERE user_id = %s RETURNING failed_attempts, locked_until",
        (max_failures, lockout_s, user_id))
    row = await cur.fetchone()
    return (row[0], row[1]) if row else (0, None)


async def record_success(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(
        "UPDATE hub_user SET failed_attempts = 0, locked_until = NULL, last_sign_in_at = now()"
        " WHERE user_id = %s", (user_id,))


async def unlock(conn: AsyncConnection, user_id: str) -> None:
    """A lock whose time has passed: the count starts again."""
    await conn.execute("UPDATE hub_user SET failed_attempts = 0, locked_until = NULL WHERE user_id = %s",
                       (user_id,))


# --- people signing in themselves (issue 18) ------------------------------------------------------

async def patients_with_nhs_number(conn: AsyncConnection, nhs_number: str, system: str) -> list[str]:
    """The current Patients in the hub holding this NHS number (held-apart and inactive, that is
    merged, records left out): at most a few, and the caller refuses anything but exactly one."""
    cur = await conn.execute(
        "SELECT DISTINCT r.res_id FROM idx_token t JOIN resource r ON r.res_type = t.res_type AND r.res_id = t.res_id"
        " WHERE t.res_type = 'Patient' AND t.param = 'identifier' AND t.system = %s AND t.code = %s"
        " AND NOT r.deleted AND r.owner IS NULL AND coalesce(r.content->>'active', 'true') <> 'false'"
        " ORDER BY r.res_id LIMIT 3", (system, nhs_number))
    return [row[0] for row in await cur.fetchall()]


async def link_external_citizen(conn: AsyncConnection, user: UserRecord) -> UserRecord:
    """The account of a person signing in through the people's provider: made at their first
    sign-in, and linked again to the Patient their NHS number matches now (the provider's proofed
    NHS number is what links them, not an earlier match)."""
    async with conn.transaction():
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM hub_user WHERE external_subject = %s FOR UPDATE",
                                 (user.external_subject,))
        row = await cur.fetchone()
        if row is None:
            await insert_user(conn, user)
            return user
        found = UserRecord(*row)
        if found.patient_id != user.patient_id or found.fhir_user != user.fhir_user:
            await conn.execute("UPDATE hub_user SET patient_id = %s, fhir_user = %s WHERE user_id = %s",
                               (user.patient_id, user.fhir_user, found.user_id))
            await end_everything_of(conn, found.user_id)
            found = replace(found, patient_id=user.patient_id, fhir_user=user.fhir_user)
        return found


# --- records a citizen account opens (issue 18: a proxy for several people) ------------------------

@dataclass(frozen=True)
class CitizenLink:
    fhir_user: str   # the Patient (the person) or RelatedPerson (acting for them) they sign in as
    patient_id: str  # whose record it opens


async def links_of(conn: AsyncConnection, user: UserRecord) -> list[CitizenLink]:
    """Every record a citizen account may open: the one its row names, then the further ones
    (oldest first). Empty for staff. Read from the rows (not from `user`, which may already be
    launched into another of its records)."""
    if not user.is_citizen:
        return []
    cur = await conn.execute(
        "SELECT fhir_user, patient_id, 0 AS n, NULL::timestamptz AS at FROM hub_user WHERE user_id = %s "
        "AND fhir_user IS NOT NULL UNION ALL SELECT l.fhir_user, l.patient_id, 1, l.linked_at FROM citizen_link l "
        "JOIN hub_user u USING (user_id) WHERE l.user_id = %s AND l.patient_id <> u.patient_id "
        "ORDER BY n, at, patient_id", (user.user_id, user.user_id))
    return [CitizenLink(row[0], row[1]) for row in await cur.fetchall()]


async def add_link(conn: AsyncConnection, user_id: str, link: CitizenLink, linked_by: str) -> bool:
    """Let a proxy's account open a further record; False if it already opens that record."""
    cur = await conn.execute(
        "INSERT INTO citizen_link (user_id, fhir_user, patient_id, linked_by) SELECT %s, %s, %s, %s "
        "WHERE NOT EXISTS (SELECT 1 FROM hub_user WHERE user_id = %s AND patient_id = %s) "
        "ON CONFLICT (user_id, patient_id) DO NOTHING",
        (user_id, link.fhir_user, link.patient_id, linked_by, user_id, link.patient_id))
    return cur.rowcount == 1


async def set_launch(conn: AsyncConnection, family_id: str, user_id: str, link: CitizenLink) -> None:
    """The record a sign-in chose (SMART patient selection) for every token of its family."""
    # Choices of sign-ins none of whose refresh tokens can still be used (a day's grace for the
    # code itself): a choice is never forgotten while its tokens live, whatever their lifetime.
    await conn.execute("DELETE FROM launch_context l WHERE l.created_at < now() - interval '1 day' AND NOT EXISTS "
                       "(SELECT 1 FROM oauth_refresh_token t WHERE t.family_id = l.family_id AND t.expires_at > now() "
                       "AND t.revoked_at IS NULL)")
    await conn.execute("INSERT INTO launch_context (family_id, user_id, patient_id, fhir_user) VALUES "
                       "(%s, %s, %s, %s) ON CONFLICT (family_id) DO NOTHING",
                       (family_id, user_id, link.patient_id, link.fhir_user))


async def in_launch(conn: AsyncConnection, user: UserRecord | None, family_id: str) -> UserRecord | None:
    """`user` as the sign-in `family_id` launched them: opening the record they chose, if they
    chose one and may still open it (else None: the grant fails); unchanged if none was chosen."""
    if user is None or not user.is_citizen:
        return user
    cur = await conn.execute("SELECT patient_id, fhir_user FROM launch_context WHERE family_id = %s AND user_id = %s",
                             (family_id, user.user_id))
    row = await cur.fetchone()
    if row is None:
        return user
    chosen = CitizenLink(row[1], row[0])
    if chosen not in await links_of(conn, user):
        return None
    return replace(user, patient_id=chosen.patient_id, fhir_user=chosen.fhir_user)


@dataclass(frozen=True)
class LinkedAccount:
    username: str
    display_name: str
    role: str
    status: str
    fhir_user: str


async def accounts_opening(conn: AsyncConnection, patient_id: str) -> list[LinkedAccount]:
    """The citizen accounts that open a person's record (as the person, or acting for them)."""
    cur = await conn.execute(
        "SELECT username, display_name, role, status, fhir_user FROM hub_user WHERE patient_id = %s "
        "UNION SELECT u.username, u.display_name, u.role, u.status, l.fhir_user FROM citizen_link l "
        "JOIN hub_user u USING (user_id) WHERE l.patient_id = %s ORDER BY 1", (patient_id, patient_id))
    return [LinkedAccount(*row) for row in await cur.fetchall()]
