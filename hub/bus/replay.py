"""Replay: put records back in front of the workers, safely (every handler is idempotent, so a
record processed twice changes nothing).

Dead letters go back to the topic they came from with their original key, bytes and headers;
a topic range is re-published to the same topic. The end of a topic is read from the high
watermark the fetches report, never from end_offsets() (wrong on Tansu)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from kafka import TopicPartition

from hub.bus.kafka import BusSettings, Publisher, make_reader
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
        parts = reader.partitions_for_topic(topic) or set()
        chosen = [TopicPartition(topic, p) for p in sorted(parts) if partition is None or p == partition]
        if not chosen:
            return
        reader.assign(chosen)
        for tp in chosen:
            reader.seek(tp, from_offset if partition is not None else 0)
        deadline = time.monotonic() + timeout
        done: set[TopicPartition] = set()
        while len(done) < len(chosen) and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=200).values():
                for r in records:
                    yield Record(r.partition, r.offset, r.key, r.value, dict(r.headers or []), list(r.headers or []))
            for tp in chosen:
                high = reader.highwater(tp)
                if high is not None and reader.position(tp) >= high:
                    done.add(tp)
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
