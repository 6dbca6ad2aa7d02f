"""`ipc-hub up`: the whole hub on the embedded default, run the way production runs it.

The API serves in this process; the mapper, recorder, relay, plan, cohort, notifier and export workers and the HL7 v2,
MOD, local authority, statements and children's connectors are child processes under hub.runtime.supervisor (restarted with
back-off, reported by /readyz). Start order: PostgreSQL, migrations, the broker, the topics,
the bus journal republished (what was accepted before a crash and not recorded), the workers,
the API, then the connectors (once the API serves the keys the MOD connector checks tokens
with). Ctrl-C or SIGTERM stops them in the opposite order: the API stops taking requests, the
connectors finish what they hold, the workers finish and commit their batch, then the broker
and PostgreSQL stop."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack

from hub.bus.topics import Topics, ensure_topics
from hub.cli.common import (
    bus_settings,
    database_url,
    journal_enabled,
    register_running,
    serve_api,
)
from hub.config import Settings
from hub.runtime.embedded import EmbeddedKafka, ensure_port_free
from hub.runtime.logs import configure_logging
from hub.runtime.supervisor import Child, Supervisor

log = logging.getLogger("hub")

# plans: the plan worker (hub/cli/plan_worker.py), PostgreSQL only; cohorts: change events → cohort
# members and offers (hub/cohorts); notifier: change events → subscribers (hub/subscriptions);
# exporter: Bulk Data export jobs (hub/exports), in a process of their own at a lower priority, so
# a large export does not take the API's readers' share of the interpreter (the API under `up`
# runs none itself: HUB_EXPORT_IN_API is for `ipc-hub api` alone). All run and restarted like the rest.
WORKERS = ("mapper", "recorder", "relay", "plans", "cohorts", "notifier", "exporter")
CONNECTORS = ("hl7v2", "mod", "la", "statements", "children")
WATCHERS = ("la", "statements", "children")  # file connectors: `connector NAME watch`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mod_url(settings: Settings) -> str:
    scheme = "https" if settings.mod_tls_cert else "http"
    return f"{scheme}://{settings.mod_host}:{settings.mod_port}"


def print_banner(settings: Settings, clients: str = "") -> None:
    base = settings.public_base_url()
    print(
        "\nIPC Hub is ready.\n"
        f"  FHIR API            {base}/fhir\n"
        f"  CapabilityStatement {base}/fhir/metadata\n"
        f"  Workspace           {base}/app\n"
        f"  OpenAPI docs        {base}/docs\n"
        f"  Health              {base}/healthz  {base}/readyz  {base}/metrics\n"
        f"  HL7 v2 over MLLP    {settings.mllp_host}:{settings.mllp_port}\n"
        f"  MOD handover        POST {_mod_url(settings)}/handover, or files in {settings.mod_drop_dir}\n"
        f"  Local authority CSV files in {settings.la_drop_dir}\n"
        f"  Statements CSV      files in {settings.statements_drop_dir}\n"
        f"  Children's CSV      files in {settings.children_drop_dir}\n"
        f"  Data and logs       {settings.data_dir.resolve()}\n"
        f"Try: curl -s {base}/fhir/metadata -H 'Accept: application/fhir+json'\n"
        f"{clients}"
        "Stop with Ctrl-C.\n",
        flush=True,
    )


def _with_drop_folders(settings: Settings) -> Settings:
    """`up` watches a MOD, a local authority, a statements and a children's drop folder, in the
    data folder unless configured."""
    return settings.model_copy(update={
        "mod_drop_dir": settings.mod_drop_dir or settings.data_dir / "mod-drop",
        "la_drop_dir": settings.la_drop_dir or settings.data_dir / "la-drop",
        "statements_drop_dir": settings.statements_drop_dir or settings.data_dir / "statements-drop",
        "children_drop_dir": settings.children_drop_dir or settings.data_dir / "children-drop"})


def _child_env(settings: Settings, db_url: str, bootstrap: str, journal: bool) -> dict[str, str]:
    """The children see the services this process found or started, not their own."""
    env = dict(os.environ)
    env.update(HUB_DATABASE_URL=db_url, HUB_KAFKA_BOOTSTRAP=bootstrap, HUB_BUS_JOURNAL="on" if journal else "off",
               HUB_DATA_DIR=str(settings.data_dir.resolve()),
               HUB_MOD_DROP_DIR=str(settings.mod_drop_dir), HUB_LA_DROP_DIR=str(settings.la_drop_dir),
               HUB_STATEMENTS_DROP_DIR=str(settings.statements_drop_dir),
               HUB_CHILDREN_DROP_DIR=str(settings.children_drop_dir),
               HUB_LOG_FORMAT="json")
    if not settings.auth_jwks_url:
        env["HUB_AUTH_JWKS_URL"] = f"http://{settings.http_host}:{settings.http_port}/.well-known/jwks.json"
    if not settings.kafka_bootstrap:  # the shorter group timeouts Tansu allows (hub/bus/kafka.py)
        env.setdefault("HUB_KAFKA_SESSION_TIMEOUT_MS", "2000")
        env.setdefault("HUB_KAFKA_HEARTBEAT_INTERVAL_MS", "500")
    return env


def _children(settings: Settings, env: dict[str, str]) -> tuple[list[Child], list[Child]]:
    command = [sys.executable, "-m", "hub.cli.main"]
    logs = settings.data_dir.resolve() / "log"
    workers = []
    for name in WORKERS:
        port = _free_port()
        workers.append(Child(name, [*command, "worker", name], {**env, "HUB_WORKER_HTTP_PORT": str(port),
                                                                 "HUB_HTTP_HOST": "127.0.0.1"},
                             logs / f"{name}.log", health_port=port))
    ports = {"hl7v2": settings.mllp_port, "mod": settings.mod_port, "la": 0, "statements": 0, "children": 0}
    connectors = []
    for name in CONNECTORS:
        # The MLLP listener's /metrics (messages by ACK code) is merged into the API's.
        metrics_port = _free_port() if name == "hl7v2" else 0
        own = {"HUB_WORKER_HTTP_PORT": str(metrics_port), "HUB_HTTP_HOST": "127.0.0.1"} if metrics_port else {}
        connectors.append(Child(f"connector-{name}", [*command, "connector", name, *(["watch"] if name in WATCHERS else [])],
                                {**env, **own}, logs / f"connector-{name}.log", listen_port=ports[name],
                                health_port=metrics_port))
    return workers, connectors


def cmd_up(args: argparse.Namespace, settings: Settings) -> None:
    """Everything on the embedded default (or on configured services), supervised."""
    from hub.auth.keys import load_signing_keys
    from hub.bus.replay import republish_journal
    from hub.cli.clients import demo_clients_banner
    from hub.cli.connectors import check_mllp_port, tls_context
    from hub.cli.demo import load_cohort
    from hub.store.migrate import migrate

    settings = _with_drop_folders(settings)
    # A quiet console: the banner and warnings; everything at HUB_LOG_LEVEL goes to the log file.
    configure_logging(settings.log_level, settings.log_format, file=settings.data_dir.resolve() / "log" / "hub.jsonl",
                      console_level="warning" if settings.log_level.lower() == "info" else None)
    # Refuse a busy port before starting anything, not after the database is up.
    ensure_port_free(settings.http_host, settings.http_port, "HUB_HTTP_PORT")
    ensure_port_free(settings.mod_host, settings.mod_port, "HUB_MOD_PORT")
    check_mllp_port(settings)
    tls_context(settings)
    with ExitStack() as stack:
        stack.callback(register_running(settings))
        own_database: list = []
        db_url = database_url(settings, stack, own_database)
        migrate(db_url)
        load_signing_keys(settings.auth_signing_key_file, settings.data_dir)  # made once, before the children
        broker = None
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
        else:
            broker = EmbeddedKafka(settings.embedded_kafka_port, settings.data_dir / "log")
            bootstrap = broker.start()
            stack.callback(broker.stop)
        bus = bus_settings(settings, bootstrap)
        journal = journal_enabled(settings)

        def prepare_bus() -> None:
            ensure_topics(bootstrap, Topics(bus.topic_prefix), bus.partitions, bus.max_message_bytes)
            if journal:
                count = republish_journal(bus, db_url)
                if count:
                    log.info("republished %d accepted envelopes not yet recorded", count)

        prepare_bus()

        def restart_broker() -> None:
            broker.stop()
            broker.start()
            prepare_bus()

        env = _child_env(settings, db_url, bootstrap, journal)
        workers, connectors = _children(settings, env)
        supervisor = Supervisor(workers + connectors,
                                broker_alive=broker.alive if broker is not None else None,
                                restart_broker=restart_broker if broker is not None else None,
                                database_alive=own_database[0].alive if own_database else None,
                                restart_database=own_database[0].restart if own_database else None)
        stack.callback(supervisor.stop, [[c.name for c in connectors], ["mapper"], ["recorder"], ["relay"], ["cohorts"],
                                         ["notifier"], ["exporter"]])
        extras = ""
        if not settings.database_url:
            from hub.cli.users import demo_users_banner

            extras = demo_clients_banner(db_url, settings.public_base_url())
            extras += demo_users_banner(db_url, settings.public_base_url(), settings.mod_source)

        def announce() -> None:
            # The banner says "ready" only once every worker and connector is (the MOD
            # connector first fetches the token keys from the API, so this waits off the loop).
            if not supervisor.wait_ready(120):
                log.warning("not every worker and connector is ready yet: see /readyz")
            cohort = ""
            if not settings.database_url and settings.demo_cohort:
                cohort = load_cohort(db_url, settings.mod_drop_dir, settings.la_drop_dir)
            print_banner(settings, extras + cohort)

        def started() -> None:
            supervisor.start()
            threading.Thread(target=announce, name="banner", daemon=True).start()

        # The workspace's operations pages read the bus the pipeline runs on.
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap, "export_in_api": False})
        serve_api(settings, db_url, banner=started, extra_ready=supervisor.status,
                  extra_metrics=supervisor.metrics)


def _add_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start everything on the embedded default",
                       description="Start the whole hub in one command: an embedded PostgreSQL "
                       "(unless HUB_DATABASE_URL is set), an embedded Kafka-protocol broker on "
                       "HUB_EMBEDDED_KAFKA_PORT (unless HUB_KAFKA_BOOTSTRAP is set), schema migrations, "
                       "the pipeline workers and the connectors as supervised child processes (HL7 v2 "
                       "MLLP on HUB_MLLP_HOST:HUB_MLLP_PORT, MOD handover on HUB_MOD_HOST:HUB_MOD_PORT "
                       "and HUB_MOD_DROP_DIR, local authority CSV in HUB_LA_DROP_DIR, statements in HUB_STATEMENTS_DROP_DIR, children's extracts in HUB_CHILDREN_DROP_DIR) and the FHIR API on "
                       "HUB_HTTP_HOST:HUB_HTTP_PORT. Data and logs stay in HUB_DATA_DIR between runs.")
    p.set_defaults(handler=cmd_up)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_up]
