"""One handover document accepted: checked, wrapped in an Envelope, published, and only then
acknowledged with the envelope id. Shared by the HTTPS endpoint and the drop folder, so both
refuse the same documents with the same problems."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from connectors.mod import document
from hub.bus.envelope import Envelope
from hub.fhir.errors import FhirError

log = logging.getLogger(__name__)

Publish = Callable[[Envelope], Awaitable[None]]


class Intake:
    def __init__(self, publish: Publish, source: str = "mod-handover") -> None:
        self._publish = publish
        self.source = source

    async def accept(self, body: bytes) -> str:
        """The id of the envelope Kafka now holds for this document; FhirError when the document
        is refused (400/422) or could not be stored (503: send it again)."""
        checked = document.check(body)
        envelope = Envelope(payload=body, **document.envelope_meta(checked, self.source))
        try:
            await self._publish(envelope)
        except Exception as exc:  # noqa: BLE001 - the bus refused or timed out: never acknowledge
            log.warning("a MOD handover could not be published (%s)", type(exc).__name__)
            raise FhirError("transient", "the handover could not be stored; send it again", status=503) from None
        return envelope.id
