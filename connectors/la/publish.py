"""The Kafka side of an import: envelopes to the inbound topic with a bounded number waiting
for the broker's acknowledgement (acks=all, idempotent producer). A million-row file must not
become a million pending futures: past `max_in_flight` the oldest is waited for first."""
from __future__ import annotations

from collections import deque
from typing import Any

from connectors.la.extract import PublishError
from hub.bus.envelope import Envelope
from hub.bus.kafka import BusSettings, make_producer
from hub.bus.topics import Topics


class KafkaSink:
    def __init__(self, settings: BusSettings, *, max_in_flight: int = 10_000, timeout_s: float = 30.0,
                 client_id: str = "ipc-hub-la") -> None:
        self._producer = make_producer(settings, client_id)
        self._topic = Topics(settings.topic_prefix).inbound
        self._pending: deque[Any] = deque()
        self._max = max(1, max_in_flight)
        self._timeout_s = timeout_s
        self.sent = 0

    @property
    def in_flight(self) -> int:
        """Envelopes sent whose acknowledgement has not been taken yet."""
        return len(self._pending)

    def send(self, envelope: Envelope) -> None:
        if len(self._pending) >= self._max:
            self._make_room()
        self._pending.append(self._producer.send(self._topic, key=envelope.key(), value=envelope.payload,
                                                 headers=envelope.headers()))
        self.sent += 1

    def flush(self) -> None:
        self._producer.flush(self._timeout_s)
        while self._pending:
            self._settle(self._pending.popleft())

    def _make_room(self) -> None:
        """Settle what the broker already answered; block on the oldest only while still full
        (a blocking wait per send costs more than the send itself)."""
        while self._pending:
            if self._pending[0].is_done or len(self._pending) >= self._max:
                self._settle(self._pending.popleft())
            else:
                return

    def _settle(self, future: Any) -> None:
        try:
            future.get(timeout=self._timeout_s)
        except Exception as exc:  # noqa: BLE001 - every client error (timeout, refusal) means "not held"
            self._pending.clear()
            raise PublishError(f"the broker did not acknowledge an envelope ({type(exc).__name__})") from None

    def close(self) -> None:
        self._producer.close(timeout=5)
