"""The worker loop every pipeline worker runs: poll → process → produce → commit.

A worker is a chain of steps ending in commit (arroyo's pattern): the handler does the work
(and, for the recorder, commits the database); what it returns is produced and flushed; only
then are the offsets committed. A crash at any line therefore redelivers the batch, and the
handlers are idempotent, so redelivery changes nothing.

Failures take two paths. `Transient` (the database is away) retries the same batch with
backoff, committing nothing. A `Rejected` message (it can never succeed as it is) goes to the
dead-letter topic with its reason, step and original bytes, topic, partition and offset. A run
of more than `dlq_max_consecutive` rejections stops the worker instead: after a bad deploy it
is better to stop than to dead-letter the whole stream. A message whose output the broker refuses
as too large is dead-lettered too (reason `too-large`), so no single message can wedge a
partition; any other refusal (the broker away) is retried like a transient failure.

The Kafka client is librdkafka: polls and commits run on a worker thread of the loop's
executor, so the handler's coroutines (the recorder's database lanes) are never held up by
them, and on_journal_dead_letters records dead letters in the bus journal (hub/bus/journal.py)
where there is one."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from hub.bus import metrics
from hub.bus.kafka import BusError, BusSettings, delivery_error, make_consumer, make_producer, produce

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
    # The message this output was made from: dead-lettered instead if the broker refuses it.
    source: Message | None = None


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
DeadLetterHook = Callable[[list[tuple[str, str]]], None]


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
                 handler: Handler, *, client_id: str | None = None,
                 on_dead_letters: DeadLetterHook | None = None) -> None:
        self.name = name
        self.settings = settings
        self.source_topic = source_topic
        self.deadletter_topic = deadletter_topic
        self.handler = handler
        self.client_id = client_id or f"ipc-hub-{name}"
        self.last_loop = time.monotonic()
        self.assigned: set[tuple[str, int]] = set()
        self.on_dead_letters = on_dead_letters
        self.stopped_reason = ""
        self.backing_off = False
        self.processed = 0
        self._consecutive_rejects = 0
        self._lag_at = 0.0
        self._committed: dict[tuple[str, int], int] = {}

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
        consumer.subscribe([self.source_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("%s worker consuming %s as group %s", self.name, self.source_topic, group)
        poll_s = self.settings.poll_timeout_ms / 1000
        try:
            while not stop.is_set():
                self.last_loop = time.monotonic()
                records = await asyncio.to_thread(consumer.consume, self.settings.max_poll_records, poll_s)
                batch = []
                for r in records:
                    if r.error() is not None:
                        if r.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("%s: consumer error %s", self.name, r.error().name())
                        continue
                    batch.append(Message(r.topic(), r.partition(), r.offset(), r.key(), r.value(),
                                         list(r.headers() or []), r.timestamp()[1]))
                if batch:
                    if not await self._handle(consumer, producer, batch, stop):
                        break
                self._record_lag(consumer)
        except DlqLimitExceeded as exc:
            self.stopped_reason = str(exc)
            raise
        finally:
            await asyncio.to_thread(consumer.close)
            producer.flush(5)

    async def _handle(self, consumer, producer, batch: list[Message], stop: threading.Event) -> bool:
        started = time.monotonic()
        for m in batch:
            metrics.MESSAGES_IN.labels(self.name, m.topic).inc()
        outcome = await self._process_with_retry(consumer, batch, stop)
        if outcome is None:
            return False  # stopping mid-retry: nothing committed, the batch comes back later
        self._check_dlq_limit(batch, outcome)
        outputs = outcome.outputs + [dead_letter(r, self.name, self.deadletter_topic) for r in outcome.rejected]
        refused = await self._produce_all(producer, outputs, stop)
        if refused is None:
            return False
        if refused:  # too large for the broker: the message that made it is dead-lettered instead
            extra = [Rejected(o.source, "too-large", "the mapped message is larger than the broker "
                              f"takes ({len(o.value)} bytes)", "produce") for o in refused if o.source]
            outcome.rejected += extra
            if await self._produce_all(producer, [dead_letter(r, self.name, self.deadletter_topic)
                                                  for r in extra], stop) is None:
                return False
        for out in outputs:
            metrics.MESSAGES_OUT.labels(self.name, out.topic).inc()
        for r in outcome.rejected:
            metrics.DEAD_LETTERS.labels(self.name, r.reason).inc()
            m = r.message
            log.warning("%s dead-lettered %s:%d:%d: %s at step %s", self.name, m.topic, m.partition, m.offset,
                        r.reason, r.step, extra={"envelope_id": _envelope_id(m), "reason": r.reason})
        if outcome.rejected and self.on_dead_letters is not None:
            letters = [(_envelope_id(r.message), r.reason) for r in outcome.rejected]
            await self._journal_dead_letters([(i, reason) for i, reason in letters if i], stop)
        await self._commit(consumer, batch)
        now = time.time()
        for m in batch:
            metrics.LATENCY_SECONDS.labels(self.name).observe(max(0.0, now - m.timestamp_ms / 1000))
        metrics.BATCH_SECONDS.labels(self.name).observe(time.monotonic() - started)
        self.processed += len(batch)
        return True

    async def _journal_dead_letters(self, letters: list[tuple[str, str]], stop: threading.Event) -> None:
        delay = 0.05
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.on_dead_letters, letters)
                return
            except Exception as exc:  # noqa: BLE001 - the database away: retry, commit nothing meanwhile
                self.backing_off = True
                log.warning("%s: could not mark dead letters in the journal (%s); retrying", self.name,
                            type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_delay_s)
        self.backing_off = False

    async def _produce_all(self, producer, outputs: list[Output], stop: threading.Event) -> list[Output] | None:
        """Produce and flush; returns the outputs refused as too large (None: stopping). Other
        refusals (the broker away) are retried with backoff, producing again what failed."""
        delay = 0.05
        todo = outputs
        too_large: list[Output] = []
        while todo:
            failed: list[tuple[Output, BusError]] = []
            for out in todo:
                try:
                    produce(producer, out.topic, out.key, out.value, out.headers,
                            lambda err, _msg, out=out: err is not None and failed.append((out, delivery_error(err))))
                except BusError as exc:
                    failed.append((out, exc))
            await asyncio.to_thread(producer.flush, self.settings.delivery_timeout_ms / 1000 + 5)
            too_large += [out for out, exc in failed if exc.too_large]
            todo = [out for out, exc in failed if not exc.too_large]
            if todo:
                self.backing_off = True
                metrics.RETRIES.labels(self.name).inc()
                log.warning("%s: the broker did not take %d records; retrying in %.2f s", self.name, len(todo), delay)
                if stop.wait(delay):
                    return None
                delay = min(delay * 2, self.settings.retry_max_delay_s)
        self.backing_off = False
        return too_large

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
                log.warning("%s: transient failure (%s); retrying in %.2f s", self.name, str(exc), delay)
                if not await self._wait(consumer, delay, stop):
                    return None
                delay = min(delay * 2, self.settings.retry_max_delay_s)

    async def _wait(self, consumer, seconds: float, stop: threading.Event) -> bool:
        """Back off while staying in the group: poll with every partition paused."""
        paused = consumer.assignment()
        consumer.pause(paused)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if stop.is_set():
                    return False
                self.last_loop = time.monotonic()
                await asyncio.to_thread(consumer.poll, min(0.1, max(0.001, deadline - time.monotonic())))
        finally:
            held = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            consumer.resume([tp for tp in paused if (tp.topic, tp.partition) in held])
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

    async def _commit(self, consumer, batch: list[Message]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for m in batch:
            tp = (m.topic, m.partition)
            offsets[tp] = max(offsets.get(tp, -1), m.offset + 1)
        try:
            await asyncio.to_thread(consumer.commit, offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                    asynchronous=False)
            self._committed.update(offsets)
        except KafkaException as exc:
            # Partitions moved to another member: it will redeliver from the last commit, and
            # the handlers are idempotent, so nothing is lost or doubled.
            log.warning("%s: offset commit failed (%s); the batch will be redelivered", self.name,
                        exc.args[0].name())

    def _record_lag(self, consumer) -> None:
        """Lag from the high watermark librdkafka last fetched and this worker's last commit."""
        if time.monotonic() - self._lag_at < 5:
            return
        self._lag_at = time.monotonic()
        for topic, partition in list(self.assigned):
            try:  # cached: no network call on the loop
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            committed = self._committed.get((topic, partition), 0)
            metrics.LAG.labels(self.name, topic, str(partition)).set(max(0, high - committed))

    def _on_assign(self, _consumer, partitions) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        log.info("%s holds partitions: %s", self.name, tuple(p for _, p in sorted(self.assigned)))

    def _on_revoke(self, _consumer, partitions) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}


def _envelope_id(message: Message) -> str:
    for name, value in message.headers:
        if name == "ipc-id":
            return value.decode("utf-8", "replace")
    return ""
