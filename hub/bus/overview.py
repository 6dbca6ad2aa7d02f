"""What the operations page shows of the bus: each feed's messages (by source system, from the
inbound topic's envelope headers), the dead letters with their reason and original bytes, and
each consumer group's lag (the last offset read from a partition, plus one, minus the group's
committed offset: never from end_offsets(), which Tansu answers wrongly).

Reads whole topics, so it suits the embedded default and modest volumes; a large production
hub should keep these counts in its metrics (`/metrics`) instead."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import TopicPartition

from hub.bus.kafka import BusSettings, make_consumer
from hub.bus.replay import dead_letter_field, read_topic
from hub.bus.topics import Topics

_ENVELOPE = "ipc-"
_ORIGINAL_SHOWN = 2000


@dataclass
class Feed:
    source: str
    received: int = 0
    refused: int = 0
    last_seen: datetime | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: str
    reason: str
    detail: str
    step: str
    topic: str
    source: str
    kind: str
    envelope_id: str
    received_at: str
    original: str  # the start of the original bytes, as text
    size: int


@dataclass(frozen=True)
class Lag:
    group: str
    topic: str
    partition: int
    end: int
    committed: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass
class Overview:
    feeds: list[Feed] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    lags: list[Lag] = field(default_factory=list)


def overview(settings: BusSettings, topics: Topics, groups: dict[str, str]) -> Overview:
    """The bus as the operations page shows it. `groups`: consumer group → the topic it reads."""
    feeds: dict[str, Feed] = {}
    ends: dict[tuple[str, int], int] = {}
    for record in read_topic(settings, topics.inbound, timeout=10):
        source = record.headers.get(f"{_ENVELOPE}source", b"").decode() or "unknown"
        feed = feeds.setdefault(source, Feed(source))
        feed.received += 1
        seen = _instant(record.headers.get(f"{_ENVELOPE}received-at", b"").decode())
        if seen and (feed.last_seen is None or seen > feed.last_seen):
            feed.last_seen = seen
        ends[(topics.inbound, record.partition)] = max(ends.get((topics.inbound, record.partition), 0),
                                                       record.offset + 1)
    letters = []
    for record in read_topic(settings, topics.deadletter, timeout=10):
        source = record.headers.get(f"{_ENVELOPE}source", b"").decode() or "unknown"
        feeds.setdefault(source, Feed(source)).refused += 1
        value = record.value or b""
        letters.append(DeadLetter(
            id=dead_letter_field(record, "id"), reason=dead_letter_field(record, "reason"),
            detail=dead_letter_field(record, "detail"), step=dead_letter_field(record, "step"),
            topic=dead_letter_field(record, "topic"), source=source,
            kind=record.headers.get(f"{_ENVELOPE}kind", b"").decode(),
            envelope_id=record.headers.get(f"{_ENVELOPE}id", b"").decode(),
            received_at=record.headers.get(f"{_ENVELOPE}received-at", b"").decode(),
            original=value[:_ORIGINAL_SHOWN].decode("utf-8", errors="replace"), size=len(value)))
    for record in read_topic(settings, topics.bundles, timeout=10):
        ends[(topics.bundles, record.partition)] = max(ends.get((topics.bundles, record.partition), 0),
                                                       record.offset + 1)
    return Overview(sorted(feeds.values(), key=lambda f: f.source), letters, _lags(settings, groups, ends))


def _lags(settings: BusSettings, groups: dict[str, str], ends: dict[tuple[str, int], int]) -> list[Lag]:
    found = []
    for group, topic in groups.items():
        partitions = sorted(p for t, p in ends if t == topic)
        if not partitions:
            continue
        # A consumer that names the group but never subscribes does not join it: it only reads
        # the group's committed offsets (negative where the group has committed none).
        peek = make_consumer(settings, group, "ipc-hub-operations")
        try:
            asked = [TopicPartition(topic, partition) for partition in partitions]
            for tp in peek.committed(asked, timeout=10):
                found.append(Lag(group, topic, tp.partition, ends[(topic, tp.partition)], max(tp.offset, 0)))
        finally:
            peek.close()
    return found


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
