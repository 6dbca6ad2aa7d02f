"""`ipc-hub`: the one command operators use. `up` runs everything on the embedded default;
`api` and `migrate` are the pieces production runs as separate services.

Subcommands are registered in COMMANDS; each later capability (workers, connectors, clients)
adds its own parser and handler there."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack

from hub.config import Settings, load_settings
from hub.runtime.embedded import (
    EmbeddedError,
    EmbeddedKafka,
    EmbeddedPostgres,
    ensure_port_free,
    running_postgres_url,
)
from hub.runtime.process import settle_heap

log = logging.getLogger("hub")


def _database_url(settings: Settings, stack: ExitStack) -> str:
    """HUB_DATABASE_URL; else the embedded PostgreSQL a running `ipc-hub up` has in the data
    folder (left running); else one of our own that stops with us."""
    if settings.database_url:
        return settings.database_url
    running = running_postgres_url(settings.data_dir)
    if running:
        return running
    server = EmbeddedPostgres(settings.data_dir)
    url = server.start()
    stack.callback(server.stop)
    log.info("embedded PostgreSQL running in %s", server.pgdata)
    return url


def _kafka_bootstrap(settings: Settings, stack: ExitStack) -> str:
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    broker = EmbeddedKafka(settings.embedded_kafka_port, settings.data_dir / "log")
    bootstrap = broker.start()
    stack.callback(broker.stop)
    log.info("embedded Kafka-protocol broker (Tansu) on %s", bootstrap)
    return bootstrap


def _serve_api(settings: Settings, database_url: str, banner: Callable[[], None] | None = None) -> None:
    import uvicorn

    from hub.api.app import create_app

    ensure_port_free(settings.http_host, settings.http_port, "HUB_HTTP_PORT")
    common = dict(host=settings.http_host, port=settings.http_port, loop="uvloop", http="httptools",
                  log_level=settings.log_level, access_log=False, server_header=False)
    if settings.http_workers > 1:
        # Worker processes build their own app from the environment.
        os.environ["HUB_DATABASE_URL"] = database_url
        uvicorn.run("hub.api.app:app_from_environment", factory=True, workers=settings.http_workers,
                    **common)
        return
    app = create_app(settings, database_url)
    settle_heap()
    config = uvicorn.Config(app, **common)
    server = uvicorn.Server(config)
    if banner is not None:
        original_startup = server.startup

        async def startup(sockets=None):
            await original_startup(sockets)
            if server.started:
                banner()

        server.startup = startup
    server.run()


def _print_banner(settings: Settings, clients: str = "") -> None:
    base = settings.public_base_url()
    print(
        "\nIPC Hub is ready.\n"
        f"  FHIR API            {base}/fhir\n"
        f"  CapabilityStatement {base}/fhir/metadata\n"
        f"  Workspace           {base}/app\n"
        f"  OpenAPI docs        {base}/docs\n"
        f"  Health              {base}/healthz  {base}/readyz\n"
        f"  HL7 v2 over MLLP    {settings.mllp_host}:{settings.mllp_port}\n"
        f"  MOD handover        POST {_mod_url(settings)}/handover, or files in {settings.mod_drop_dir}\n"
        f"  Local authority CSV files in {settings.la_drop_dir}\n"
        f"Try: curl -s {base}/fhir/metadata -H 'Accept: application/fhir+json'\n"
        f"{clients}"
        "Stop with Ctrl-C.\n",
        flush=True,
    )


def _mod_url(settings: Settings) -> str:
    scheme = "https" if settings.mod_tls_cert else "http"
    return f"{scheme}://{settings.mod_host}:{settings.mod_port}"


def cmd_up(args: argparse.Namespace, settings: Settings) -> None:
    """Everything in one process tree on the embedded default (or on configured services)."""
    from hub.cli.connectors import check_mllp_port, start_mllp, tls_context
    from hub.store.migrate import migrate

    settings = _with_drop_folders(settings)
    # Refuse a busy port before starting anything, not after the database is up.
    ensure_port_free(settings.http_host, settings.http_port, "HUB_HTTP_PORT")
    ensure_port_free(settings.mod_host, settings.mod_port, "HUB_MOD_PORT")
    check_mllp_port(settings)
    tls_context(settings)
    with ExitStack() as stack:
        database_url = _database_url(settings, stack)
        migrate(database_url)
        bootstrap = _kafka_bootstrap(settings, stack)
        from hub.auth.keys import load_signing_keys
        from hub.cli.clients import demo_clients_banner
        from hub.cli.demo import load_cohort
        from hub.cli.la_extracts import start_la_watch
        from hub.cli.mod_handover import start_mod
        from hub.cli.workers import start_pipeline

        start_pipeline(settings, database_url, bootstrap, stack)
        start_mllp(settings, database_url, bootstrap, stack)
        # The MOD connector checks the hub's own tokens: it is given the public keys the API
        # will serve, as the API is not listening yet for it to fetch them.
        keys = load_signing_keys(settings.auth_signing_key_file, settings.data_dir)
        start_mod(settings, bootstrap, stack, jwks=keys.jwks())
        start_la_watch(settings, bootstrap, stack)
        extras = ""
        if not settings.database_url:
            from hub.cli.users import demo_users_banner

            extras = demo_clients_banner(database_url, settings.public_base_url())
            extras += demo_users_banner(database_url, settings.public_base_url(), settings.mod_source)
            if settings.demo_cohort:
                extras += load_cohort(database_url, settings.mod_drop_dir, settings.la_drop_dir)
        # The workspace's operations pages read the bus the pipeline runs on.
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        _serve_api(settings, database_url, banner=lambda: _print_banner(settings, extras))


def _with_drop_folders(settings: Settings) -> Settings:
    """`up` watches a MOD and a local authority drop folder, in the data folder unless configured."""
    return settings.model_copy(update={
        "mod_drop_dir": settings.mod_drop_dir or settings.data_dir / "mod-drop",
        "la_drop_dir": settings.la_drop_dir or settings.data_dir / "la-drop"})


def cmd_api(args: argparse.Namespace, settings: Settings) -> None:
    """The FHIR REST API alone (production runs several behind a load balancer)."""
    ensure_port_free(settings.http_host, settings.http_port, "HUB_HTTP_PORT")
    with ExitStack() as stack:
        database_url = _database_url(settings, stack)
        if args.migrate:
            from hub.store.migrate import migrate

            migrate(database_url)
        _serve_api(settings, database_url)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    """Bring the database schema up to date, then exit."""
    from hub.store.migrate import migrate

    with ExitStack() as stack:
        applied = migrate(_database_url(settings, stack))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")


def _add_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start everything on the embedded default",
                       description="Start the whole hub in one command: an embedded PostgreSQL "
                       "(unless HUB_DATABASE_URL is set), an embedded Kafka-protocol broker (unless "
                       "HUB_KAFKA_BOOTSTRAP is set), schema migrations, the pipeline workers, the HL7 v2 "
                       "MLLP listener on HUB_MLLP_HOST:HUB_MLLP_PORT and the FHIR API on "
                       "HUB_HTTP_HOST:HUB_HTTP_PORT. Data stays in HUB_DATA_DIR between runs.")
    p.set_defaults(handler=cmd_up)


def _add_api(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("api", help="serve the FHIR REST API",
                       description="Serve the FHIR R4 REST API at /fhir on HUB_HTTP_HOST:HUB_HTTP_PORT "
                       "against HUB_DATABASE_URL (an embedded PostgreSQL if unset). HUB_HTTP_WORKERS "
                       "sets the number of worker processes.")
    p.add_argument("--migrate", action="store_true", help="apply schema migrations before serving")
    p.set_defaults(handler=cmd_api)


def _add_migrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="apply database schema migrations",
                       description="Apply every schema migration not yet applied to HUB_DATABASE_URL "
                       "(an embedded PostgreSQL if unset). Safe to run from several places at once.")
    p.set_defaults(handler=cmd_migrate)


def _pipeline_parsers() -> list[Callable[[argparse._SubParsersAction], None]]:
    from hub.cli.workers import PARSERS

    return PARSERS


def _connector_parsers() -> list[Callable[[argparse._SubParsersAction], None]]:
    from hub.cli.connectors import PARSERS

    return PARSERS


def _client_parsers() -> list[Callable[[argparse._SubParsersAction], None]]:
    from hub.cli.clients import PARSERS

    return PARSERS


def _user_parsers() -> list[Callable[[argparse._SubParsersAction], None]]:
    from hub.cli.users import PARSERS

    return PARSERS


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_up, _add_api, _add_migrate,
                                                                *_pipeline_parsers(), *_connector_parsers(),
                                                                *_client_parsers(), *_user_parsers()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipc-hub",
        description="IPC Hub: one shared FHIR record and care plan per person, joined up from MOD, "
        "GP, hospital, local authority and charity feeds. Configuration comes from HUB_* "
        "environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so embedded services are stopped by the same cleanup."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _terminate_on_sigterm()
    try:
        args.handler(args, settings)
    except EmbeddedError as exc:
        print(f"ipc-hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
