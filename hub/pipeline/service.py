"""Running the pipeline's workers: the mapper and recorder on hub.bus's worker loop, and the
outbox relay that publishes change events. Each runs until its stop event is set, as its own
process (`ipc-hub worker <name>`, which `ipc-hub up` supervises) or on a thread of a test."""
from __future__ import annotations

import functools
import logging
import threading
import time

import orjson
import psycopg

from hub.bus import journal, metrics
from hub.bus.kafka import BusSettings, Publisher
from hub.bus.topics import Topics
from hub.bus.worker import Message, Outcome, Worker
from hub.pipeline.mapper import map_batch
from hub.pipeline.recorder import Recorder
from hub.pipeline.registry import Registry
from hub.store import outbox

log = logging.getLogger(__name__)


def _dead_letter_hook(journal_url: str | None):
    """Dead letters are marked in the bus journal (kept, not republished), where there is one."""
    if journal_url is None:
        return None
    return functools.partial(journal.mark_dead_letters, journal_url)


def mapper_worker(bus: BusSettings, mapping_modules: list[str], journal_url: str | None = None) -> Worker:
    topics = Topics(bus.topic_prefix)
    registry = Registry(mapping_modules)

    async def handle(batch: list[Message]) -> Outcome:
        return map_batch(batch, registry, topics)

    return Worker("mapper", bus, topics.inbound, topics.deadletter, handle,
                  on_dead_letters=_dead_letter_hook(journal_url))


def recorder_worker(bus: BusSettings, database_url: str, journal_url: str | None = None) -> Worker:
    topics = Topics(bus.topic_prefix)
    return Worker("recorder", bus, topics.bundles, topics.deadletter, Recorder(database_url),
                  on_dead_letters=_dead_letter_hook(journal_url))


def run_worker(worker: Worker, bus: BusSettings, stop: threading.Event) -> None:
    worker.run(stop, Topics(bus.topic_prefix).group(worker.name))


class Relay:
    """Publishes the outbox to the record-events topic in commit order, then deletes what the
    broker acknowledged: a crash between the two re-sends (at-least-once), never loses."""

    name = "relay"

    def __init__(self, bus: BusSettings, database_url: str, batch: int = 2000) -> None:
        self.bus = bus
        self.database_url = database_url
        self.batch = batch
        self.topic = Topics(bus.topic_prefix).record_events
        self.last_loop = time.monotonic()
        self.connected = False

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < 30

    def ready(self) -> bool:
        return self.alive() and self.connected

    def run(self, stop: threading.Event) -> None:
        publisher = Publisher(self.bus, "ipc-hub-relay")
        delay = 0.05
        try:
            while not stop.is_set():
                self.last_loop = time.monotonic()
                try:
                    self._drain(publisher, stop)
                    delay = 0.05
                except psycopg.OperationalError as exc:
                    self.connected = False
                    log.warning("relay: database unavailable (%s); retrying in %.2f s", type(exc).__name__, delay)
                    stop.wait(delay)
                    delay = min(delay * 2, self.bus.retry_max_delay_s)
        finally:
            publisher.close()

    def _drain(self, publisher: Publisher, stop: threading.Event) -> None:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            while not outbox.try_become_relay(conn):  # another relay is draining
                self.last_loop = time.monotonic()
                if stop.wait(1.0):
                    return
            self.connected = True
            while not stop.is_set():
                self.last_loop = time.monotonic()
                events = outbox.pending(conn, self.batch)
                if not events:
                    stop.wait(0.05)
                    continue
                for e in events:
                    value = orjson.dumps({"resourceType": e.res_type, "id": e.res_id, "versionId": str(e.version),
                                          "method": e.method})
                    # Keyed by person (DESIGN: one person's events stay in order, one partition),
                    # so the notifier tells a subscriber of one person's changes in commit order;
                    # a resource outside every record is keyed by itself.
                    key = f"Patient/{e.patient_id}" if e.patient_id else f"{e.res_type}/{e.res_id}"
                    publisher.send(self.topic, key.encode(), value, e.headers())
                publisher.flush()
                outbox.remove(conn, [e.seq for e in events])
                metrics.PUBLISHED_EVENTS.inc(len(events))
                metrics.MESSAGES_OUT.labels("relay", self.topic).inc(len(events))
