"""Pure parsing of HL7 v2 ER7 text ("pipes and hats") into a small, uniform tree.

python-hl7 does the splitting on the hot path (it is about thirty times faster than hl7apy);
this module turns its containers into one predictable shape, so nothing downstream has to ask
whether a field happened to hold components or repetitions:

    Segment.fields[n] -> list of repetitions -> list of components -> list of subcomponents (str)

Field numbers follow the standard (MSH-9 is `msh.value(9)`, MSH-1 the field separator itself).
Escape sequences are decoded per subcomponent, after splitting, as the standard requires. No I/O,
no knowledge of FHIR or of any message type."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import hl7

Repetition = list[list[str]]  # components, each a list of subcomponents
Field = list[Repetition]

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")


class Er7Error(ValueError):
    """Text that cannot be read as an HL7 v2 message. `code` is from HL7 table 0357, `location`
    is an ERR-2 style location (segment id, sequence, field) when one can be named."""

    def __init__(self, message: str, code: int = 100, location: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.location = location


@dataclass(frozen=True, slots=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as the sender wrote it (ACKs echo the sender's characters)."""
        return self.component + self.repetition + self.escape + self.subcomponent


@dataclass(slots=True)
class Segment:
    name: str
    fields: list[Field]  # index 0 is the segment id; MSH-1 and MSH-2 are kept verbatim
    index: int = 1  # 1-based occurrence of this segment id in the message

    def reps(self, field: int) -> list[Repetition]:
        """Every repetition of a field (empty list when absent or empty)."""
        if field >= len(self.fields):
            return []
        return [rep for rep in self.fields[field] if any(any(sub for sub in comp) for comp in rep)]

    def value(self, field: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        """One leaf value, '' when absent. All positions are 1-based, as in the standard."""
        if field >= len(self.fields):
            return ""
        return leaf(self.fields[field], rep, comp, sub)


def leaf(field: Field, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    try:
        return field[rep - 1][comp - 1][sub - 1]
    except IndexError:
        return ""


def component(rep: Repetition, comp: int, sub: int = 1) -> str:
    """A component of one repetition ('' when absent)."""
    try:
        return rep[comp - 1][sub - 1]
    except IndexError:
        return ""


@dataclass(slots=True)
class Message:
    segments: list[Segment]
    separators: Separators
    text: str  # the normalised ER7 text (segments joined by CR)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        for s in self.segments:
            if s.name == name:
                return s
        return None

    @property
    def version(self) -> str:
        return self.msh.value(12)

    @property
    def control_id(self) -> str:
        return self.msh.value(10)

    @property
    def message_code(self) -> str:
        return self.msh.value(9, 1, 1)

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, falling back to EVN-1 (some v2.3 senders only fill EVN)."""
        event = self.msh.value(9, 1, 2)
        if not event and (evn := self.first("EVN")) is not None:
            event = evn.value(1)
        return event


def decode(data: bytes | str) -> str:
    """Bytes to text: UTF-8 (BOM stripped), else Windows-1252, which many UK PAS systems send.
    Line endings are normalised to the CR that separates segments."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
    else:
        text = data
    text = text.lstrip("\ufeff")
    return text.replace("\r\n", "\r").replace("\n", "\r")


def read_separators(text: str) -> Separators:
    """The delimiters the sender declared in MSH-1 and MSH-2."""
    if not text.startswith("MSH") or len(text) < 8:
        raise Er7Error("the message does not start with an MSH segment", 100, "MSH")
    field_sep = text[3]
    encoding = text[4:8]
    delimiters = field_sep + encoding
    if field_sep.isalnum() or field_sep in "\r\n" or len(set(delimiters)) != 5 or any(
            ch.isalnum() or ch in "\r\n" for ch in encoding) or text[8:9] not in (field_sep, "", "\r"):
        raise Er7Error("MSH-1 and MSH-2 do not declare five distinct delimiters", 102, "MSH^1^1")
    return Separators(field_sep, encoding[0], encoding[1], encoding[2], encoding[3])


_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")


def parse(data: bytes | str, only: frozenset[str] | None = None) -> Message:
    """Parse one ER7 message. Raises Er7Error (with an HL7 0357 code) when the text is not one.

    `only`: parse just these segments (every segment id is still checked), for a caller that
    reads a few segments of a long message (the MLLP listener reads MSH, EVN, PID and MRG:
    the corpus's 40-segment messages parse about five times faster). `Message.text` is
    always the whole message."""
    text = decode(data).strip("\r\x00 \t")
    separators = read_separators(text)
    wanted = text
    if only is not None:
        lines = [line for line in text.split("\r") if line]
        for number, line in enumerate(lines, start=1):
            if not _SEGMENT_ID.fullmatch(line[:3]) or line[3:4] not in (separators.field, ""):
                name = line.split(separators.field, 1)[0]
                raise Er7Error(f"segment {number} has no valid three-character segment id", 100,
                               f"{name[:3] or '?'}")
        kept = [line for line in lines if line[:3] in only]
        # python-hl7 strips the text's end: a placeholder keeps a kept segment's trailing
        # blanks unless it is also the whole message's last segment (as in the full parse).
        trailer = bool(lines) and lines[-1][:3] not in only
        wanted = "\r".join(kept + (["ZZZ"] if trailer else []))
    try:
        parsed = hl7.parse(wanted)
        if only is not None and trailer:
            parsed = list(parsed)[:-1]
    except Exception as exc:  # python-hl7 raises assorted errors on malformed input
        raise Er7Error(f"the message cannot be parsed: {exc}", 100) from None
    unescape = _unescaper(separators)
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for number, raw in enumerate(parsed, start=1):
        name = str(raw[0])
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
            raise Er7Error(f"segment {number} has no valid three-character segment id", 100, f"{name[:3] or '?'}")
        counts[name] = counts.get(name, 0) + 1
        fields = [_field(f, unescape) for f in raw]
        if name == "MSH":
            fields[1] = [[[separators.field]]]
            fields[2] = [[[separators.encoding_characters]]]
        segments.append(Segment(name, fields, counts[name]))
    if not segments or segments[0].name != "MSH":
        raise Er7Error("the message does not start with an MSH segment", 100, "MSH")
    return Message(segments, separators, text)


def _field(raw: object, unescape) -> Field:
    """python-hl7 nests lists only as deep as the text needs; flatten to the uniform shape."""
    if isinstance(raw, str):
        return [[[unescape(raw)]]]
    items = list(raw)  # type: ignore[call-overload]
    if not items:
        return [[[""]]]
    if all(isinstance(item, str) for item in items):
        return [[[unescape(item)] for item in items]] if len(items) > 1 else [[[unescape(items[0])]]]
    if isinstance(raw, hl7.Field) and isinstance(items[0], hl7.Repetition):
        return [_repetition(rep, unescape) for rep in items]
    return [_repetition(raw, unescape)]


def _repetition(raw: object, unescape) -> Repetition:
    if isinstance(raw, str):
        return [[unescape(raw)]]
    comps: Repetition = []
    for comp in raw:  # type: ignore[union-attr]
        if isinstance(comp, str):
            comps.append([unescape(comp)])
        else:
            comps.append([unescape(sub) for sub in comp])
    return comps


@lru_cache(maxsize=32)
def _unescaper(separators: Separators):
    """A decoder for the escape sequences of chapter 2.7 (F S T R E Xhh; formatting commands
    such as \\.br\\ become a line break or are dropped)."""
    esc = separators.escape
    pattern = re.compile(re.escape(esc) + r"([^" + re.escape(esc) + r"]*)" + re.escape(esc))
    simple = {"F": separators.field, "S": separators.component, "T": separators.subcomponent,
              "R": separators.repetition, "E": esc, ".br": "\n", "H": "", "N": ""}

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        if body in simple:
            return simple[body]
        if body[:1] == "X" and re.fullmatch(r"X(?:[0-9A-Fa-f]{2})+", body):
            raw = bytes.fromhex(body[1:])
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
        return match.group(0)  # unknown sequence: keep the text as sent

    def unescape(value: str) -> str:
        return pattern.sub(replace, value) if esc in value else value

    return unescape
