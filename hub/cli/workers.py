"""`ipc-hub worker <mapper|recorder|relay|plans|cohorts|exporter>` and `ipc-hub replay`: the pipeline's
commands (`ipc-hub up` runs each worker as a child process of its own; plans: hub/cli/plan_worker.py)."""
from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack

from hub.bus.topics import Topics, ensure_topics
from hub.bus.worker import DlqLimitExceeded
from hub.cli.common import bus_settings, database_url, journal_enabled, kafka_bootstrap, locate_data_dir
from hub.config import Settings
from hub.runtime.supervisor import EXIT_DLQ_LIMIT

log = logging.getLogger("hub")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    """One pipeline worker as its own process (production scales these by consumer group)."""
    if args.name == "plans":
        from hub.cli.plan_worker import cmd_plan_worker

        return cmd_plan_worker(args, settings)
    from hub.bus.metrics import serve_health
    from hub.pipeline.service import Relay, mapper_worker, recorder_worker, run_worker
    from hub.runtime.process import settle_heap

    settings = locate_data_dir(settings, must_exist=False)
    with ExitStack() as stack:
        if args.name == "mapper":
            _check_id_key(settings, stack)
        bootstrap = kafka_bootstrap(settings, stack)
        bus = bus_settings(settings, bootstrap)
        ensure_topics(bootstrap, Topics(bus.topic_prefix), bus.partitions, bus.max_message_bytes)
        stop = threading.Event()
        journal = journal_enabled(settings)
        if args.name == "mapper":
            url = database_url(settings, stack) if journal else None
            runner = mapper_worker(bus, settings.mappings.split(","), journal_url=url)
        elif args.name == "exporter":
            from hub.exports.runner import ExportRunner

            runner = ExportRunner(database_url(settings, stack), settings.exports_folder(),
                                  file_resources=settings.export_file_resources,
                                  retention_s=settings.export_retention_s, niceness=settings.export_niceness)
        elif args.name == "cohorts":
            from hub.cohorts.worker import cohort_worker

            runner = cohort_worker(bus, database_url(settings, stack))
        elif args.name == "notifier":
            from hub.subscriptions.delivery import Notifier

            runner = Notifier(bus, database_url(settings, stack), settings)
        else:
            url = database_url(settings, stack)
            runner = (recorder_worker(bus, url, journal_url=url if journal else None) if args.name == "recorder"
                      else Relay(bus, url))
        if settings.worker_http_port:
            server = serve_health(settings.http_host, settings.worker_http_port, runner.alive, runner.ready)
            stack.callback(server.shutdown)
        if args.name in ("mapper", "recorder"):
            from hub.fhir.resources import prepare

            prepare()   # the validation rules, compiled before the first message rather than on it
        settle_heap()
        try:
            if args.name in ("relay", "exporter"):
                runner.run(stop)
            elif args.name == "notifier":
                runner.run(stop, Topics(bus.topic_prefix).group("notifier"))
            else:
                run_worker(runner, bus, stop)
        except DlqLimitExceeded:
            log.error("%s stopped by the dead-letter limit: more than %d messages rejected in a row, nothing "
                      "committed after them; look at the dead-letter topic %s, fix the cause, then restart",
                      args.name, bus.dlq_max_consecutive, Topics(bus.topic_prefix).deadletter)
            raise SystemExit(EXIT_DLQ_LIMIT) from None
        finally:
            stop.set()


