"""The MLLP listener over real sockets on 127.0.0.1 with an in-memory publish: UK-style ADT
messages get the right ACK and the right mapping, broken input gets the right refusal, and the
listener keeps serving afterwards."""
from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from connectors.hl7v2 import MllpServer, frame
from connectors.hl7v2.ack import read_header
from connectors.hl7v2.framing import MllpFramer
from connectors.hl7v2.server import dedupe_key
from hub.fhir.resources import check_structure
from mappings.hl7v2 import map_message
from mappings.hl7v2.er7 import decode
from tests.factories import nhs_check_digit
from tests.shared_data import HL7V2_CORPUS

NHS = "9990000018"  # test range, valid check digit
BAD_NHS = "9990000019"
assert nhs_check_digit(NHS[:9]) == int(NHS[9]) and nhs_check_digit(BAD_NHS[:9]) != int(BAD_NHS[9])


def adt(event: str, control: str, pid3: str, *, extra: str = "", msh15: str = "", version: str = "2.4",
        nk1: str = "") -> bytes:
    lines = [f"MSH|^~\\&|PAS|RXX01|IPC|HUB|20260301120000||ADT^{event}^ADT_{event}|{control}|P|{version}|||{msh15}",
             f"EVN|{event}|20260301120000",
             f"PID|1||{pid3}||JONES^Mary^Ann^^Mrs||19700214|F|||1 Station Road^^Leeds^^LS1 1AA^GBR^H||"
             "01131234567^PRN^PH~07700900123^PRS^CP||eng|M||||||||||||||||01"]
    if nk1:
        lines.append(nk1)
    lines.append("PV1|1|I|WARD1^BED2^^RXX01||||||||||||||||V123^^^RXX01^VN|||||||||||||||||||||||||20260301110000")
    if extra:
        lines.append(extra)
    return ("\r".join(lines) + "\r").encode()


class Sent:
    def __init__(self) -> None:
        self.items: list[tuple[bytes, dict[str, str]]] = []
        self.fail = False

    async def __call__(self, message: bytes, meta: dict[str, str]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.items.append((message, meta))


async def exchange(port: int, payload: bytes, replies: int = 1, timeout: float = 30.0) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    framer, got = MllpFramer(), []
    try:
        while len(got) < replies:
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout)
            except TimeoutError:
                break
            if not data:
                break
            got += [m.decode() for m in framer.feed(data).messages]
    finally:
        writer.close()
    return got


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")


def err(ack: str) -> str:
    return next((s for s in ack.split("\r") if s.startswith("ERR")), "")


@pytest.fixture()
def running():
    loop = asyncio.new_event_loop()
    sent = Sent()
    server = MllpServer(sent, port=0, max_message_size=20_000, idle_timeout=2.0)
    port = loop.run_until_complete(server.start())
    yield loop, server, port, sent
    loop.run_until_complete(server.stop())
    loop.close()


def run(loop, coro):
    return loop.run_until_complete(coro)


