"""Replay: put records back in front of the workers, safely (every handler is idempotent, so a
record processed twice changes nothing).

Dead letters go back to the topic they came from with their original key, bytes and headers;
a topic range is re-published to the same topic. The end of a topic is read from the high
watermark the fetches report (partition EOF events), never from end_offsets() (wrong on Tansu).

Where the bus has a journal (hub/bus/journal.py), `republish_journal` puts every pending
envelope back on the inbound topic after the broker (re)started, and dead-letter replay also
re-opens dead letters the journal keeps (a restarted embedded broker has forgotten its topics)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from hub.bus import journal
from hub.bus.kafka import BusSettings, Publisher, make_reader
from hub.bus.topics import Topics
from hub.bus.worker import DLQ_PREFIX


@dataclass(slots=True, frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    raw_headers: list[tuple[str, bytes]]


def read_topic(settings: BusSettings, topic: str, *, partition: int | None = None, from_offset: int = 0,
               timeout: float = 30.0) -> Iterator[Record]:
    """Every record now in `topic` (one partition, from an offset, if given), then stop."""
    reader = make_reader(settings, "ipc-hub-replay")
    try:
        meta = reader.list_topics(topic, timeout=10).topics.get(topic)
        parts = sorted(meta.partitions) if meta is not None and meta.error is None else []
        chosen = [p for p in parts if partition is None or p == partition]
        if not chosen:
            return
        start = from_offset if partition is not None else 0
        # The end is where the fetches say it is (partition EOF): Tansu answers ListOffsets wrongly.
        todo = set(chosen)
        reader.assign([TopicPartition(topic, p, start if start > 0 else OFFSET_BEGINNING) for p in chosen])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for r in reader.consume(500, 0.2):
                if r.error() is not None:
                    if r.error().code() == KafkaError._PARTITION_EOF:
                        todo.discard(r.partition())
                    continue
                headers = list(r.headers() or [])
                yield Record(r.partition(), r.offset(), r.key(), r.value(), dict(headers), headers)
    finally:
        reader.close()


def dead_letter_field(record: Record, name: str) -> str:
    return record.headers.get(DLQ_PREFIX + name, b"").decode()


def replay_dead_letters(settings: BusSettings, deadletter_topic: str, *, ids: set[str] | None = None,
                        reason: str | None = None) -> list[str]:
    """Re-publish the chosen dead letters to their original topics; returns their dead-letter ids."""
    publisher = Publisher(settings, "ipc-hub-replay")
    replayed = []
    try:
        for record in read_topic(settings, deadletter_topic):
            letter_id = dead_letter_field(record, "id")
            if ids is not None and letter_id not in ids:
                continue
            if reason is not None and dead_letter_field(record, "reason") != reason:
                continue
            original = [(k, v) for k, v in record.raw_headers if not k.startswith(DLQ_PREFIX)]
            publisher.send(dead_letter_field(record, "topic"), record.key, record.value or b"", original)
            replayed.append(letter_id)
        publisher.flush()
    finally:
        publisher.close()
    return replayed


def replay_topic(settings: BusSettings, topic: str, partition: int, from_offset: int) -> int:
    """Re-publish one partition's records from `from_offset` to the same topic; returns how many."""
    publisher = Publisher(settings, "ipc-hub-replay")
    count = 0
    try:
        # Read to the end first: what we publish lands on the same partition, after that end.
        for record in list(read_topic(settings, topic, partition=partition, from_offset=from_offset)):
            publisher.send(topic, record.key, record.value or b"", record.raw_headers)
            count += 1
        publisher.flush()
    finally:
        publisher.close()
    return count


def reopen_journal_dead_letters(settings: BusSettings, database_url: str, reason: str | None = None) -> int:
    """Dead letters the journal keeps go back to pending and are published again, so a replay
    whose topic records are gone (a restarted embedded broker) still re-runs them; returns how
    many were re-opened."""
    reopened = sum(1 for _ in journal.pending(database_url, dead_letters=True, reason=reason))
    if reopened:
        journal.clear_dead_letters(database_url, reason)
        republish_journal(settings, database_url)
    return reopened


def republish_journal(settings: BusSettings, database_url: str) -> int:
    """Publish every pending journal envelope to the inbound topic again (the broker started or
    restarted); returns how many. Safe to repeat: the recorder absorbs what it already holds."""
    publisher = Publisher(settings, "ipc-hub-journal")
    topic = Topics(settings.topic_prefix).inbound
    count = 0
    try:
        for key, value, headers in journal.pending(database_url):
            publisher.send(topic, key, value, headers)
            count += 1
        publisher.flush()
    finally:
        publisher.close()
    return count
