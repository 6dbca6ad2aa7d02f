"""python-hl7 (the hot path, through mappings.hl7v2.er7) and hl7apy (structure knowledge) must
agree on every field the mapping reads, for every corpus message: every non-empty leaf of the
MSH, EVN, PID, PD1, NK1, PV1 and MRG segments, addressed by field, repetition, component and
subcomponent. Escape sequences are decoded by one function on both sides, so the comparison is
about where each value sits. hl7apy trims surrounding white space, so values are compared trimmed."""
from __future__ import annotations

import re

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from mappings.hl7v2.er7 import _unescaper, decode, parse
from tests.shared_data import HL7V2_CORPUS

# Every field mappings.hl7v2 and the connector read. EVN-1 is read only when MSH-9.2 is empty,
# which no corpus message has (asserted below), and hl7apy cannot place it in v2.7+ (withdrawn).
READ_FIELDS = {
    "MSH": {3, 4, 9, 10, 12, 15, 16},
    "PID": {2, 3, 4, 5, 7, 8, 9, 11, 13, 14, 15, 16, 19, 20, 29, 30, 32, 40},
    "PD1": {3, 4},
    "NK1": {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 20, 30, 31, 32, 33, 37, 40, 41},
    "PV1": {2, 3, 19, 44, 45},
    "MRG": {1},
}
READ_SEGMENTS = tuple(READ_FIELDS)
MESSAGES = sorted((HL7V2_CORPUS / "input").glob("*.hl7"))


def ours(text: str) -> dict[tuple, str]:
    msg = parse(text)
    leaves = {}
    for seg in msg.segments:
        if seg.name not in READ_SEGMENTS:
            continue
        for f, field in enumerate(seg.fields[1:], start=1):
            if f not in READ_FIELDS[seg.name]:
                continue
            for r, rep in enumerate(field, start=1):
                for c, comp in enumerate(rep, start=1):
                    for s, value in enumerate(comp, start=1):
                        if value.strip():
                            leaves[(seg.name, seg.index, f, r, c, s)] = value.strip()
    return leaves


def theirs(text: str) -> dict[tuple, str]:
    """hl7apy leaves a field it has no definition for unnamed (PID-40 in a v2.5 message, EVN-1
    withdrawn in v2.8): read with the message's own version and with v2.8, and join both."""
    seps = parse(text).separators
    head, _, rest = text.partition("\r")
    fields = head.split(seps.field)
    fields[11] = "2.8"
    return _hl7apy_leaves(seps.field.join(fields) + "\r" + rest, seps) | _hl7apy_leaves(text, seps)


def _hl7apy_leaves(text: str, seps) -> dict[tuple, str]:
    msg = parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    unescape = _unescaper(seps)
    leaves: dict[tuple, str] = {}
    counts: dict[str, int] = {}
    for seg in msg.children:
        if seg.name not in READ_SEGMENTS:
            continue
        counts[seg.name] = counts.get(seg.name, 0) + 1
        reps: dict[int, int] = {}
        for field in seg.children:
            if field.name is None:
                continue
            f = int(field.name.split("_")[1])
            if f not in READ_FIELDS[seg.name]:
                continue
            reps[f] = reps.get(f, 0) + 1
            comps = field.children if field.children and re.search(r"_\d+$", field.children[0].name or "") else []
            if not comps:
                parts = field.to_er7().split(seps.component)
                items = [(i, p) for i, p in enumerate(parts, start=1)]
            else:
                items = [(int(c.name.rsplit("_", 1)[1]), c.to_er7()) for c in comps]
            for c, raw in items:
                for s, value in enumerate(raw.split(seps.subcomponent), start=1):
                    if unescape(value).strip():
                        leaves[(seg.name, counts[seg.name], f, reps[f], c, s)] = unescape(value).strip()
    return leaves


@pytest.mark.parametrize("path", MESSAGES, ids=[p.name for p in MESSAGES])
def test_both_parsers_agree_on_every_field_the_mapping_reads(path) -> None:
    text = decode(path.read_bytes()).strip("\r")
    mine, reference = ours(text), theirs(text)
    assert mine, "nothing read"
    assert parse(text).msh.value(9, 1, 2), "the EVN-1 fallback would be read"
    assert mine == reference


def test_escape_sequences_repetitions_and_subcomponents() -> None:
    text = ("MSH|^~\\&|A|B|C|D|20260101||ADT^A08|1|P|2.3\r"
            "PID|1||1^^^X^MR~2^^^Y^MR||O\\T\\BRIEN^J\\S\\K~Alias^A||19800101|M|||1 A\\F\\B Rd&Flat 2^^Town\\X41\\")
    pid = parse(text).first("PID")
    assert pid is not None
    assert [rep[0][0] for rep in pid.reps(3)] == ["1", "2"]
    assert pid.value(5, 1, 1) == "O&BRIEN" and pid.value(5, 1, 2) == "J^K" and pid.value(5, 2, 1) == "Alias"
    assert pid.value(11, 1, 1, 1) == "1 A|B Rd" and pid.value(11, 1, 1, 2) == "Flat 2" and pid.value(11, 1, 3) == "TownA"


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.name)
def test_the_listeners_partial_parse_reads_what_the_full_parse_reads(path) -> None:
    """The MLLP listener parses only MSH, EVN, PID and MRG; those segments, the message's text
    and what the listener derives from them are the same as in the full parse."""
    from connectors.hl7v2.server import READ_SEGMENTS as LISTENER_SEGMENTS
    from connectors.hl7v2.server import envelope_meta

    full, partial = parse(path.read_bytes()), parse(path.read_bytes(), only=LISTENER_SEGMENTS)
    assert partial.text == full.text
    assert [s.name for s in partial.segments] == [s.name for s in full.segments if s.name in LISTENER_SEGMENTS]
    for mine, theirs in zip(partial.segments, (s for s in full.segments if s.name in LISTENER_SEGMENTS)):
        assert mine.fields == theirs.fields
    assert (partial.version, partial.message_code, partial.trigger_event, partial.control_id) == \
        (full.version, full.message_code, full.trigger_event, full.control_id)
    assert envelope_meta(partial) == envelope_meta(full)


def test_the_partial_parse_still_refuses_a_broken_segment_it_does_not_read() -> None:
    from mappings.hl7v2.er7 import Er7Error

    broken = "MSH|^~\\&|PAS|RXX01|IPC|HUB|20260301||ADT^A01|T1|P|2.5\rEVN|A01\rPID|1||M1\rNK!1!x\r"
    with pytest.raises(Er7Error) as caught:
        parse(broken, only=frozenset({"MSH", "PID"}))
    assert caught.value.code == 100
    assert parse(broken.replace("NK!1!x", "NK1|1|x"), only=frozenset({"MSH", "PID"})).first("PID") is not None
