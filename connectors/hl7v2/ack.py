"""Acknowledgements (chapter 2): what to answer, and the ACK text itself.

ACKs are assembled as text rather than through hl7apy: an ACK is three short segments, and
hl7apy builds ~780 a second on one core here, below the 1,000/s the listener must sustain.
tests/unit/test_hl7v2_ack.py proves with hl7apy that every ACK we build is a valid ACK of the
sender's version. The ACK echoes MSH-10 in MSA-2, swaps sender and receiver, and uses the
sender's version and encoding characters."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime

from mappings.hl7v2.er7 import Separators

ERROR_TEXT = {0: "Message accepted", 100: "Segment sequence error", 101: "Required field missing",
              102: "Data type error", 103: "Table value not found", 104: "Value too long",
              200: "Unsupported message type", 201: "Unsupported event code",
              202: "Unsupported processing id", 203: "Unsupported version id",
              204: "Unknown key identifier", 205: "Duplicate key identifier",
              206: "Application record locked", 207: "Application internal error"}
_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Header:
    """What an ACK needs from the message it answers (all optional: junk has none of it)."""
    separators: Separators = Separators()
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    version: str = "2.4"
    message_code: str = ""
    trigger_event: str = ""
    accept_ack_type: str = ""  # MSH-15: AL, NE, ER, SU; empty means original mode
    application_ack_type: str = ""  # MSH-16

    @property
    def enhanced(self) -> bool:
        return bool(self.accept_ack_type or self.application_ack_type)


def read_header(text: str) -> Header | None:
    """The MSH of possibly broken text, field by field, without the full parser: even a message
    the parser refuses deserves an ACK naming its control id. None when there is no MSH."""
    text = text.lstrip("\ufeff\r\n \t\x00")
    if not text.startswith("MSH") or len(text) < 8:
        return None
    fs = text[3]
    enc = text[4:8]
    if fs.isalnum() or fs in "\r\n" or len(set(fs + enc)) != 5 or any(c.isalnum() or c in "\r\n" for c in enc):
        return None
    seps = Separators(fs, enc[0], enc[1], enc[2], enc[3])
    first = text.split("\r", 1)[0].split("\n", 1)[0]
    fields = first.split(fs)
    fields.insert(1, fs)  # so fields[n] is MSH-n

    def get(n: int) -> str:
        return fields[n] if n < len(fields) else ""

    message_type = get(9).split(seps.component)
    version = get(12).split(seps.component)[0].strip() or "2.4"
    return Header(seps, get(3), get(4), get(5), get(6), get(10), version, message_type[0],
                  message_type[1] if len(message_type) > 1 else "",
                  # blank MSH-15/16 (a space, as some senders pad) is absent: original mode
                  get(15).strip(), get(16).strip())


def wants_ack(header: Header, accepted: bool) -> bool:
    """Enhanced mode (MSH-15/16 present): whether this condition asks for an answer at all.
    AL always, NE never, ER/SU only for errors/success. Original mode always answers."""
    if not header.enhanced:
        return True
    mode = header.accept_ack_type.upper() or "AL"
    if mode == "NE":
        return False
    if mode == "ER":
        return not accepted
    if mode == "SU":
        return accepted
    return True


def build_ack(header: Header | None, code: str, text: str = "", error: int | None = None,
              location: str = "", now: datetime | None = None) -> bytes:
    """An ACK: MSH, MSA (code, echoed MSH-10, text) and for errors an ERR with the 0357 code.
    In enhanced mode the accept codes are CA/CE/CR, in original mode AA/AE/AR."""
    h = header or Header()
    s = h.separators
    if h.enhanced and code[0] == "A":
        code = "C" + code[1:]
    stamp = (now or datetime.now().astimezone()).strftime("%Y%m%d%H%M%S%z")
    trigger = h.trigger_event
    msh = s.field.join([
        "MSH", s.encoding_characters, h.receiving_application, h.receiving_facility,
        h.sending_application, h.sending_facility, stamp, "",
        s.component.join(["ACK", trigger, "ACK"]) if trigger else "ACK",
        f"ACK{next(_counter)}", "P", h.version])
    msa = s.field.join(["MSA", code, escape(h.control_id, s), escape(text[:80], s)])
    segments = [msh, msa]
    if error is not None:
        segments.append(err_segment(h, error, location, text))
    return ("\r".join(segments) + "\r").encode("utf-8")


def err_segment(h: Header, error: int, location: str, text: str) -> str:
    """ERR in the form the sender's version expects: ERR-1 (v2.3/2.4 location^^^code) and, from
    v2.5, ERR-2 location, ERR-3 code^text^HL70357, ERR-4 severity."""
    s = h.separators
    code_text = ERROR_TEXT.get(error, "Application internal error")
    cwe = s.component.join([str(error), code_text, "HL70357"])
    loc = location.replace("^", s.component)
    if h.version.startswith(("2.3", "2.4")):
        return s.field.join(["ERR", s.component.join([loc.split(s.component)[0] if loc else "", *(
            loc.split(s.component)[1:3] + [""] * (2 - len(loc.split(s.component)[1:3]))), cwe.replace(
            s.component, s.subcomponent)])])
    return s.field.join(["ERR", "", loc, cwe, "E", "", "", "", escape(text[:250], s)])


def escape(value: str, s: Separators) -> str:
    """Escape delimiters in free text so an error message cannot break the ACK's structure."""
    out = value.replace(s.escape, f"{s.escape}E{s.escape}")
    for char, name in ((s.field, "F"), (s.component, "S"), (s.subcomponent, "T"), (s.repetition, "R")):
        out = out.replace(char, f"{s.escape}{name}{s.escape}")
    return out.replace("\r", " ").replace("\n", " ")
