"""Staff accounts: making one (a Practitioner and a PractitionerRole in the record, and the
account row), and checking a local sign-in with lockout.

Lockout: after `max_failures` failed attempts in a row an account refuses every attempt, right
or wrong, for `lockout_s`; the count starts again after a success or once the lock has run out.
Attempts on a locked account do not extend it (so a stranger cannot keep someone locked out
forever by trying once every few minutes, only for one lockout period at a time)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.auth.organisations import default_system, organisation_system
from hub.auth.passwords import check_policy, hash_password, verify_password, verify_totp
from hub.auth.principal import PARTNER_CLASSES
from hub.auth.roles import PERSON, PROXY, ROLE_NAMES, ROLES
from hub.auth.sealing import Sealer
from hub.fhir.identifiers import CANONICAL_BASE, ODS_ORGANIZATION_CODE
from hub.store import users as store
from hub.store.users import UserRecord

STAFF_ROLE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/ipc-staff-role"
PARTNER_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/ipc-consent-partner"
USERNAME_SYSTEM = f"{CANONICAL_BASE}/Id/hub-user"
TOTP_PURPOSE = "totp"


class AccountError(ValueError):
    """An account that cannot be made or changed as asked (said to the operator as is)."""


@dataclass(frozen=True)
class NewAccount:
    user: UserRecord
    practitioner: dict[str, Any] | None  # None when the account names an existing Practitioner
    role: dict[str, Any]


def new_account(*, username: str, display_name: str, role: str, partner_class: str, organisation: str,
                organisation_system_name: str | None = None, password: str | None = None,
                totp_secret: str | None = None, external_subject: str | None = None,
                practitioner_id: str | None = None, sealer: Sealer | None = None) -> NewAccount:
    """The account row and the FHIR resources that say who the person is and for whom they work.
    A TOTP secret is kept sealed (`sealer` is then required)."""
    username = username.strip()
    if not username or any(c.isspace() for c in username):
        raise AccountError("a user name is one word, e.g. k.hughes")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if partner_class not in PARTNER_CLASSES:
        raise AccountError(f"partner class must be one of {', '.join(PARTNER_CLASSES)}")
    if not organisation.strip():
        raise AccountError("the organisation code must not be empty")
    if password is None and external_subject is None:
        raise AccountError("give a password (a local account) or --external-subject (sign-in through "
                           "the external OpenID Connect provider)")
    if password is not None:
        check_policy(password, username)
    system = organisation_system(organisation_system_name) if organisation_system_name \
        else default_system(partner_class)
    user_id = uuid.uuid4().hex
    user = UserRecord(
        user_id=user_id, username=username, display_name=display_name.strip() or username, role=role,
        organisation=organisation.strip(), organisation_system=system, partner_class=partner_class,
        practitioner_id=practitioner_id or f"staff-{user_id[:16]}", practitioner_role_id=f"staff-role-{user_id[:16]}",
        password_hash=hash_password(password) if password is not None else None,
        totp_secret=seal_totp(sealer, totp_secret) if totp_secret else None,
        external_subject=external_subject)
    return NewAccount(user, None if practitioner_id else practitioner(user), practitioner_role(user))


# Citizens belong to no partner organisation: each account is its own "organisation" in audit
# and in `owner` (what they write that the hub cannot place is seen only by them).
CITIZEN_SYSTEM = f"{CANONICAL_BASE}/Id/citizen-account"
CITIZEN_CLASS = "person"


def new_citizen_account(*, username: str, display_name: str, fhir_user: str, patient_id: str,
                        password: str | None = None, external_subject: str | None = None) -> UserRecord:
    """An account for the person (`fhir_user` their Patient) or someone acting for them (their
    RelatedPerson): signs in to the person's own app with `patient/` scopes, to `patient_id`'s
    record only."""
    username = username.strip()
    if not username or any(c.isspace() for c in username):
        raise AccountError("a user name is one word, e.g. d.whitfield")
    kind, _, ref_id = fhir_user.partition("/")
    if kind not in ("Patient", "RelatedPerson") or not ref_id or "/" in ref_id:
        raise AccountError("a citizen account is a Patient (the person) or a RelatedPerson (acting for them)")
    if kind == "Patient" and ref_id != patient_id:
        raise AccountError("the person's account opens their own record")
    if password is None and external_subject is None:
        raise AccountError("give a password (a local account) or an external subject")
    if password is not None:
        check_policy(password, username)
    user_id = uuid.uuid4().hex
    return UserRecord(
        user_id=user_id, username=username, display_name=display_name.strip() or username,
        role=PERSON if kind == "Patient" else PROXY, organisation=user_id, organisation_system=CITIZEN_SYSTEM,
        partner_class=CITIZEN_CLASS, practitioner_id=None, practitioner_role_id=None,
        password_hash=hash_password(password) if password is not None else None,
        external_subject=external_subject, fhir_user=fhir_user, patient_id=patient_id)


def practitioner(user: UserRecord) -> dict[str, Any]:
    given, _, family = user.display_name.rpartition(" ")
    name: dict[str, Any] = {"text": user.display_name}
    if given:
        name.update({"family": family, "given": given.split()})
    return {"resourceType": "Practitioner", "id": user.practitioner_id, "active": True,
            "identifier": [{"system": USERNAME_SYSTEM, "value": user.username}], "name": [name]}


def practitioner_role(user: UserRecord) -> dict[str, Any]:
    """The person's role for their organisation; the partner class says which consent rules apply."""
    organisation: dict[str, Any] = {"identifier": {"system": user.organisation_system, "value": user.organisation}}
    if user.organisation_system == ODS_ORGANIZATION_CODE:
        organisation["display"] = f"ODS {user.organisation}"
    return {
        "resourceType": "PractitionerRole", "id": user.practitioner_role_id, "active": user.active,
        "practitioner": {"reference": user.practitioner, "display": user.display_name},
        "organization": organisation,
        "code": [
            {"coding": [{"system": STAFF_ROLE_SYSTEM, "code": user.role, "display": ROLE_NAMES[user.role]}]},
            {"coding": [{"system": PARTNER_SYSTEM, "code": user.partner_class}]},
        ],
    }


