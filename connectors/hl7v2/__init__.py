"""HL7 v2 over MLLP: framing, acknowledgements and the asyncio listener."""
from connectors.hl7v2.ack import Header, build_ack, read_header
from connectors.hl7v2.errors import (
           FramingError,
           Hl7v2Error,
           MalformedMessage,
           MessageTooLarge,
           PublishFailed,
           UnsupportedMessage,
)
from connectors.hl7v2.framing import MllpFramer, frame
from connectors.hl7v2.server import (
           SUPPORTED_EVENTS,
           MemoryDedupe,
           MllpServer,
           envelope_meta,
)

__all__ = [
           "SUPPORTED_EVENTS",
           "FramingError",
           "Header",
           "Hl7v2Error",
           "MalformedMessage",
           "MemoryDedupe",
           "MessageTooLarge",
           "MllpFramer",
           "MllpServer",
           "PublishFailed",
           "UnsupportedMessage",
           "build_ack",
           "envelope_meta",
           "frame",
           "read_header",
]
