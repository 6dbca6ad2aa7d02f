"""The connector's exceptions: one base, each carrying its HL7 table 0357 error code (ERR-3),
so the ACK builder never has to guess which code a problem deserves."""
from __future__ import annotations


class Hl7v2Error(Exception):
    """Base: `code` is HL7 0357, `location` an ERR-2 location such as 'PID^1^3'."""
    code = 207  # application internal error

    def __init__(self, message: str, location: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.location = location
        if code is not None:
            self.code = code


class FramingError(Hl7v2Error):
    """Bytes that are not a well-formed MLLP block (transport level, nothing to parse)."""
    code = 100


class MessageTooLarge(FramingError):
    code = 104  # value too long


class MalformedMessage(Hl7v2Error):
    """A frame whose content is not a readable HL7 v2 message."""
    code = 100  # segment sequence error


class UnsupportedMessage(Hl7v2Error):
    """A message type or trigger event this connector refuses."""
    code = 200


class PublishFailed(Hl7v2Error):
    """The message could not be handed on (the bus refused it): the sender must resend."""
    code = 207