def _check_id_key(settings: Settings, stack: ExitStack) -> None:
    """The mapper derives the ids of everything a feed sends (hub/fhir/ids.py): with another id
    key than the record's, it would give every source record a second id and split people's
    records. So it loads the key and, when it can reach the record's database (configured, the
    running `ipc-hub up`'s, or the bus journal's), checks it as the API and the recorder do, and
    stops now, naming the setting. Without a database, the recorder checks the key fingerprint
    every mapped message carries (hub.pipeline.mapper)."""
    import asyncio

    from psycopg import AsyncConnection

    from hub.fhir import ids
    from hub.runtime.embedded import running_postgres_url
    from hub.store import idkeys

    try:
        ids.load_key(settings.data_dir, settings.id_key_file)
    except ids.IdKeyError as exc:
        raise SystemExit(f"ipc-hub worker mapper: {exc}") from None
    url = settings.database_url or running_postgres_url(settings.data_dir)
    if url is None and journal_enabled(settings):
        url = database_url(settings, stack)
    if url is None:
        log.info("mapper: no database to check the id key against; the recorder checks each message's")
        return

    async def check() -> None:
        async with await AsyncConnection.connect(url, autocommit=True, connect_timeout=10) as conn:
            await idkeys.ensure(conn)

    try:
        asyncio.run(check())
    except idkeys.KeyMismatch as exc:
        log.error("mapper: %s", exc)
        raise SystemExit(f"ipc-hub worker mapper: {exc}") from None


def cmd_replay(args: argparse.Namespace, settings: Settings) -> None:
    """Re-run dead letters (all, by id, by reason) or a topic partition from an offset."""
    from hub.bus.replay import reopen_journal_dead_letters, replay_dead_letters, replay_topic
    from hub.runtime.embedded import running_postgres_url

    settings = locate_data_dir(settings, must_exist=False)
    with ExitStack() as stack:
        bus = bus_settings(settings, kafka_bootstrap(settings, stack))
        topics = Topics(bus.topic_prefix)
        if args.topic:
            count = replay_topic(bus, args.topic, args.partition, args.from_offset)
            print(f"replayed {count} records of {args.topic}[{args.partition}] from offset {args.from_offset}")
            return
        if not (args.all or args.id or args.reason):
            raise SystemExit("ipc-hub replay: say which dead letters: --all, --id ID or --reason CODE")
        ids = set(args.id) if args.id else None
        replayed = replay_dead_letters(bus, topics.deadletter, ids=ids, reason=args.reason)
        print(f"replayed {len(replayed)} dead letters")
        url = settings.database_url or running_postgres_url(settings.data_dir)
        if journal_enabled(settings) and url and ids is None:
            reopened = reopen_journal_dead_letters(bus, url, args.reason)
            print(f"re-opened {reopened} dead letters kept in the bus journal")


def _add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run one event-pipeline worker",
                       description="Run one pipeline worker against HUB_KAFKA_BOOTSTRAP and "
                       "HUB_DATABASE_URL: mapper (inbound envelopes → FHIR Bundles), recorder (Bundles → "
                       "the record, identity, Provenance), relay (change events to Kafka), cohorts (change "
                       "events → cohort members and offers), notifier (change events to subscribers' "
                       "endpoints, hub/subscriptions) or exporter (Bulk Data export jobs, when "
                       "HUB_EXPORT_IN_API is false). Serves /metrics, /healthz and /readyz on "
                       "HUB_WORKER_HTTP_PORT if set. plans (the plan worker: sign-off requests, reviews "
                       "raised when due, outcome measures; PostgreSQL only) takes --once to do what is "
                       "due and exit.")
    p.add_argument("name", choices=["mapper", "recorder", "relay", "plans", "cohorts", "notifier", "exporter"])
    p.add_argument("--once", action="store_true", help="plans only: handle what is queued and due, then exit")
    p.set_defaults(handler=cmd_worker)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-run dead letters or a topic from an offset",
                       description="Put records back in front of the workers. Safe to repeat: every "
                       "step is idempotent, so a record processed twice changes nothing.")
    p.add_argument("--all", action="store_true", help="every dead letter")
    p.add_argument("--id", action="append", help="a dead letter's id (dlq-id header); repeatable")
    p.add_argument("--reason", help="dead letters with this reason code")
    p.add_argument("--topic", help="re-publish this topic's records instead of dead letters")
    p.add_argument("--partition", type=int, default=0)
    p.add_argument("--from-offset", type=int, default=0)
    p.set_defaults(handler=cmd_replay)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_worker, _add_replay]
