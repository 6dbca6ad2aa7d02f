"""`ipc-hub users add|list|disable|enable|reset-password`: the people who sign in to the
workspace and to apps, and the demonstration accounts `ipc-hub up` makes on the embedded
default.

A password is printed once when the hub makes one (add without --password, reset-password), and
never stored or shown again: only its Argon2id hash is kept."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from hub.auth.accounts import AccountError, NewAccount, new_account, seal_totp
from hub.auth.citizens import CLI, add_record, link_citizen
from hub.auth.keys import load_signing_keys
from hub.auth.passwords import (
    PasswordPolicyError,
    check_policy,
    hash_password,
    new_password,
    new_totp_secret,
    totp_uri,
)
from hub.auth.principal import PARTNER_CLASSES
from hub.auth.roles import ROLES
from hub.auth.sealing import Sealer
from hub.cli.common import database_url
from hub.config import Settings
from hub.fhir.ids import source_id
from hub.search.access import Access
from hub.cli.common import database_url
from hub.store import resources
from hub.store import users as store
from hub.store.users import UserRecord


def _run(settings: Settings, work: Callable[[AsyncConnection], Any]) -> Any:
    async def go(url: str) -> Any:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            return await work(conn)

    with ExitStack() as stack:
        return asyncio.run(go(database_url(settings, stack)))


def _fail(message: str) -> None:
    print(f"ipc-hub users: {message}", file=sys.stderr)
    raise SystemExit(2)


def _sealer(settings: Settings) -> Sealer:
    """The sealer the API uses: from the same signing key (HUB_AUTH_SIGNING_KEY_FILE)."""
    return Sealer(load_signing_keys(settings.auth_signing_key_file, settings.data_dir).signing)


async def save_account(conn: AsyncConnection, account: NewAccount) -> bool:
    """Store the account and write its Practitioner (unless it names an existing one) and
    PractitionerRole into the record; False if the user name is taken."""
    async with conn.transaction():
        if await store.user_by_username(conn, account.user.username) is not None:
            return False
        await store.insert_user(conn, account.user)
        if account.practitioner is not None:
            await resources.update(conn, "Practitioner", account.practitioner["id"], account.practitioner,
                                   skip_unchanged=True, access=Access.system())
        await resources.update(conn, "PractitionerRole", account.role["id"], account.role, skip_unchanged=True,
                               access=Access.system())
    return True


def cmd_add(args: argparse.Namespace, settings: Settings) -> None:
    password = None
    if args.external_subject is None:
        password = args.password or new_password()
    totp = new_totp_secret() if args.totp else None
    try:
        account = new_account(username=args.username, display_name=args.name or args.username, role=args.role,
                              partner_class=args.partner_class, organisation=args.organisation,
                              organisation_system_name=args.organisation_system, password=password,
                              totp_secret=totp, external_subject=args.external_subject,
                              practitioner_id=args.practitioner_id, sealer=_sealer(settings) if totp else None)
    except (AccountError, PasswordPolicyError) as exc:
        _fail(str(exc))
    if not _run(settings, lambda conn: save_account(conn, account)):
        _fail(f"a user {args.username} already exists")
    user = account.user
    print(f"user:          {user.username} ({user.role}, {user.partner_class} {user.organisation})")
    print(f"practitioner:  {user.practitioner}")
    if password is not None and args.password is None:
        print(f"password:      {password}")
        print("Keep the password now: it is stored only as a hash and cannot be shown again.")
    if totp:
        print(f"authenticator: {totp_uri(totp, user.username)}")
    if args.external_subject:
        print(f"signs in through the external OpenID Connect provider as {args.external_subject}")


def cmd_add_person(args: argparse.Namespace, settings: Settings) -> None:
    password = None if args.external_subject else (args.password or new_password())
    user, why = _run(settings, lambda conn: link_citizen(
        conn, username=args.username, display_name=args.name or args.username, patient=args.patient,
        related_person=args.related_person, password=password, external_subject=args.external_subject))
    if user is None:
        _fail(why)
    print(f"user:          {user.username} ({user.role}: signs in as {user.fhir_user})")
    print(f"record:        Patient/{user.patient_id}")
    if password is not None and args.password is None:
        print(f"password:      {password}")
        print("Keep the password now: it is stored only as a hash and cannot be shown again.")


def cmd_link_person(args: argparse.Namespace, settings: Settings) -> None:
    user, link, why = _run(settings, lambda conn: add_record(conn, username=args.username,
                                                             related_person=args.related_person, linked_by=CLI))
    if user is None:
        _fail(why)
    print(f"user:          {user.username} (proxy) now also opens Patient/{link.patient_id}, as {link.fhir_user}")
    print("At sign-in they choose whose record to open; each person's delegation says what they see.")


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    records = _run(settings, store.list_users)
    rows = [{"username": u.username, "name": u.display_name, "role": u.role, "partner_class": u.partner_class,
             "organisation": u.organisation, "status": u.status, "practitioner": u.practitioner,
             "sign_in": "external" if u.external_subject else ("password+totp" if u.totp_secret else "password"),
             "locked": bool(u.locked_until), "last_sign_in": u.last_sign_in_at.isoformat() if u.last_sign_in_at else None}
            for u in records]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'USER':<20} {'STATUS':<9} {'ROLE':<13} {'CLASS':<16} {'ORGANISATION':<13} {'SIGN-IN':<14} NAME")
    for r in rows:
        print(f"{r['username']:<20} {r['status']:<9} {r['role']:<13} {r['partner_class']:<16} "
              f"{r['organisation']:<13} {r['sign_in']:<14} {r['name']}")


def _set_status(status: str) -> Callable[[argparse.Namespace, Settings], None]:
    def command(args: argparse.Namespace, settings: Settings) -> None:
        if _run(settings, lambda conn: store.set_status(conn, args.username, status)) is None:
            _fail(f"no user {args.username}")
        said = "disabled: their sessions and refresh tokens have ended" if status == "disabled" else "enabled"
        print(f"{args.username} {said}")
    return command


def cmd_reset_password(args: argparse.Namespace, settings: Settings) -> None:
    password = args.password or new_password()
    try:
        check_policy(password, args.username)
    except PasswordPolicyError as exc:
        _fail(str(exc))
    totp = new_totp_secret() if args.totp else None
    keep = not args.totp and not args.no_totp
    sealed = seal_totp(_sealer(settings), totp) if totp else None
    user = _run(settings, lambda conn: store.set_password(conn, args.username, hash_password(password), sealed,
                                                          keep_totp=keep))
    if user is None:
        _fail(f"no user {args.username}")
    print(f"{user.username}: new password set, lockout cleared, sessions ended")
    if args.password is None:
        print(f"password:      {password}")
    if totp:
        print(f"authenticator: {totp_uri(totp, user.username)}")


def _add_users(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="manage the people who sign in",
                       description="Staff accounts: each person is a Practitioner with a PractitionerRole "
                       "(organisation, partner class, role). The consent rules of their organisation's "
                       "partner class apply to them exactly as to that class's clients.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add a person (prints a generated password once)")
    add.add_argument("username")
    add.add_argument("--name", help="their name as shown, e.g. 'Karen Hughes'")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--partner-class", required=True, choices=PARTNER_CLASSES)
    add.add_argument("--organisation", required=True, help="ODS code, or charity number for a charity")
    add.add_argument("--organisation-system", help="'ods', 'charity-number' or an identifier system URL")
    add.add_argument("--password", help="the password (default: one is generated and printed once)")
    add.add_argument("--totp", action="store_true", help="also require a code from an authenticator app")
    add.add_argument("--external-subject", help="sign in through the external OpenID Connect provider: the "
                     "value of its HUB_OIDC_USER_CLAIM claim for this person (no password)")
    add.add_argument("--practitioner-id", help="an existing Practitioner in the record who is this person "
                     "(e.g. the welfare manager a MOD handover names)")
    add.set_defaults(handler=cmd_add)

    lst = actions.add_parser("list", help="list people (never their secrets)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_list)

    person = actions.add_parser(
        "add-person", help="link a person (or someone acting for them) to their record (prints a password once)",
        description="A citizen account: the person themselves (--patient) or a parent, carer or attorney "
        "(--related-person, whose delegation Consent says what they may see). It signs in to the "
        "person's own app with patient/ scopes, to that record only.")
    person.add_argument("username")
    person.add_argument("--name", help="their name as shown")
    linked = person.add_mutually_exclusive_group(required=True)
    linked.add_argument("--patient", help="the id of the person's Patient")
    linked.add_argument("--related-person", help="the id of the RelatedPerson acting for the person")
    person.add_argument("--password", help="the password (default: one is generated and printed once)")
    person.add_argument("--external-subject", help="signs in through an external provider with this subject "
                        "instead of a password")
    person.set_defaults(handler=cmd_add_person)

    further = actions.add_parser(
        "link-person", help="let a proxy's account open one more person's record (a parent of two children)",
        description="Adds a further record to an account acting for someone: they sign in once and choose "
        "whose record to open. What they see there is that person's delegation Consent.")
    further.add_argument("username", help="the proxy's existing account")
    further.add_argument("--related-person", required=True, help="the id of their RelatedPerson in the other "
                         "person's record")
    further.set_defaults(handler=cmd_link_person)

    disable = actions.add_parser("disable", help="stop a person signing in; their sessions end now")
    disable.add_argument("username")
    disable.set_defaults(handler=_set_status("disabled"))

    enable = actions.add_parser("enable", help="let a disabled person sign in again")
    enable.add_argument("username")
    enable.set_defaults(handler=_set_status("active"))

    reset = actions.add_parser("reset-password", help="a new password (printed once); clears a lockout")
    reset.add_argument("username")
    reset.add_argument("--password", help="the new password (default: generated)")
    totp = reset.add_mutually_exclusive_group()
    totp.add_argument("--totp", action="store_true", help="set up a new authenticator app")
    totp.add_argument("--no-totp", action="store_true", help="stop asking for an authenticator code")
    reset.set_defaults(handler=cmd_reset_password)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_users]


# --- demonstration accounts for `ipc-hub up` ------------------------------------------------------

@dataclass(frozen=True)
class DemoUser:
    username: str
    name: str
    role: str
    partner_class: str
    organisation: str
    practitioner_id: str | None = None


def demo_users(mod_source: str) -> tuple[DemoUser, ...]:
    """The demonstration cohort's people at work. The coordinator is the Veterans Welfare Manager
    the sample MOD handover names as the veteran's care coordinator (the same Practitioner), signing
    in for the ICB that the veteran's consent lets see the plan; the commissioner is at that ICB;
    the operator runs the hub; the charity worker is at the lead charity, which sees only what the
    veteran shared with it."""
    coordinator = source_id(mod_source, "Practitioner", "veterans-uk|VWM-0042")
    return (
        DemoUser("demo.coordinator", "Karen Hughes", "coordinator", "nhs", "QT1", coordinator),
        DemoUser("demo.commissioner", "Sam Patel", "commissioner", "nhs", "QT1"),
        DemoUser("demo.operator", "Alex Morgan", "operator", "nhs", "QT1"),
        DemoUser("demo.charity", "Jo Carter", "coordinator", "charity", "1123456"),
    )


async def ensure_demo_users(conn: AsyncConnection, mod_source: str) -> list[tuple[DemoUser, str]]:
    """Create the demonstration accounts if missing, else give them new passwords (never kept,
    and a demonstration must print working ones); a disabled one is left so."""
    issued = []
    for demo in demo_users(mod_source):
        password = new_password()
        existing = await store.user_by_username(conn, demo.username)
        if existing is None:
            account = new_account(username=demo.username, display_name=demo.name, role=demo.role,
                                  partner_class=demo.partner_class, organisation=demo.organisation,
                                  password=password, practitioner_id=demo.practitioner_id)
            await save_account(conn, account)
        elif not existing.active:
            continue
        else:
            await store.set_password(conn, demo.username, hash_password(password), None, keep_totp=True)
        issued.append((demo, password))
    return issued


def demo_users_banner(database_url: str, base_url: str, mod_source: str) -> str:
    """Make the demonstration accounts and say how to sign in (for `ipc-hub up`)."""
    async def go() -> list[tuple[DemoUser, str]]:
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await ensure_demo_users(conn, mod_source)

    issued = asyncio.run(go())
    if not issued:
        return ""
    lines = [f"Workspace: open {base_url}/app and sign in as one of (new passwords at each start):"]
    lines += [f"  {demo.role:<13} {demo.username:<20} {password:<22} {demo.name}, {demo.partner_class} {demo.organisation}"
              for demo, password in issued]
    return "\n".join(lines) + "\n"
