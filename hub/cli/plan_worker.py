"""`ipc-hub worker plans`: the plan worker (hub.pipeline.planlife) as its own process, and the
wiring that runs it beside the other workers in `ipc-hub up`.

It needs only PostgreSQL (no broker): plan changes reach it through the `plan_followup` queue
and NOTIFY, and it finds reviews falling due in the record itself. Run as many as you like, on
as many machines: each follow-up and each review is handled once. `up` runs one on a thread;
under a process supervisor, run `ipc-hub worker plans` as one more worker process, restarted if
it exits, like the mapper and the recorder."""
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


def start_plan_worker(settings: Settings, database_url: str, stack: ExitStack) -> None:
    """The plan worker on a thread until the stack closes (for `ipc-hub up`)."""
    worker = plan_worker(settings, database_url)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="ipc-plans", daemon=True)
    thread.start()

    def stop_it() -> None:
        stop.set()
        thread.join(15)

    stack.callback(stop_it)


def cmd_plan_worker(args: argparse.Namespace, settings: Settings) -> None:
    """`ipc-hub worker plans [--once]`."""
    from hub.bus.metrics import serve_health
    from hub.cli.main import _database_url

    with ExitStack() as stack:
        worker = plan_worker(settings, _database_url(settings, stack))
        if settings.worker_http_port and not args.once:
            server = serve_health(settings.http_host, settings.worker_http_port, worker.alive, worker.ready)
            stack.callback(server.shutdown)
        stop = threading.Event()
        try:
            worker.run(stop, once=args.once)
        finally:
            stop.set()