def test_nhs_number_variants_are_accepted_and_mapped(running) -> None:
    loop, _, port, sent = running
    variants = [f"{NHS}^^^NHS^NH", f"{NHS}^^^^NHSNBR", f"{NHS[:3]} {NHS[3:6]} {NHS[6:]}^^^^NHSNMBR",
                f"M123^^^RXX01^MR~{NHS[:3]}-{NHS[3:6]}-{NHS[6:]}^^^NHS^NH"]
    for number, pid3 in enumerate(variants):
        ack = run(loop, exchange(port, frame(adt("A01", f"V{number}", pid3))))[0]
        assert msa(ack)[1:3] == ["AA", f"V{number}"]
        bundle = map_message(sent.items[-1][0])
        patient = bundle["entry"][0]["resource"]
        nhs_ids = [i for i in patient["identifier"] if i["system"] == "https://fhir.nhs.uk/Id/nhs-number"]
        assert [i["value"] for i in nhs_ids] == [NHS]
        assert nhs_ids[0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "01"
        assert sent.items[-1][1]["person_key"] == f"nhs:{NHS}"
        for entry in bundle["entry"]:
            check_structure(entry["resource"])
    assert len(sent.items) == 4
    meta = dict(sent.items[0][1])
    assert isinstance(meta.pop("received_at"), datetime)
    assert meta == {"source": "PAS|RXX01", "kind": "hl7v2-adt", "person_key": f"nhs:{NHS}",
                    "content_type": "x-application/hl7-v2+er7", "correlation_id": "V0"}


def test_bad_check_digit_is_kept_local_flagged_and_never_the_person_key(running) -> None:
    loop, _, port, sent = running
    ack = run(loop, exchange(port, frame(adt("A28", "BAD1", f"M900^^^RXX01^MR~{BAD_NHS}^^^NHS^NH"))))[0]
    assert msa(ack)[1] == "AA"
    patient = map_message(sent.items[-1][0])["entry"][0]["resource"]
    assert not any(i.get("system") == "https://fhir.nhs.uk/Id/nhs-number" for i in patient["identifier"])
    assert any(i["value"] == BAD_NHS and i["system"].endswith("unverified-nhs-number") for i in patient["identifier"])
    assert any(t["code"] == "nhs-number-failed-modulus-11" for t in patient["meta"]["tag"])
    assert sent.items[-1][1]["person_key"] == "PAS|RXX01:M900"


def test_a40_merge_and_a47_identifier_change(running) -> None:
    loop, _, port, sent = running
    merge = adt("A40", "M1", f"{NHS}^^^NHS^NH~M1^^^RXX01^MR", extra="MRG|M2^^^RXX01^MR")
    assert msa(run(loop, exchange(port, frame(merge)))[0])[1] == "AA"
    bundle = map_message(sent.items[-1][0])
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    survivor, old = patients
    assert old["active"] is False and old["link"][0] == {"other": {"reference": f"Patient/{survivor['id']}"},
                                                         "type": "replaced-by"}
    assert survivor["link"][0]["type"] == "replaces"
    assert not any(e["resource"]["resourceType"] == "Encounter" for e in bundle["entry"])
    no_mrg = adt("A40", "M2", "M1^^^RXX01^MR")
    ack = run(loop, exchange(port, frame(no_mrg)))[0]
    assert msa(ack)[1] == "AE" and "100" in err(ack) and "MRG" in err(ack)
    change = adt("A47", "C1", "M5^^^RXX01^MR", extra="MRG|M4^^^RXX01^MR")
    assert msa(run(loop, exchange(port, frame(change)))[0])[1] == "AA"
    before = map_message(adt("A28", "C0", "M4^^^RXX01^MR"))["entry"][0]["resource"]
    after = map_message(sent.items[-1][0])["entry"][0]["resource"]
    assert after["id"] == before["id"]
    assert {(i["value"], i.get("use")) for i in after["identifier"]} == {("M5", None), ("M4", "old")}


def test_a31_updates_a_carer_and_replay_changes_nothing(running) -> None:
    loop, _, port, sent = running
    carer = "NK1|1|JONES^Peter|CGV^Carer|2 Mill Lane^^Leeds^^LS2 2BB|07700900456^PRN^CP||N^Next of kin"
    message = adt("A31", "U1", f"{NHS}^^^NHS^NH", nk1=carer)
    assert msa(run(loop, exchange(port, frame(message)))[0])[1] == "AA"
    first = map_message(sent.items[-1][0])
    person = next(e["resource"] for e in first["entry"] if e["resource"]["resourceType"] == "RelatedPerson")
    codes = {(c["system"], c["code"]) for r in person["relationship"] for c in r["coding"]}
    assert ("https://fhir.hl7.org.uk/CodeSystem/UKCore-AdditionalPersonRelationshipRole", "Carer") in codes
    assert ("http://terminology.hl7.org/CodeSystem/v2-0131", "N") in codes
    moved = adt("A31", "U2", f"{NHS}^^^NHS^NH", nk1=carer.replace("2 Mill Lane", "9 New Street"))
    assert msa(run(loop, exchange(port, frame(moved)))[0])[1] == "AA"
    second = map_message(sent.items[-1][0])
    updated = next(e["resource"] for e in second["entry"] if e["resource"]["resourceType"] == "RelatedPerson")
    assert updated["id"] == person["id"] and updated["address"][0]["line"] == ["9 New Street"]
    assert map_message(sent.items[-1][0]) == second  # a replay maps to the same resources
    # The same message resent is acknowledged as a resend and published again (the first copy
    # may not be in the record yet; the recorder's idempotence absorbs it if it is), as old as
    # the first copy: a resend is not a newer statement than the messages that followed it.
    again = run(loop, exchange(port, frame(moved)))[0]
    assert msa(again)[1:3] == ["AA", "U2"] and "duplicate" in msa(again)[3]
    assert len(sent.items) == 3 and sent.items[-1] == sent.items[-2]


def test_refusals_and_broken_input_then_the_listener_keeps_serving(running) -> None:
    loop, _, port, sent = running
    oru = adt("A01", "R1", "M1^^^RXX01^MR").replace(b"ADT^A01^ADT_A01", b"ORU^R01^ORU_R01")
    ack = run(loop, exchange(port, frame(oru)))[0]
    assert msa(ack)[1:3] == ["AR", "R1"] and "200" in err(ack)
    unknown = adt("A99", "R2", "M1^^^RXX01^MR")
    ack = run(loop, exchange(port, frame(unknown)))[0]
    assert msa(ack)[1] == "AR" and "201" in err(ack)
    # Every ADT event that carries a PID is taken (it updates the person), not only issue 5's list.
    a06 = adt("A06", "R3", "M1^^^RXX01^MR")
    assert msa(run(loop, exchange(port, frame(a06)))[0])[1:3] == ["AA", "R3"]
    bed_status = adt("A20", "R4", "M1^^^RXX01^MR")
    assert msa(run(loop, exchange(port, frame(bed_status)))[0])[1] == "AR"
    truncated = b"MSH|^~\\&|PAS|RXX01|IPC|HUB|20260301||ADT^A01|T1|P|2.5\rEVN|A01\rPI"
    ack = run(loop, exchange(port, frame(truncated)))[0]
    assert msa(ack)[1:3] == ["AE", "T1"] and "100" in err(ack)
    no_pid3 = adt("A01", "T2", "")
    ack = run(loop, exchange(port, frame(no_pid3)))[0]
    assert msa(ack)[1] == "AE" and "101" in err(ack) and "PID^1^3" in err(ack)
    wrong_separators = adt("A01", "W1", "M1^^^RXX01^MR").replace(b"PID|1||", b"PID!1!!")
    ack = run(loop, exchange(port, frame(wrong_separators)))[0]
    assert msa(ack)[1:3] == ["AE", "W1"]
    bad_msh = b"MSH|^~|&|PAS|RXX01|IPC|HUB|20260301||ADT^A01|X1|P|2.4"
    ack = run(loop, exchange(port, frame(bad_msh)))[0]
    assert msa(ack)[1] == "AR" and msa(ack)[2] == ""
    junk = bytes(range(256)) * 4
    ack = run(loop, exchange(port, frame(junk)))[0]
    assert msa(ack)[1] == "AR" and "100" in err(ack)
    # Unframed junk gets no answer at all (there is no frame to answer).
    assert run(loop, exchange(port, junk.replace(b"\x0b", b""), timeout=0.3)) == []
    # Broken framing: a frame cut short by a new start block, then a good one on the same socket.
    cut = frame(adt("A01", "B1", "M1^^^RXX01^MR"))[:-2]
    acks = run(loop, exchange(port, b"noise" + cut + frame(adt("A01", "B2", "M1^^^RXX01^MR")), replies=2))
    assert [msa(a)[1:3] for a in acks] == [["AR", "B1"], ["AA", "B2"]]
    too_big = adt("A01", "L1", "M1^^^RXX01^MR", extra="NTE|1||" + "x" * 30_000)
    ack = run(loop, exchange(port, frame(too_big)))[0]
    assert msa(ack)[1:3] == ["AR", "L1"] and "104" in err(ack)
    sent.fail = True
    ack = run(loop, exchange(port, frame(adt("A01", "P1", "M1^^^RXX01^MR"))))[0]
    assert msa(ack)[1] == "AR" and "207" in err(ack)
    sent.fail = False
    ack = run(loop, exchange(port, frame(adt("A01", "P1", "M1^^^RXX01^MR"))))[0]
    assert msa(ack)[1:3] == ["AA", "P1"]  # the resend after a failure is not taken for a duplicate
    assert [m["correlation_id"] for _, m in sent.items] == ["R3", "B2", "P1"]


def test_enhanced_mode_and_split_reads(running) -> None:
    loop, _, port, sent = running
    never = adt("A08", "E1", "M1^^^RXX01^MR", msh15="NE")
    message = adt("A08", "E2", "M1^^^RXX01^MR", msh15="AL", version="2.5")

    async def slow_sender() -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for chunk in (frame(never) + frame(message)[:7], frame(message)[7:-1], frame(message)[-1:]):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)
        data = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        return [m.decode() for m in MllpFramer().feed(data).messages]

    acks = run(loop, slow_sender())
    assert len(acks) == 1 and msa(acks[0])[1:3] == ["CA", "E2"]
    msh = acks[0].split("\r")[0].split("|")
    assert msh[2:6] == ["IPC", "HUB", "PAS", "RXX01"] and msh[8] == "ACK^A08^ACK" and msh[11] == "2.5"
    assert len(sent.items) == 2


