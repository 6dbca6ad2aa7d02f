"""MLLP framing (pure bytes) and ACK building, the latter checked against hl7apy's knowledge of
each version's ACK structure."""
from __future__ import annotations

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from connectors.hl7v2.ack import build_ack, read_header, wants_ack
from connectors.hl7v2.framing import MllpFramer, frame

MESSAGE = b"MSH|^~\\&|PAS|RXX01|IPC|HUB|20260301||ADT^A01^ADT_A01|C1|P|2.4\rPID|1||M1^^^RXX01^MR\r"


def test_split_and_merged_reads_and_junk_between_frames() -> None:
    framer = MllpFramer()
    stream = b"junk" + frame(MESSAGE) + b"\r\n" + frame(b"second")
    got: list[bytes] = []
    junk = 0
    for i in range(len(stream)):  # one byte at a time: every split point, including mid end block
        result = framer.feed(stream[i:i + 1])
        got += result.messages
        junk += result.junk_bytes
    assert got == [MESSAGE, b"second"] and junk == 6
    assert MllpFramer().feed(stream).messages == [MESSAGE, b"second"]


def test_oversized_and_interrupted_frames_are_abandoned_then_the_next_is_read() -> None:
    framer = MllpFramer(max_size=100)
    result = framer.feed(b"\x0b" + b"x" * 150)
    assert result.messages == [] and [r for _, r in result.abandoned] == ["too-large"]
    result = framer.feed(b"y" * 500 + b"\x1c\r" + frame(b"ok"))
    assert result.messages == [b"ok"] and result.abandoned == []
    result = MllpFramer().feed(b"\x0bhalf" + frame(b"whole"))
    assert result.messages == [b"whole"] and result.abandoned[0][0] == b"half"


@pytest.mark.parametrize("version", ["2.3", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])
@pytest.mark.parametrize("code,error", [("AA", None), ("AE", 101), ("AR", 200)])
def test_acks_are_valid_for_the_senders_version(version: str, code: str, error: int | None) -> None:
    header = read_header(MESSAGE.decode().replace("|2.4", f"|{version}"))
    assert header is not None
    ack = build_ack(header, code, "PID-3 is empty | really", error, "PID^1^3").decode()
    level = VALIDATION_LEVEL.STRICT if version in ("2.5", "2.5.1", "2.6") else VALIDATION_LEVEL.TOLERANT
    parsed = parse_message(ack.rstrip("\r"), find_groups=False, validation_level=level)
    assert parsed.msa.msa_1.to_er7() == code and parsed.msa.msa_2.to_er7() == "C1"
    assert parsed.msh.msh_12.to_er7() == version and parsed.msh.msh_9.to_er7() == "ACK^A01^ACK"
    assert parsed.msh.msh_3.to_er7() == "IPC" and parsed.msh.msh_5.to_er7() == "PAS"
    assert "\\F\\" in parsed.msa.to_er7()  # free text is escaped, not a field break
    if error is None:
        assert "ERR" not in ack
    else:
        assert f"{error}" in next(s for s in ack.split("\r") if s.startswith("ERR"))


def test_sender_encoding_characters_and_enhanced_mode() -> None:
    text = MESSAGE.decode().replace("^~\\&", "#~\\*").replace("ADT^A01^ADT_A01", "ADT#A01#ADT_A01") + ""
    header = read_header(text.replace("|P|2.4", "|P|2.5|||ER|NE"))
    assert header is not None and header.enhanced
    assert wants_ack(header, True) is False and wants_ack(header, False) is True
    ack = build_ack(header, "AE", "bad", 101, "PID^1^3").decode()
    assert ack.startswith("MSH|#~\\*|") and "ACK#A01#ACK" in ack and "|CE|C1|" in ack
    assert "PID#1#3" in ack
    assert read_header("\x00\x01binary") is None and read_header("MSH|^^\\&|x") is None
