"""Topic names and their creation. Every name hangs off one prefix (HUB_TOPIC_PREFIX), so two
hubs (or two test runs) can share a broker without reading each other's records."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

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


def ensure_topics(bootstrap: str, topics: Topics, partitions: int) -> None:
    """Create the hub's topics if absent (an existing topic keeps its partitions)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="ipc-hub-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(name, partitions, 1) for name in topics.all() if name not in existing]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process created them first
            log.info("created topics %s", ", ".join(t.name for t in wanted))
    finally:
        admin.close()