def test_every_supported_corpus_message_is_acknowledged_concurrently(running) -> None:
    loop, server, port, sent = running
    server.max_message_size = 1_000_000
    corpus = sorted((HL7V2_CORPUS / "input").glob("*.hl7"))
    payloads = [p.read_bytes() for p in corpus]

    async def send(data: bytes) -> str:
        replies = await exchange(port, frame(data), timeout=1.0)
        return replies[0] if replies else ""

    async def send_all() -> list[str]:
        return list(await asyncio.gather(*(send(d) for d in payloads)))

    acks = run(loop, send_all())
    # Enhanced mode with MSH-15 = NE (the two A40s) asks for no ACK at all.
    accepted = ["A" + msa(a)[1][1:] if a else "silent" for a in acks]  # CA and CR count as AA and AR
    events = [p.name.split("-")[1] if p.name.startswith("ADT-") else "A01" if "01" in p.name[:6] else "A04"
              for p in corpus]
    for name, event, code in zip((p.name for p in corpus), events, accepted):
        wanted = ("silent" if event == "A40" else "AA") if event in server.events else "AR"
        assert code == wanted, f"{name}: {code}"
    assert accepted.count("silent") == 2, accepted
    # Messages identical but for MSH-7 are resends: acknowledged and published again (the
    # recorder absorbs them), so every accepted message is published once per sending.
    distinct = {dedupe_key(read_header(decode(d)), decode(d).strip("\r")) for d, c in zip(payloads, accepted)
                if c != "AR"}
    adt_items = [m for _, m in sent.items if m["kind"] == "hl7v2-adt"]
    assert len(distinct) == 57 and len(adt_items) == sum(1 for c in accepted if c != "AR")
    # Each A40 is published a second time, as the merge, under the same person key.
    merges = [m for _, m in sent.items if m["kind"] == "hl7v2-merge"]
    assert len(merges) == 2 and {m["person_key"] for m in merges} <= {m["person_key"] for m in adt_items}