def seal_totp(sealer: Sealer | None, secret: str) -> str:
    if sealer is None:
        raise AccountError("a TOTP secret needs the signing key to seal it")
    return sealer.seal(secret, TOTP_PURPOSE)


@dataclass(frozen=True)
class SignInPolicy:
    max_failures: int
    lockout_s: int


async def check_local_sign_in(conn: AsyncConnection, username: str, password: str, code: str,
                              policy: SignInPolicy, sealer: Sealer) -> UserRecord | None:
    """The account, if this is a right sign-in to an active, unlocked local account; else None
    (the caller says only that it failed). Wrong attempts are counted towards lockout."""
    user = await store.user_by_username(conn, username or "")
    now = datetime.now(UTC)
    locked = user is not None and user.locked_until is not None and user.locked_until > now
    if user is not None and user.locked_until is not None and not locked:
        await store.unlock(conn, user.user_id)
        user = replace(user, failed_attempts=0, locked_until=None)
    # The hash is checked whatever else is wrong, so every failure takes as long.
    right = verify_password(user.password_hash if user else None, password or "")
    if user is None:
        return None
    if locked:
        return None
    if right and user.active and _second_factor(user, code, sealer):
        await store.record_success(conn, user.user_id)
        return user
    await store.record_failure(conn, user.user_id, max_failures=policy.max_failures, lockout_s=policy.lockout_s)
    return None


def _second_factor(user: UserRecord, code: str, sealer: Sealer) -> bool:
    if not user.totp_secret:
        return True
    secret = sealer.unseal(user.totp_secret, TOTP_PURPOSE)
    # A secret that no longer opens (the signing key was rotated) fails: reset-password --totp.
    return secret is not None and verify_totp(secret, code)
