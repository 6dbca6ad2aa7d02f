"""The Envelope: what every connector hands to Kafka and every worker passes on.

On the wire the payload is the record's raw value (any bytes: HL7 v2, CSV, JSON) and every other
field is a header, so nothing is re-encoded and a broken payload still travels intact to the
dead-letter topic. `ipc-schema` names the envelope version; a reader refuses versions it does
not know rather than guessing."""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

SCHEMA_VERSION = "1"
_PREFIX = "ipc-"


_clock = threading.Lock()
_last = datetime.min.replace(tzinfo=UTC)


def received_now() -> datetime:
    """Now, but never the same instant twice in one process: the recorder takes a message with
    the same received-at as the newest one it recorded from a source for the resource as that
    message again (a resend), so two envelopes must never share one (header precision: µs)."""
    global _last
    with _clock:
        now = datetime.now(UTC)
        _last = now if now > _last else _last + timedelta(microseconds=1)
        return _last


class EnvelopeError(ValueError):
    """A record that is not an envelope this hub can read (missing or unknown headers)."""


@dataclass(slots=True, frozen=True)
class Envelope:
    source: str  # the source system, e.g. "gp-emis-x" or "mod-handover"
    kind: str  # what the payload is, e.g. "fhir-bundle" or "hl7v2-adt"
    payload: bytes
    person_key: str  # keys the record so one person's events stay in order
    content_type: str = "application/octet-stream"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    received_at: datetime = field(default_factory=received_now)
    correlation_id: str = ""
    # Where this envelope came from in an earlier step ("topic:partition:offset"), if any.
    origin: str = ""

    def with_payload(self, payload: bytes, kind: str, content_type: str, origin: str) -> Envelope:
        """The next step's envelope: same identity, person and times, new content."""
        return replace(self, payload=payload, kind=kind, content_type=content_type, origin=origin)

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "received-at": self.received_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "person-key": self.person_key,
            "content-type": self.content_type,
            "correlation-id": self.correlation_id or self.id,
            "origin": self.origin,
        }
        return [(_PREFIX + name, value.encode()) for name, value in fields.items()]

    def key(self) -> bytes:
        return self.person_key.encode()


def from_record(value: bytes | None, headers: list[tuple[str, bytes]] | None) -> Envelope:
    """Read an envelope from a record's value and headers; EnvelopeError if it is not one."""
    found = {name[len(_PREFIX):]: raw.decode("utf-8", "replace")
             for name, raw in (headers or []) if name.startswith(_PREFIX)}
    version = found.get("schema")
    if version != SCHEMA_VERSION:
        raise EnvelopeError(f"envelope schema version {version!r} is not {SCHEMA_VERSION!r}")
    missing = [name for name in ("id", "source", "kind", "received-at", "person-key") if not found.get(name)]
    if missing:
        raise EnvelopeError("envelope lacks " + ", ".join(missing))
    try:
        received = datetime.fromisoformat(found["received-at"])
    except ValueError:
        raise EnvelopeError("envelope received-at is not an ISO 8601 instant") from None
    return Envelope(
        source=found["source"], kind=found["kind"], payload=value or b"", person_key=found["person-key"],
        content_type=found.get("content-type") or "application/octet-stream", id=found["id"],
        received_at=received, correlation_id=found.get("correlation-id", ""), origin=found.get("origin", ""),
    )