def test_strict_validation_on_request_refuses_what_breaks_the_standard(running) -> None:
    """With strict checking on, hl7apy's knowledge of the standard decides: a value that breaks
    its data type and a missing required segment get AE naming the problem, nothing is
    published; a standard message is still AA. Without it, the fast path takes the same date."""
    loop, server, port, sent = running
    good = adt("A01", "STRICT1", "M900^^^RXX01^MR", version="2.5")
    bad_date = good.replace(b"|19700214|", b"|1970-02-14x|").replace(b"STRICT1", b"STRICT2")
    lines = good.split(b"\r")
    no_pv1 = b"\r".join(line for line in lines if not line.startswith(b"PV1")).replace(b"STRICT1", b"STRICT3")

    server.strict = True
    assert msa(run(loop, exchange(port, frame(good)))[0])[1] == "AA"
    refused = run(loop, exchange(port, frame(bad_date)))[0]
    assert msa(refused)[1] == "AE" and "102" in err(refused) and "1970-02-14x" in refused
    missing = run(loop, exchange(port, frame(no_pv1)))[0]
    assert msa(missing)[1] == "AE" and "PV1" in missing
    assert [meta["correlation_id"] for _, meta in sent.items] == ["STRICT1"]

    server.strict = False
    assert msa(run(loop, exchange(port, frame(bad_date)))[0])[1] == "AA"
