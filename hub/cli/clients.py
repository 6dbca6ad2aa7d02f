"""`ipc-hub clients add|list|rotate|revoke`: the OAuth2 clients partners use, and the
demonstration clients `ipc-hub up` creates on the embedded default.

A secret is printed once, when it is made (add, rotate), and never stored or shown again."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection

from hub.auth.principal import PARTNER_CLASSES
from hub.auth.registry import (
    NewClient,
    RegistrationError,
    register,
    with_new_credentials,
)
from hub.config import Settings
from hub.store import clients as store


def _run(settings: Settings, work: Callable[[AsyncConnection], Any]) -> Any:
    from hub.cli.common import database_url, locate_data_dir

    async def go(url: str) -> Any:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            return await work(conn)

    with ExitStack() as stack:
        return asyncio.run(go(database_url(locate_data_dir(settings, must_exist=True), stack)))


def _fail(message: str) -> None:
    print(f"ipc-hub clients: {message}", file=sys.stderr)
    raise SystemExit(2)


def _read_jwks(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the JWKS file {path}: {exc}")
    return None


def _print_credentials(new: NewClient) -> None:
    print(f"client_id:     {new.record.client_id}")
    if new.record.auth_method == "none":
        print("a public app: no secret (the authorization code is bound to it by PKCE)")
    elif new.secret is not None:
        print(f"client_secret: {new.secret}")
        print("Keep the secret now: it is stored only as a hash and cannot be shown again.")
    else:
        print("authenticates with private_key_jwt against the registered JWKS")


def cmd_add(args: argparse.Namespace, settings: Settings) -> None:
    try:
        new = register(name=args.name or args.organisation, partner_class=args.partner_class,
                       organisation=args.organisation, scopes=args.scopes,
                       organisation_system_name=args.organisation_system, jwks=_read_jwks(args.jwks),
                       client_id=args.client_id, redirect_uris=tuple(args.redirect_uri or ()), public=args.public)
    except RegistrationError as exc:
        _fail(str(exc))

    async def add(conn: AsyncConnection) -> bool:
        if await store.get_client(conn, new.record.client_id) is not None:
            return False
        await store.insert_client(conn, new.record)
        return True

    if not _run(settings, add):
        _fail(f"a client {new.record.client_id} already exists")
    _print_credentials(new)


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    records = _run(settings, store.list_clients)
    if args.json:
        print(json.dumps([_public(r) for r in records], indent=2))
        return
    print(f"{'CLIENT ID':<28} {'STATUS':<8} {'CLASS':<16} {'ORGANISATION':<14} {'AUTH':<20} "
          f"{'CREATED':<20} {'ROTATED':<20} SCOPES")
    for r in records:
        print(f"{r.client_id:<28} {r.status:<8} {r.partner_class:<16} {r.organisation:<14} "
              f"{r.auth_method:<20} {_when(r.created_at):<20} {_when(r.rotated_at):<20} {' '.join(r.scopes)}")


def _public(record: store.ClientRecord) -> dict[str, Any]:
    """A client as it may be shown: no secret hash; the JWKS is public by nature."""
    return {"client_id": record.client_id, "name": record.name, "organisation": record.organisation,
            "organisation_system": record.organisation_system, "partner_class": record.partner_class,
            "scopes": list(record.scopes), "auth_method": record.auth_method, "status": record.status,
            "created_at": _when(record.created_at), "rotated_at": _when(record.rotated_at),
            "revoked_at": _when(record.revoked_at)}


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> None:
    jwks = _read_jwks(args.jwks)

    async def rotate(conn: AsyncConnection) -> NewClient | None:
        record = await store.get_client(conn, args.client_id)
        if record is None or not record.active or record.auth_method == "none":
            return None  # a public app has no secret or keys to rotate
        new = with_new_credentials(record, jwks)
        if not await store.rotate_credentials(conn, record.client_id, secret_hash=new.record.secret_hash,
                                              jwks=new.record.jwks):
            return None
        return new

    try:
        new = _run(settings, rotate)
    except RegistrationError as exc:
        _fail(str(exc))
    if new is None:
        _fail(f"no active confidential client {args.client_id}")
    _print_credentials(new)


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> None:
    if not _run(settings, lambda conn: store.revoke_client(conn, args.client_id)):
        _fail(f"no active client {args.client_id}")
    print(f"revoked {args.client_id}: its tokens are refused from now on")


def _add_clients(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clients", help="manage OAuth2 clients",
                       description="Register and manage the OAuth2 clients (SMART Backend Services) that "
                       "partners use to get access tokens. Each client acts for one organisation as one "
                       "partner class, with the scopes it may be granted.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="register a client (prints its secret once)")
    add.add_argument("--partner-class", required=True, choices=PARTNER_CLASSES)
    add.add_argument("--organisation", required=True, help="ODS code, or charity number for a charity")
    add.add_argument("--organisation-system", help="'ods', 'charity-number' or an identifier system URL "
                     "(default: charity-number for charities, ods otherwise)")
    add.add_argument("--scopes", required=True, help="allowed SMART scopes, e.g. 'system/CarePlan.rs system/Goal.crus'")
    add.add_argument("--name", help="a name for people reading `clients list`")
    add.add_argument("--client-id", help="the client id (default: generated)")
    add.add_argument("--jwks", metavar="FILE", help="public JWKS: the client authenticates with "
                     "private_key_jwt instead of a secret")
    add.add_argument("--redirect-uri", action="append", metavar="URI",
                     help="an app used by people (SMART App Launch): where it receives codes, matched "
                     "exactly (repeat for several); its scopes are then user/ scopes, e.g. "
                     "'openid fhirUser profile offline_access user/*.cruds'")
    add.add_argument("--public", action="store_true", help="an app with no secret (PKCE only), e.g. a "
                     "browser or native app; needs --redirect-uri")
    add.set_defaults(handler=cmd_add)

    lst = actions.add_parser("list", help="list clients (never their secrets)")
    lst.add_argument("--json", action="store_true", help="as JSON")
    lst.set_defaults(handler=cmd_list)

    rotate = actions.add_parser("rotate", help="issue a new secret (or register a new JWKS)")
    rotate.add_argument("client_id")
    rotate.add_argument("--jwks", metavar="FILE", help="replace the client's keys with this public JWKS")
    rotate.set_defaults(handler=cmd_rotate)

    revoke = actions.add_parser("revoke", help="disable a client; its live tokens fail at once")
    revoke.add_argument("client_id")
    revoke.set_defaults(handler=cmd_revoke)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_clients]


# --- demonstration clients for `ipc-hub up` -------------------------------------------------------

@dataclass(frozen=True)
class DemoClient:
    client_id: str
    partner_class: str
    organisation: str
    scopes: str


# The organisations are those the demonstration cohort's consent names (connectors/mod/samples:
# the council's ODS code, the lead charity's charity number), so each client sees what the
# veteran agreed to share with it.
DEMO_CLIENTS = (
    DemoClient("demo-nhs-trust", "nhs", "RX1", "system/*.rs system/Patient.cru system/Observation.cru "
               "system/Condition.cru system/Encounter.cru system/CarePlan.cru system/Goal.cru "
               "system/QuestionnaireResponse.cru system/Group.cru system/Task.cru"),
    DemoClient("demo-local-authority", "local-authority", "891",
               "system/Patient.rs system/CarePlan.rus system/Goal.crus system/CareTeam.crus "
               "system/ServiceRequest.crus system/Consent.rs"),
    DemoClient("demo-defence", "defence", "D1A", "system/Patient.crus system/Observation.crus "
               "system/Condition.crus system/Encounter.crus"),
    DemoClient("demo-lead-charity", "charity", "1123456",
               "system/CarePlan.rus system/Goal.crus system/ServiceRequest.crus system/Patient.rs "
               "system/CareTeam.rs system/Consent.rs"),
    DemoClient("demo-education", "education", "EDU01", "system/Patient.rs system/CarePlan.rs system/Goal.rs"),
)


async def _ensure_demo_clients(conn: AsyncConnection) -> list[tuple[DemoClient, str]]:
    """Create the demonstration clients if missing, else give them new secrets (the old ones
    were never kept, and a demonstration must be able to print a working one)."""
    issued = []
    for demo in DEMO_CLIENTS:
        record = await store.get_client(conn, demo.client_id)
        if record is None:
            new = register(name=f"demonstration {demo.partner_class} client", partner_class=demo.partner_class,
                           organisation=demo.organisation, scopes=demo.scopes, client_id=demo.client_id)
            await store.insert_client(conn, new.record)
        elif not record.active:
            continue  # an operator revoked it: leave it so
        else:
            new = with_new_credentials(record)
            await store.rotate_credentials(conn, record.client_id, secret_hash=new.record.secret_hash)
        issued.append((demo, new.secret))
    return issued


def demo_clients_banner(database_url: str, base_url: str) -> str:
    """Make the demonstration clients and say how to get a token with one (for `ipc-hub up`)."""
    async def go() -> list[tuple[DemoClient, str]]:
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await _ensure_demo_clients(conn)

    issued = asyncio.run(go())
    if not issued:
        return ""
    lines = ["Demonstration OAuth2 clients (new secrets at each start; `ipc-hub clients list`):"]
    lines += [f"  {demo.partner_class:<16} {demo.client_id:<22} {secret}" for demo, secret in issued]
    demo, secret = issued[0]
    lines.append(f"Get a token: curl -s -u {demo.client_id}:{secret} -d grant_type=client_credentials "
                 f"-d scope=system/Patient.rs {base_url}/auth/token")
    lines.append(f"then:        curl -s {base_url}/fhir/Patient -H 'Authorization: Bearer <access_token>'")
    return "\n".join(lines) + "\n"
