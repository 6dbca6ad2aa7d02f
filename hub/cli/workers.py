"""`ipc-hub worker <mapper|recorder|relay|plans>` (plans: hub/cli/plan_worker.py) and `ipc-hub replay`: the pipeline's commands, and
the wiring `ipc-hub up` uses to run the workers beside the API."""
from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack

from hub.bus.kafka import BusSettings
from hub.bus.topics import Topics, ensure_topics
from hub.config import Settings

log = logging.getLogger("hub")


def bus_settings(settings: Settings, bootstrap: str) -> BusSettings:
    """The bus settings; on the embedded Tansu broker (no HUB_KAFKA_BOOTSTRAP) with the timeouts
    left at their defaults, the shorter ones Tansu allows, so workers join in about a second."""
    session, heartbeat = settings.kafka_session_timeout_ms, settings.kafka_heartbeat_interval_ms
    defaults = Settings.model_fields
    if not settings.kafka_bootstrap and (session, heartbeat) == (
            defaults["kafka_session_timeout_ms"].default, defaults["kafka_heartbeat_interval_ms"].default):
        session, heartbeat = 2000, 500
    return BusSettings(
        bootstrap=bootstrap, topic_prefix=settings.topic_prefix, partitions=settings.topic_partitions,
        session_timeout_ms=session, heartbeat_interval_ms=heartbeat,
        max_poll_records=settings.kafka_max_poll_records,
        dlq_max_consecutive=settings.dlq_max_consecutive, retry_max_delay_s=settings.retry_max_delay_s,
    )


def start_pipeline(settings: Settings, database_url: str, bootstrap: str, stack: ExitStack) -> None:
    """Create the topics and run mapper, recorder and relay on threads until the stack closes."""
    from hub.pipeline.service import Relay, mapper_worker, recorder_worker, run_all

    bus = bus_settings(settings, bootstrap)
    ensure_topics(bootstrap, Topics(bus.topic_prefix), bus.partitions)
    stop = threading.Event()
    workers = [mapper_worker(bus, settings.mappings.split(",")), recorder_worker(bus, database_url)]
    threads = run_all(workers, Relay(bus, database_url), bus, stop)
    from hub.cli.plan_worker import start_plan_worker

    start_plan_worker(settings, database_url, stack)

    def stop_all() -> None:
        stop.set()
        for t in threads:
            t.join(15)

    stack.callback(stop_all)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    """One pipeline worker as its own process (production scales these by consumer group)."""
    if args.name == "plans":
        from hub.cli.plan_worker import cmd_plan_worker

        return cmd_plan_worker(args, settings)
    from hub.bus.metrics import serve_health
    from hub.cli.main import _database_url, _kafka_bootstrap
    from hub.pipeline.service import Relay, mapper_worker, recorder_worker, run_worker
    from hub.runtime.process import settle_heap

    with ExitStack() as stack:
        bootstrap = _kafka_bootstrap(settings, stack)
        bus = bus_settings(settings, bootstrap)
        ensure_topics(bootstrap, Topics(bus.topic_prefix), bus.partitions)
        stop = threading.Event()
        if args.name == "mapper":
            runner = mapper_worker(bus, settings.mappings.split(","))
        else:
            database_url = _database_url(settings, stack)
            runner = (recorder_worker(bus, database_url) if args.name == "recorder"
                      else Relay(bus, database_url))
        if settings.worker_http_port:
            server = serve_health(settings.http_host, settings.worker_http_port, runner.alive, runner.ready)
            stack.callback(server.shutdown)
        if args.name in ("mapper", "recorder"):
            from hub.fhir.resources import prepare

            prepare()   # the validation rules, compiled before the first message rather than on it
        settle_heap()
        try:
            if args.name == "relay":
                runner.run(stop)
            else:
                run_worker(runner, bus, stop)
        finally:
            stop.set()


def cmd_replay(args: argparse.Namespace, settings: Settings) -> None:
    """Re-run dead letters (all, by id, by reason) or a topic partition from an offset."""
    from hub.bus.replay import replay_dead_letters, replay_topic
    from hub.cli.main import _kafka_bootstrap

    with ExitStack() as stack:
        bus = bus_settings(settings, _kafka_bootstrap(settings, stack))
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


def _add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run one event-pipeline worker",
                       description="Run one pipeline worker against HUB_KAFKA_BOOTSTRAP and "
                       "HUB_DATABASE_URL: mapper (inbound envelopes → FHIR Bundles), recorder (Bundles → "
                       "the record, identity, Provenance) or relay (change events to Kafka). Serves "
                       "/metrics, /healthz and /readyz on HUB_WORKER_HTTP_PORT if set. plans (the plan "
                       "worker: sign-off requests, reviews raised when due, outcome measures; "
                       "PostgreSQL only) takes --once to do what is due and exit.")
    p.add_argument("name", choices=["mapper", "recorder", "relay", "plans"])
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
