"""Topic names and their creation. Every name hangs off one prefix (HUB_TOPIC_PREFIX), so two
hubs (or two test runs) can share a broker without reading each other's records."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class Topics:
    prefix: str = "ipc"

    @property
    def inbound(self) -> str:
        """Raw envelopes from every connector (one topic: the kind header says what each is)."""
        return f"{self.prefix}.inbound"

    @property
    def bundles(self) -> str:
        """Mapped FHIR transaction Bundles, waiting for the recorder."""
        return f"{self.prefix}.bundles"

    @property
    def record_events(self) -> str:
        """One change event per committed write to the record."""
        return f"{self.prefix}.record.events"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    def all(self) -> list[str]:
        return [self.inbound, self.bundles, self.record_events, self.deadletter]

    def group(self, worker: str) -> str:
        return f"{self.prefix}.{worker}"


def ensure_topics(bootstrap: str, topics: Topics, partitions: int, max_message_bytes: int | None = None) -> None:
    """Create the hub's topics if absent (an existing topic keeps its partitions). On Apache
    Kafka each topic allows records up to `max_message_bytes` (the broker's default is 1 MB)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "ipc-hub-admin", "log_level": 3,
                         "error_cb": lambda _err: None})
    existing = set(admin.list_topics(timeout=30).topics)
    config = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
    wanted = [NewTopic(name, partitions, 1, config=config) for name in topics.all() if name not in existing]
    if not wanted:
        return
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another process created it first
                raise
    if created:
        log.info("created %d topics", len(created))
