"""The worker loop every pipeline worker runs: poll → process → produce → commit.

A worker is a chain of steps ending in commit (arroyo's pattern): the handler does the work
(and, for the recorder, commits the database); what it returns is produced and flushed; only
then are the offsets committed. A crash at any line therefore redelivers the batch, and the
handlers are idempotent, so redelivery changes nothing.

Failures take two paths. `Transient` (the database is away) retries the same batch with
backoff, committing nothing. A `Rejected` message (it can never succeed as it is) goes to the
dead-letter topic with its reason, step and original bytes, topic, partition and offset. A run
of more than `dlq_max_consecutive` rejections stops the worker instead: after a bad deploy it
is better to stop than to dead-letter the whole stream."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from hub.bus import metrics
from hub.bus.kafka import BusSettings, make_consumer, make_producer

log = logging.getLogger(__name__)

DLQ_PREFIX = "dlq-"


@dataclass(slots=True, frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    @property
    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(slots=True, frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(slots=True, frozen=True)
class Rejected:
    """A message that can never succeed as it is: dead-lettered with a reason code (a FHIR issue
    code or the like, short enough to label a metric), a detail text and the step that failed."""

    message: Message
    reason: str
    detail: str
    step: str


@dataclass(slots=True)
class Outcome:
    outputs: list[Output] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class Transient(Exception):
    """A failure worth retrying as it is (database or broker briefly away)."""


class DlqLimitExceeded(RuntimeError):
    """Too many consecutive rejections: the worker stops rather than dead-letter everything."""


Handler = Callable[[list[Message]], Awaitable[Outcome]]


def dead_letter(rejected: Rejected, worker: str, topic: str) -> Output:
    """The dead-letter record: the original key, bytes and headers, plus why and where from."""
    m = rejected.message
    extra = {
        "id": str(uuid.uuid4()), "reason": rejected.reason, "detail": rejected.detail[:1000],
        "step": rejected.step, "worker": worker, "topic": m.topic, "partition": str(m.partition),
        "offset": str(m.offset), "at": datetime.now(UTC).isoformat(),
    }
    original = [(k, v) for k, v in m.headers if not k.startswith(DLQ_PREFIX)]
    return Output(topic, m.key, m.value or b"", original + [(DLQ_PREFIX + k, v.encode()) for k, v in extra.items()])


class Worker:
    """One consumer in a group, one producer, one handler; `run` until `stop` is set."""

    def __init__(self, name: str, settings: BusSettings, source_topic: str, deadletter_topic: str,
                 handler: Handler, *, client_id: str | None = None) -> None:
        self.name = name
        self.settings = settings
        self.source_topic = source_topic
        self.deadletter_topic = deadletter_topic
        self.handler = handler
        self.client_id = client_id or f"ipc-hub-{name}"
        self.last_loop = time.monotonic()
        self.assigned: set[TopicPartition] = set()
        self.backing_off = False
        self.processed = 0
        self._consecutive_rejects = 0
        self._lag_at = 0.0

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < max(30.0, self.settings.retry_max_delay_s * 3)

    def ready(self) -> bool:
        return self.alive() and not self.backing_off

    def run(self, stop: threading.Event, group: str) -> None:
        """Consume until `stop` is set; raises DlqLimitExceeded if the dead-letter limit trips."""
        asyncio.run(self._run(stop, group))

    async def _run(self, stop: threading.Event, group: str) -> None:
        consumer = make_consumer(self.settings, group, self.client_id)
        producer = make_producer(self.settings, self.client_id)
        consumer.subscribe([self.source_topic], listener=_Assignments(self))
        log.info("%s worker consuming %s as group %s", self.name, self.source_topic, group)
        try:
            while not stop.is_set():
                self.last_loop = time.monotonic()
                records = consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
                batch = [Message(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or []),
                                 r.timestamp) for recs in records.values() for r in recs]
                if batch:
                    if not await self._handle(consumer, producer, batch, stop):
                        break
                self._record_lag(consumer)
        finally:
            consumer.close(autocommit=False)
            producer.close(timeout=5)

    async def _handle(self, consumer, producer, batch: list[Message], stop: threading.Event) -> bool:
        started = time.monotonic()
        for m in batch:
            metrics.MESSAGES_IN.labels(self.name, m.topic).inc()
        outcome = await self._process_with_retry(consumer, batch, stop)
        if outcome is None:
            return False  # stopping mid-retry: nothing committed, the batch comes back later
        self._check_dlq_limit(batch, outcome)
        outputs = outcome.outputs + [dead_letter(r, self.name, self.deadletter_topic) for r in outcome.rejected]
        for out in outputs:
            producer.send(out.topic, key=out.key, value=out.value, headers=out.headers)
        producer.flush()
        for out in outputs:
            metrics.MESSAGES_OUT.labels(self.name, out.topic).inc()
        for r in outcome.rejected:
            metrics.DEAD_LETTERS.labels(self.name, r.reason).inc()
            log.warning("%s dead-lettered %s: %s at step %s", self.name, r.message.coordinates, r.reason, r.step)
        self._commit(consumer, batch)
        now = time.time()
        for m in batch:
            metrics.LATENCY_SECONDS.labels(self.name).observe(max(0.0, now - m.timestamp_ms / 1000))
        metrics.BATCH_SECONDS.labels(self.name).observe(time.monotonic() - started)
        self.processed += len(batch)
        return True

    async def _process_with_retry(self, consumer, batch: list[Message], stop: threading.Event) -> Outcome | None:
        delay = 0.05
        while True:
            try:
                outcome = await self.handler(batch)
                self.backing_off = False
                return outcome
            except Transient as exc:
                self.backing_off = True
                metrics.RETRIES.labels(self.name).inc()
                log.warning("%s: transient failure (%s); retrying in %.2f s", self.name, exc, delay)
                if not self._wait(consumer, delay, stop):
                    return None
                delay = min(delay * 2, self.settings.retry_max_delay_s)

    def _wait(self, consumer, seconds: float, stop: threading.Event) -> bool:
        """Back off while staying in the group: poll with every partition paused."""
        paused = consumer.assignment()
        consumer.pause(*paused)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if stop.is_set():
                    return False
                self.last_loop = time.monotonic()
                consumer.poll(timeout_ms=int(min(100, max(1, (deadline - time.monotonic()) * 1000))))
        finally:
            consumer.resume(*[tp for tp in paused if tp in consumer.assignment()])
        return True

    def _check_dlq_limit(self, batch: list[Message], outcome: Outcome) -> None:
        rejected = {r.message.coordinates for r in outcome.rejected}
        for m in batch:
            if m.coordinates in rejected:
                self._consecutive_rejects += 1
                if self._consecutive_rejects > self.settings.dlq_max_consecutive:
                    raise DlqLimitExceeded(
                        f"{self.name}: more than {self.settings.dlq_max_consecutive} consecutive messages "
                        f"rejected (last at {m.coordinates}); stopping without committing")
            else:
                self._consecutive_rejects = 0

    def _commit(self, consumer, batch: list[Message]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for m in batch:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)
        try:
            consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved to another member: it will redeliver from the last commit, and
            # the handlers are idempotent, so nothing is lost or doubled.
            log.warning("%s: offset commit failed (%s); the batch will be redelivered", self.name,
                        type(exc).__name__)

    def _record_lag(self, consumer) -> None:
        """Lag from the fetched high watermark (records produced) and the group's committed
        offset: never from end_offsets(), which Tansu answers wrongly."""
        if time.monotonic() - self._lag_at < 5:
            return
        self._lag_at = time.monotonic()
        for tp in self.assigned:
            high = consumer.highwater(tp)
            if high is None:
                continue
            committed = consumer.committed(tp)
            metrics.LAG.labels(self.name, tp.topic, str(tp.partition)).set(max(0, high - (committed or 0)))


class _Assignments(ConsumerRebalanceListener):
    """Keeps the worker's view of its partitions (for lag and for the logs)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked) -> None:
        self.worker.assigned -= set(revoked)

    def on_partitions_assigned(self, assigned) -> None:
        self.worker.assigned |= set(assigned)
        log.info("%s holds partitions: %s", self.worker.name,
                 ",".join(str(tp.partition) for tp in sorted(self.worker.assigned)))
