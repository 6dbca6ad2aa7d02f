"""Producer and consumer construction from one settings object.

Defaults work on Apache Kafka and on the Tansu broker: Apache Kafka refuses session timeouts
below its `group.min.session.timeout.ms` (6 s by default), and Tansu holds a group join for half
the session timeout, so 6 s is the shortest that both accept (a 3 s join on Tansu). Tests and
the embedded default may go lower on Tansu (2 s / 0.5 s joins in about 1 s)."""
from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer


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
    # Dead-letter limit: this many rejected messages in a row stop the worker instead.
    dlq_max_consecutive: int = 100
    # Transient failures (database away) are retried with backoff up to this delay between tries.
    retry_max_delay_s: float = 5.0


def make_producer(settings: BusSettings, client_id: str) -> KafkaProducer:
    """acks=all with idempotence: a send the broker acknowledged is on every in-sync replica,
    and a retried send is not written twice."""
    return KafkaProducer(
        bootstrap_servers=settings.bootstrap, client_id=client_id, acks="all",
        enable_idempotence=True, linger_ms=settings.linger_ms, retries=2**31 - 1,
        max_in_flight_requests_per_connection=5,
    )


def make_consumer(settings: BusSettings, group: str, client_id: str) -> KafkaConsumer:
    """Offsets are committed by the worker, after its last step, never automatically."""
    return KafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=group, client_id=client_id,
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_records=settings.max_poll_records,
        max_poll_interval_ms=settings.max_poll_interval_ms,
    )


def make_reader(settings: BusSettings, client_id: str) -> KafkaConsumer:
    """A consumer outside any group, for replay: it reads and never commits."""
    return KafkaConsumer(bootstrap_servers=settings.bootstrap, client_id=client_id, group_id=None,
                         enable_auto_commit=False, auto_offset_reset="earliest")


class Publisher:
    """A producer for steps outside the worker loop (the outbox relay, replay): send, then
    `flush` to know the broker has every record."""

    def __init__(self, settings: BusSettings, client_id: str) -> None:
        self._producer = make_producer(settings, client_id)

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        self._producer.send(topic, key=key, value=value, headers=headers or [])

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close(timeout=5)
