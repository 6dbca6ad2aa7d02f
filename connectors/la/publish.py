"""The Kafka side of an import: envelopes to the inbound topic with a bounded number waiting
for the broker's acknowledgement (acks=all, idempotent producer). A million-row file must not
become a million pending futures: past `max_in_flight` the client's deliveries are served
until there is room. Where the bus has a journal (hub/bus/journal.py: the embedded default),
each chunk of envelopes is also committed there before `flush` returns, so a file moved to
`processed/` is never lost with a broker that keeps topics in memory."""
from __future__ import annotations

from connectors.la.extract import PublishError
from hub.bus.envelope import Envelope
from hub.bus.journal import Journal
from hub.bus.kafka import BusSettings, make_producer, produce
from hub.bus.topics import Topics


class KafkaSink:
    def __init__(self, settings: BusSettings, *, max_in_flight: int = 10_000, timeout_s: float = 30.0,
                 client_id: str = "ipc-hub-la", journal: Journal | None = None,
                 journal_chunk: int = 2000) -> None:
        self._producer = make_producer(settings, client_id)
        self._topic = Topics(settings.topic_prefix).inbound
        self._max = max(1, max_in_flight)
        self._timeout_s = timeout_s
        self._journal = journal
        self._chunk: list[Envelope] = []
        self._journal_chunk = journal_chunk
        self._waiting = 0
        self._failed: str | None = None
        self.sent = 0

    @property
    def in_flight(self) -> int:
        """Envelopes sent whose acknowledgement has not come yet."""
        return self._waiting

    def _delivered(self, error, _message) -> None:
        self._waiting -= 1
        if error is not None and self._failed is None:
            self._failed = error.name()

    def send(self, envelope: Envelope) -> None:
        while self._waiting >= self._max:
            self._producer.poll(0.05)
        self._check()
        if self._journal is not None:
            self._chunk.append(envelope)
            if len(self._chunk) >= self._journal_chunk:
                self._write_journal()
        try:
            produce(self._producer, self._topic, envelope.key(), envelope.payload, envelope.headers(),
                    self._delivered)
        except Exception as exc:  # noqa: BLE001 - every client error means "not held"
            raise PublishError(f"the broker did not take an envelope ({type(exc).__name__})") from None
        self._waiting += 1
        self.sent += 1
        self._producer.poll(0)

    def flush(self) -> None:
        self._write_journal()
        remaining = self._producer.flush(self._timeout_s)
        if remaining:
            raise PublishError(f"the broker did not acknowledge {remaining} envelopes in time")
        self._check()

    def _write_journal(self) -> None:
        if self._journal is None or not self._chunk:
            return
        try:
            self._journal.accept_many(self._chunk)
        except Exception as exc:  # noqa: BLE001 - the database away: the file is not processed
            raise PublishError(f"the journal did not take the envelopes ({type(exc).__name__})") from None
        self._chunk = []

    def _check(self) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise PublishError(f"the broker did not acknowledge an envelope ({failed})")

    def close(self) -> None:
        self._producer.flush(5)
        if self._journal is not None:
            self._journal.close()
