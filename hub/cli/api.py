"""`ipc-hub api` and `ipc-hub migrate`: the pieces production runs as separate services."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import ExitStack

from hub.cli.common import database_url, locate_data_dir, serve_api
from hub.config import Settings
from hub.runtime.embedded import ensure_port_free


def cmd_api(args: argparse.Namespace, settings: Settings) -> None:
    """The FHIR REST API alone (production runs several behind a load balancer)."""
    ensure_port_free(settings.http_host, settings.http_port, "HUB_HTTP_PORT")
    settings = locate_data_dir(settings, must_exist=False)
    with ExitStack() as stack:
        url = database_url(settings, stack)
        if args.migrate:
            from hub.store.migrate import migrate

            migrate(url)
        serve_api(settings, url)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    """Bring the database schema up to date, then exit."""
    from hub.store.migrate import migrate

    settings = locate_data_dir(settings, must_exist=False)
    with ExitStack() as stack:
        applied = migrate(database_url(settings, stack))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")


def _add_api(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("api", help="serve the FHIR REST API",
                       description="Serve the FHIR R4 REST API at /fhir on HUB_HTTP_HOST:HUB_HTTP_PORT "
                       "against HUB_DATABASE_URL (else the running hub's embedded PostgreSQL, else one of "
                       "its own in HUB_DATA_DIR). HUB_HTTP_WORKERS sets the number of worker processes.")
    p.add_argument("--migrate", action="store_true", help="apply schema migrations before serving")
    p.set_defaults(handler=cmd_api)


def _add_migrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="apply database schema migrations",
                       description="Apply every schema migration not yet applied to HUB_DATABASE_URL "
                       "(else the running hub's embedded PostgreSQL, else one in HUB_DATA_DIR). Safe to "
                       "run from several places at once.")
    p.set_defaults(handler=cmd_migrate)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_api, _add_migrate]
