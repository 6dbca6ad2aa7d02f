"""`ipc-hub worker plans`: the plan worker (hub.pipeline.planlife) as its own process. `ipc-hub
up` runs it as one more supervised child beside the mapper, recorder and relay
(hub.cli.up.WORKERS), restarted with back-off if it exits and asked for its /readyz.

It needs only PostgreSQL (no broker): plan changes reach it through the `plan_followup` queue
written in the same transaction as the change (whichever path wrote it: REST, a transaction,
the recorder consuming the bus), and it finds reviews falling due in the record itself. Run as
many as you like, on as many machines: each follow-up and each review is handled once."""
from __future__ import annotations

import argparse
import threading
from contextlib import ExitStack

from hub.config import Settings


def plan_worker(settings: Settings, database_url: str):
    from hub.pipeline.planlife import PlanWorker
    from hub.plans.reviews import parse_intervals

    parse_intervals(settings.review_intervals)   # a bad HUB_REVIEW_INTERVALS stops the worker at start
    return PlanWorker(database_url, lead_days=settings.review_task_lead_days,
                      interval_s=settings.plan_worker_interval_s)


def cmd_plan_worker(args: argparse.Namespace, settings: Settings) -> None:
    """`ipc-hub worker plans [--once]`; SIGTERM (the supervisor stopping it) ends it cleanly
    after the follow-up in hand commits."""
    import signal

    from hub.bus.metrics import serve_health
    from hub.cli.common import database_url, locate_data_dir

    settings = locate_data_dir(settings, must_exist=False)
    with ExitStack() as stack:
        worker = plan_worker(settings, database_url(settings, stack))
        if settings.worker_http_port and not args.once:
            server = serve_health(settings.http_host, settings.worker_http_port, worker.alive, worker.ready)
            stack.callback(server.shutdown)
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            worker.run(stop, once=args.once)
        finally:
            stop.set()
