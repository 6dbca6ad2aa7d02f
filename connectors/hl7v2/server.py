"""The MLLP listener: frames in, ACKs out, each accepted message handed to an injected async
`publish(message_bytes, meta)`. AA (CA) is sent only after publish returns; if it raises, the
sender gets AR and will resend. `meta` holds exactly the Envelope fields other than the payload
(source, kind, person_key, content_type, correlation_id, received_at), so the Kafka wiring is
`await producer.send(Envelope(payload=message, **meta))`.

Resends (same sender, control id and content, MSH-7 aside), known through an injected dedupe
store, are acknowledged AA "duplicate: accepted again" and published again: the first copy may
not be in the record yet. The resend keeps the first copy's received-at, so the recorder sees it
as the same, older statement (hub.store.freshness): resending a whole stream in which later
messages changed the person writes no intermediate version. One connection's messages are
handled in order; connections run concurrently."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from prometheus_client import Counter

from connectors.hl7v2.ack import Header, build_ack, read_header, wants_ack
from connectors.hl7v2.errors import (
    Hl7v2Error,
    MalformedMessage,
    PublishFailed,
    UnsupportedMessage,
)
from connectors.hl7v2.framing import DEFAULT_MAX_SIZE, MllpFramer, frame
from connectors.hl7v2.strict import NotStandard, check_strictly
from hub.bus.envelope import received_now
from hub.fhir.identifiers import NHS_NUMBER
from mappings.hl7v2.adt import (
    MappingError,
    cx_identifier,
    patient_identifiers,
    source_system,
)
from mappings.hl7v2.er7 import Er7Error, Message, decode, parse

log = logging.getLogger(__name__)

# Every ADT trigger event of HL7 v2.3 to 2.8 whose message carries a PID (A01 to A62 except
# A20, the bed status update): each updates the person. The events named in issue 5 keep their
# own meaning in the mapping (A11/A13 cancels, A40 merge, A47 identifier change); any other
# trigger, and every other message type, is refused with AR (see README "What each input gets").
SUPPORTED_EVENTS = frozenset(f"A{n:02d}" for n in range(1, 63)) - {"A20"}
MERGE_EVENTS = frozenset({"A40", "A47"})
# The segments the listener reads (the mapper parses the whole message later, off the ACK path).
READ_SEGMENTS = frozenset({"MSH", "EVN", "PID", "MRG"})
CONTENT_TYPE = "x-application/hl7-v2+er7"
KIND = "hl7v2-adt"
# A40 is published twice, in order under one person key: first as KIND (both Patients are
# written), then as MERGE_KIND (the pipeline's person merge links them and moves the links).
MERGE_KIND = "hl7v2-merge"

Publish = Callable[[bytes, dict[str, object]], Awaitable[None]]
# For /metrics: what each message was answered (counted when MSH-15/16 ask for no ACK too).
ANSWERS = Counter("ipc_mllp_messages", "HL7 v2 messages the MLLP listener answered, by acknowledgement code",
                  ["ack"])


class Dedupe(Protocol):
    async def seen(self, key: str) -> datetime | None:
        """When the first copy of this message was received, if it was accepted before."""

    async def remember(self, key: str, received_at: datetime) -> None: ...


@dataclass
class MemoryDedupe:
    """The in-process default: the last `capacity` keys. Production injects a shared store."""
    capacity: int = 100_000
    _keys: OrderedDict[str, datetime] = field(default_factory=OrderedDict)

    async def seen(self, key: str) -> datetime | None:
        return self._keys.get(key)

    async def remember(self, key: str, received_at: datetime) -> None:
        self._keys[key] = received_at
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)


def dedupe_key(header: Header, text: str) -> str:
    """Sender + control id + a digest of the content without MSH-7: a resend (often re-stamped)
    matches; a different message that reuses a control id does not, so it is not lost."""
    fs = header.separators.field
    first, _, rest = text.partition("\r")
    parts = first.split(fs)
    if len(parts) > 6:
        parts[6] = ""
    digest = hashlib.sha256((fs.join(parts) + "\r" + rest).encode()).hexdigest()[:32]
    return f"{header.sending_application}|{header.sending_facility}|{header.control_id}|{digest}"


def check_message(msg: Message, events: frozenset[str]) -> None:
    """Refuse what the hub will not take (AR codes 200/201/203) and what lacks the content a
    mapping needs (AE codes 100/101), before anything is published."""
    major = ".".join(msg.version.split(".")[:2])
    if major not in ("2.3", "2.4", "2.5", "2.6", "2.7", "2.8"):
        raise UnsupportedMessage(f"HL7 version {msg.version or '(none)'} is not supported (2.3 to 2.8)",
                                 "MSH^1^12", 203)
    if msg.message_code != "ADT":
        raise UnsupportedMessage(f"message type {msg.message_code or '(none)'} is not accepted here",
                                 "MSH^1^9^1", 200)
    if msg.trigger_event not in events:
        raise UnsupportedMessage(f"ADT event {msg.trigger_event or '(none)'} is not accepted here",
                                 "MSH^1^9^2", 201)
    pid = msg.first("PID")
    if pid is None:
        raise MalformedMessage("the message has no PID segment", "PID", 100)
    if not any(rep and rep[0][0] for rep in pid.reps(3)):
        raise MalformedMessage("PID-3 (patient identifier list) is empty", "PID^1^3", 101)
    if msg.trigger_event in MERGE_EVENTS:
        mrg = msg.first("MRG")
        if mrg is None:
            raise MalformedMessage(f"ADT^{msg.trigger_event} needs an MRG segment", "MRG", 100)
        if not mrg.value(1):
            raise MalformedMessage("MRG-1 (prior patient identifier) is empty", "MRG^1^1", 101)


def envelope_meta(msg: Message) -> dict[str, str]:
    """The Envelope fields for one accepted message. The person key is the NHS number when a
    valid one is present (so one person's events stay in order), else the source's MRN. An
    identifier change (A47) without an NHS number is keyed by the identifier it changes (MRG-1):
    it must be recorded after the earlier messages that used that identifier, not beside them."""
    source = source_system(msg)
    identifiers, _ = patient_identifiers(msg.first("PID"))  # type: ignore[arg-type]
    nhs_numbers = [i["value"] for i in identifiers if i.get("system") == NHS_NUMBER]
    mrg = msg.first("MRG")
    if not nhs_numbers and msg.trigger_event == "A47" and mrg is not None:
        identifiers = [i for rep in mrg.reps(1) if (i := cx_identifier(rep)[0])] or identifiers
    if nhs_numbers:
        person = f"nhs:{nhs_numbers[0]}"
    else:
        person = f"{source}:{identifiers[0]['value']}" if identifiers else f"{source}:unknown"
    return {"source": source, "kind": KIND, "person_key": person, "content_type": CONTENT_TYPE,
            "correlation_id": msg.control_id}


@dataclass
class MllpServer:
    publish: Publish
    dedupe: Dedupe = field(default_factory=MemoryDedupe)
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_size: int = DEFAULT_MAX_SIZE
    idle_timeout: float = 300.0
    ssl_context: ssl.SSLContext | None = None
    events: frozenset[str] = SUPPORTED_EVENTS
    # hl7apy's strict check of every message (connectors.hl7v2.strict): on request only, it is slow.
    strict: bool = False
    _server: asyncio.base_events.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._connection, self.host, self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # the connection's read returns at once, and it ends itself
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def handle(self, data: bytes) -> bytes | None:
        """One framed message → the ACK to send (None when enhanced mode asks for none)."""
        text = decode(data)
        header = read_header(text)
        if header is None:
            ANSWERS.labels("AR").inc()
            return build_ack(None, "AR", "not an HL7 v2 message: no readable MSH segment", 100, "MSH")
        try:
            msg = parse(text, only=READ_SEGMENTS)
            check_message(msg, self.events)
            if self.strict:
                await asyncio.to_thread(check_strictly, text)
            key = dedupe_key(header, msg.text)
            # A resend is published again all the same: the first copy may not be in the record
            # yet (or ever, if it was dead-lettered), and the recorder's idempotence absorbs it
            # if it is. It keeps the first copy's received-at (see the module's docstring).
            first_received = await self.dedupe.seen(key)
            received_at = first_received or received_now()
            try:
                meta = {**envelope_meta(msg), "received_at": received_at}
                await self.publish(data, meta)
                if msg.trigger_event == "A40":
                    await self.publish(data, {**meta, "kind": MERGE_KIND})
            except Exception as exc:  # the bus refused: never AA
                raise PublishFailed(f"the message could not be stored ({type(exc).__name__}); resend it") from None
            if first_received is not None:
                return _answer(header, "AA", "duplicate: accepted again")
            await self.dedupe.remember(key, received_at)
            return _answer(header, "AA", "")
        except (Er7Error, MappingError) as exc:
            return _answer(header, "AE", str(exc), exc.code, exc.location)
        except UnsupportedMessage as exc:
            return _answer(header, "AR", str(exc), exc.code, exc.location)
        except (MalformedMessage, NotStandard) as exc:
            return _answer(header, "AE", str(exc), exc.code, exc.location)
        except Hl7v2Error as exc:
            return _answer(header, "AR", str(exc), exc.code, exc.location)
        except Exception:
            log.exception("unexpected failure handling an HL7 v2 message")
            return _answer(header, "AR", "application internal error", 207, "")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = MllpFramer(self.max_message_size)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._writers.add(writer)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                except TimeoutError:
                    break
                if not data:
                    break
                frames = framer.feed(data)
                for head, reason in frames.abandoned:
                    reply = self._refusal(head, reason)
                    if reply is not None:
                        writer.write(frame(reply))
                for message in frames.messages:
                    reply = await self.handle(message)
                    if reply is not None:
                        writer.write(frame(reply))
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError, OSError):
                pass

    def _refusal(self, head: bytes, reason: str) -> bytes | None:
        """An abandoned frame gets an AR when its MSH is readable; otherwise nothing can be said."""
        header = read_header(decode(head))
        if header is None:
            return None
        if reason == "too-large":
            return _answer(header, "AR", f"message larger than {self.max_message_size} bytes", 104, "MSH")
        return _answer(header, "AR", "broken MLLP framing: " + reason, 100, "MSH")


def _answer(header: Header, code: str, text: str, error: int | None = None, location: str = "") -> bytes | None:
    ANSWERS.labels(code).inc()
    if not wants_ack(header, code == "AA"):
        return None
    return build_ack(header, code, text, error, location)
