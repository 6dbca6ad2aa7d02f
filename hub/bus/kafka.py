"""Producer and consumer construction from one settings object, on librdkafka (confluent-kafka).

librdkafka does its network I/O on its own threads, without the interpreter lock, so a worker's
poll and a connector's sends never hold up an event loop or an API thread; produce() only
queues. Defaults work on Apache Kafka and on the Tansu broker: Apache Kafka refuses session
timeouts below its `group.min.session.timeout.ms` (6 s by default), and Tansu holds a group join
for half the session timeout, so 6 s is the shortest that both accept (a 3 s join on Tansu).
Tests and the embedded default may go lower on Tansu (2 s / 0.5 s joins in about 1 s)."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

# One record may be this large: a 10 MiB MOD handover document, base64-encoded in its Bundle,
# still fits. The broker must allow it too (Apache Kafka: message.max.bytes on the broker).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


@dataclass(slots=True, frozen=True)
class BusSettings:
    bootstrap: str
    topic_prefix: str = "ipc"
    partitions: int = 4
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1500
    max_poll_records: int = 500
    poll_timeout_ms: int = 200
    max_poll_interval_ms: int = 300_000
    linger_ms: int = 5
    # Largest record a producer sends (MessageSizeTooLarge above it: the message is dead-lettered
    # or refused before it is acknowledged, never retried for ever).
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # Dead-letter limit: this many rejected messages in a row stop the worker instead.
    dlq_max_consecutive: int = 100
    # Transient failures (database away) are retried with backoff up to this delay between tries.
    retry_max_delay_s: float = 5.0
    # Seconds a send may wait for the broker before it counts as failed (the sender is told).
    delivery_timeout_ms: int = 30_000


class BusError(RuntimeError):
    """The broker did not take a record (refused, too large, or timed out)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def delivery_error(error: KafkaError) -> BusError:
    too_large = error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    return BusError(f"the broker did not take the record ({error.name()})", too_large=too_large)


def error_names() -> list[str]:
    """librdkafka's error code names (`_TRANSPORT`, `MSG_SIZE_TOO_LARGE`…): words a log may show."""
    return [name for name in dir(KafkaError) if name.lstrip("_").isupper()]


def _common(settings: BusSettings, client_id: str) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap, "client.id": client_id,
            # Quiet: librdkafka reports broker disconnects through error callbacks we log ourselves.
            "log_level": 3, "error_cb": lambda _err: None}


def make_producer(settings: BusSettings, client_id: str) -> Producer:
    """acks=all with idempotence: a send the broker acknowledged is on every in-sync replica,
    and a retried send is not written twice."""
    return Producer({
        **_common(settings, client_id), "acks": "all", "enable.idempotence": True,
        "linger.ms": settings.linger_ms, "message.max.bytes": settings.max_message_bytes,
        "delivery.timeout.ms": settings.delivery_timeout_ms, "compression.type": "none",
        "queue.buffering.max.messages": 200_000,
    })


def make_consumer(settings: BusSettings, group: str, client_id: str) -> Consumer:
    """Offsets are committed by the worker, after its last step, never automatically."""
    return Consumer({
        **_common(settings, client_id), "group.id": group, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "fetch.max.bytes": settings.max_message_bytes * 2,
        "max.partition.fetch.bytes": settings.max_message_bytes,
        "receive.message.max.bytes": settings.max_message_bytes * 2 + 1_000_000,
    })


def make_reader(settings: BusSettings, client_id: str) -> Consumer:
    """A consumer outside any group's work, for replay: it is assigned partitions and never commits."""
    return Consumer({
        **_common(settings, client_id), "group.id": f"ipc-hub-reader-{uuid.uuid4()}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True,
        "fetch.max.bytes": settings.max_message_bytes * 2,
        "max.partition.fetch.bytes": settings.max_message_bytes,
        "receive.message.max.bytes": settings.max_message_bytes * 2 + 1_000_000,
    })


class Publisher:
    """A producer for steps outside the worker loop (the outbox relay, replay): send, then
    `flush` to know the broker has every record (BusError if it refused any)."""

    def __init__(self, settings: BusSettings, client_id: str) -> None:
        self._producer = make_producer(settings, client_id)
        self._timeout_s = settings.delivery_timeout_ms / 1000 + 5
        self._failures: list[KafkaError] = []

    def _delivered(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self._failures.append(error)

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        produce(self._producer, topic, key, value, headers or [], self._delivered)

    def flush(self) -> None:
        remaining = self._producer.flush(self._timeout_s)
        failures, self._failures = self._failures, []
        if failures:
            raise delivery_error(failures[0])
        if remaining:
            raise BusError(f"{remaining} records not acknowledged by the broker in time")

    def close(self) -> None:
        self._producer.flush(5)


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes,
            headers: list[tuple[str, bytes]], on_delivery: Any) -> None:
    """Queue one record; while librdkafka's queue is full, serve deliveries until there is room."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            raise BusError(f"the record could not be queued ({exc.args[0].name()})",
                           too_large=exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE) from None


def wait_for_broker(settings: BusSettings, timeout_s: float = 30.0) -> None:
    """Return once the broker answers a metadata request (after it started or restarted)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(_common(settings, "ipc-hub-probe"))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise BusError(f"the broker at {settings.bootstrap} did not answer in {timeout_s:.0f} s") from None
