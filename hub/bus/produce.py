"""Sending envelopes from asyncio code (the connectors) and knowing when Kafka has them.

`EnvelopeProducer.send` returns only once the broker has acknowledged the record with acks=all
(idempotent producer, see hub/bus/kafka.py); a refusal or a timeout raises, so a connector never
tells its sender "accepted" for a record Kafka does not hold. The Kafka client's own I/O thread
batches records from many concurrent senders; its callbacks are handed back to the event loop."""
from __future__ import annotations

import asyncio

from hub.bus.envelope import Envelope
from hub.bus.kafka import BusSettings, make_producer
from hub.bus.topics import Topics


class EnvelopeProducer:
    def __init__(self, settings: BusSettings, client_id: str, timeout_s: float = 30.0) -> None:
        self._producer = make_producer(settings, client_id)
        self._topic = Topics(settings.topic_prefix).inbound
        self._timeout_s = timeout_s

    async def send(self, envelope: Envelope) -> None:
        """Publish to the inbound topic; returns after the broker acknowledged it (acks=all)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(result: object, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(None)

        future = self._producer.send(self._topic, key=envelope.key(), value=envelope.payload,
                                     headers=envelope.headers())
        future.add_callback(lambda meta: loop.call_soon_threadsafe(settle, meta, None))
        future.add_errback(lambda exc: loop.call_soon_threadsafe(settle, None, exc))
        await asyncio.wait_for(done, self._timeout_s)

    def close(self) -> None:
        self._producer.close(timeout=5)
