"""`ipc-hub subscriptions list|pause|resume|resend`: the operator's view of partners'
Subscriptions and their delivery (hub/subscriptions). Lists never show endpoint headers (they
hold receivers' tokens) nor anything from the record."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from psycopg import AsyncConnection

from hub.config import Settings
from hub.store import subscriptions as store


def _run(settings: Settings, work: Callable[[AsyncConnection], Any]) -> Any:
    from hub.cli.common import on_database

    return on_database(settings, work)


def _fail(message: str) -> None:
    print(f"ipc-hub subscriptions: {message}", file=sys.stderr)
    raise SystemExit(2)


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    rows = _run(settings, store.listed)
    if args.json:
        print(json.dumps([store.as_json(r) for r in rows], indent=2))
        return
    if not rows:
        print("no subscriptions")
        return
    print(f"{'id':<38} {'client':<24} {'topic':<26} {'status':<9} {'events':>7} {'sent to':>7}  error")
    for r in rows:
        status = r.status + (" (paused)" if r.paused else "")
        print(f"{r.id:<38} {r.client_id[:24]:<24} {r.topic.rsplit('/', 1)[-1][:26]:<26} {status:<9} "
              f"{r.events_since_start:>7} {r.delivered_through:>7}  {r.error or ''}")


def _change(action: str) -> Callable[[argparse.Namespace, Settings], None]:
    def cmd(args: argparse.Namespace, settings: Settings) -> None:
        async def work(conn: AsyncConnection) -> bool:
            if action == "pause":
                return await store.set_state(conn, args.id, paused=True)
            if action == "resume":
                # From error too: the endpoint is fixed; delivery picks up where it stopped.
                row = await store.get(conn, args.id)
                status = "active" if row is not None and row.status == "error" else None
                return await store.set_state(conn, args.id, paused=False, status=status)
            return await store.rewind(conn, args.id, args.since - 1)

        if not _run(settings, work):
            _fail(f"no subscription {args.id}")
        print(f"{action}: {args.id}")

    return cmd


def _add_subscriptions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("subscriptions", help="see and steer partners' Subscriptions",
                       description="Partners' topic-based Subscriptions and how their delivery stands. "
                       "pause keeps numbering events but sends nothing; resume sends what waited (and "
                       "re-activates a subscription in error); resend sends again from an event number.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = actions.add_parser("list", help="every subscription: client, topic, status, events numbered and sent")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_list)
    for name, text in (("pause", "stop sending (events are still numbered)"), ("resume", "send again")):
        one = actions.add_parser(name, help=text)
        one.add_argument("id")
        one.set_defaults(handler=_change(name))
    resend = actions.add_parser("resend", help="send again every event from a number on")
    resend.add_argument("id")
    resend.add_argument("--since", type=int, default=1, help="the first event number to send again (default 1)")
    resend.set_defaults(handler=_change("resend"))


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_subscriptions]
