"""Sending envelopes from asyncio code (the connectors) and knowing when they are safe.

`EnvelopeProducer.send` returns only once the envelope is held durably: the broker acknowledged
it with acks=all (idempotent producer, see hub/bus/kafka.py) and, where the bus has a journal
(the embedded default, hub/bus/journal.py), the journal's PostgreSQL transaction committed. A
refusal or a timeout raises, so a connector never tells its sender "accepted" for something
that could still be lost. librdkafka batches records from many concurrent senders on its own
threads; a small poll thread hands its delivery reports back to the event loop, so no call
here blocks the loop."""
from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError

from hub.bus.envelope import Envelope
from hub.bus.journal import AsyncJournal
from hub.bus.kafka import BusError, BusSettings, delivery_error, make_producer, produce
from hub.bus.topics import Topics


class EnvelopeProducer:
    def __init__(self, settings: BusSettings, client_id: str, timeout_s: float = 30.0,
                 journal: AsyncJournal | None = None) -> None:
        self._producer = make_producer(settings, client_id)
        self._topic = Topics(settings.topic_prefix).inbound
        self._timeout_s = timeout_s
        self._journal = journal
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name=f"{client_id}-deliveries", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    async def send(self, envelope: Envelope) -> None:
        """Publish to the inbound topic (and the journal); returns once both hold it."""
        if self._journal is None:
            await self._to_broker(envelope)
            return
        held = await asyncio.gather(self._journal.accept(envelope), self._to_broker(envelope),
                                    return_exceptions=True)
        for outcome in held:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _to_broker(self, envelope: Envelope) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(error: KafkaError | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(delivery_error(error))
            else:
                done.set_result(None)

        produce(self._producer, self._topic, envelope.key(), envelope.payload, envelope.headers(),
                lambda error, _msg: loop.call_soon_threadsafe(settle, error))
        try:
            await asyncio.wait_for(done, self._timeout_s)
        except TimeoutError:
            raise BusError("the broker did not acknowledge the envelope in time") from None

    def close(self) -> None:
        self._producer.flush(5)
        self._closed.set()
        self._poller.join(2)
