"""HL7 v2 end to end: `ipc-hub connector hl7v2` as a real process on a real socket, publishing to
the session's Tansu broker, mapper and recorder as real `ipc-hub worker` processes, the record
in the session's PostgreSQL. The corpus and UK-style messages each get the right ACK and the
right record; a restarted connector loses and duplicates nothing; TLS and idle timeouts."""
from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.hl7v2 import frame
from connectors.hl7v2.framing import MllpFramer
from hub.bus.kafka import BusSettings
from hub.bus.replay import read_topic
from hub.bus.topics import Topics
from mappings.hl7v2 import map_message, parse
from tests.conftest import empty_database
from tests.integration.conftest import free_port
from tests.integration.test_hl7v2_mllp import BAD_NHS, NHS, adt, err, msa
from tests.pipeline.conftest import (
    IPC_HUB,
    Workers,
    committed_everything,
    count,
    fresh_bus,
    wait_for,
    worker_env,
)
from tests.shared_data import HL7V2_CORPUS
from tests.unit.test_hl7v2_corpus import (
    FIELDS,
    REQUIRED_NK1_AGREEMENT,
    _normalise,
    _pairs,
)

pytestmark = pytest.mark.integration

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"


# --- MLLP client -----------------------------------------------------------------------------

async def _exchange(port: int, frames: list[bytes], replies: int | list[int],
                    context: ssl.SSLContext | None = None, timeout: float = 10.0) -> list[str]:
    """Send frames one at a time on one connection, reading the answers each should get
    (`replies`: per frame, or in all for a single frame); stop early if the peer closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                  server_hostname="localhost" if context else None)
    wanted = replies if isinstance(replies, list) else [replies] + [1] * (len(frames) - 1)
    framer, got = MllpFramer(), []
    try:
        for data, replies_due in zip(frames, wanted):
            writer.write(data)
            await writer.drain()
            expected = len(got) + replies_due
            while len(got) < expected:
                chunk = await asyncio.wait_for(reader.read(65536), timeout)
                if not chunk:
                    return got
                got += [m.decode() for m in framer.feed(chunk).messages]
    finally:
        writer.close()
    return got


def exchange(port: int, frames: list[bytes], replies: int | list[int] = 1,
             context: ssl.SSLContext | None = None) -> list[str]:
    return asyncio.run(_exchange(port, frames, replies, context))


# --- the running stack -------------------------------------------------------------------------

class Stack:
    def __init__(self, bus: BusSettings, url: str, tmp: Path) -> None:
        self.bus, self.url, self.tmp = bus, url, tmp
        self.workers = Workers(tmp)
        self.connector: subprocess.Popen | None = None
        self.port = free_port()

    def start_connector(self, **extra: str) -> subprocess.Popen:
        log = open(self.tmp / f"connector-{time.monotonic_ns()}.log", "w")
        env = worker_env(self.bus, self.url, HUB_MLLP_PORT=str(self.port), **extra)
        proc = subprocess.Popen([IPC_HUB, "connector", "hl7v2"], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.procs.append(proc)  # stopped with the workers
        wait_for(lambda: _accepts(self.port) or proc.poll() is not None, 30, "the MLLP listener")
        assert proc.poll() is None, open(log.name).read()
        self.connector = proc
        return proc

    def stop_connector(self) -> None:
        assert self.connector is not None
        self.connector.terminate()
        assert self.connector.wait(15) == 0


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(kafka: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory):
    empty_database(pg_url)
    bus = fresh_bus(kafka)
    running = Stack(bus, pg_url, tmp_path_factory.mktemp("hl7v2"))
    env = worker_env(bus, pg_url)
    running.workers.start("mapper", env)
    running.workers.start("recorder", env)
    running.start_connector()
    yield running
    running.workers.stop_all()


# --- reading the record ------------------------------------------------------------------------

def _versions(url: str, res_type: str) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    with psycopg.connect(url) as conn:
        for res_id, version, content in conn.execute(
                "SELECT res_id, version, content::text FROM resource_version WHERE res_type = %s AND NOT deleted",
                (res_type,)):
            out.setdefault(res_id, []).append((version, json.loads(content)))
    return out


def _links(url: str) -> dict[tuple[str, str], tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return {(s, i): (p, m) for s, i, p, m in conn.execute(
            "SELECT source, source_id, patient_id, method FROM person_link")}


def _provenance_targets(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT t->>'reference' FROM resource p, json_array_elements(p.content->'target') t "
            "WHERE p.res_type = 'Provenance'")}


def _same(mine: dict[str, Any], stored: dict[str, Any], fields: tuple[str, ...]) -> bool:
    """The stored version says what the mapping said, field by field (identifiers: at least those)."""
    for field in fields:
        if field == "identifier":
            # An identifier is its (system, value); the person keeps one wording of each.
            if not _identifier_keys(mine) <= _identifier_keys(stored):
                return False
        elif _normalise(mine, field) != _normalise(stored, field):
            return False
    return True


def _identifier_keys(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i.get("system", ""), i.get("value", "")) for i in resource.get("identifier") or []}


def _landed(url: str, messages: list[tuple[str, bytes]]) -> list[str]:
    """The messages whose Patient and NK1 RelatedPersons are not (yet) in the record as mapped,
    each Patient version with a Provenance."""
    patients, related = _versions(url, "Patient"), _versions(url, "RelatedPerson")
    links, targets = _links(url), _provenance_targets(url)
    missing = []
    for name, raw in messages:
        bundle = map_message(raw)
        source = "|".join(filter(None, (parse(raw).msh.value(3), parse(raw).msh.value(4)))) or "unknown"
        resources = [e["resource"] for e in bundle["entry"]]
        patient = resources[0]
        link = links.get((source, patient["id"]))
        if link is None:
            missing.append(f"{name}: no person link")
            continue
        person = link[0]
        # A person first recorded by another sender keeps that sender's fields and gains this
        # message's identifiers (the recorder's rule for several sources): check those only.
        fields = FIELDS if person == patient["id"] else ("identifier",)
        found = [v for v, stored in patients.get(person, []) if _same(patient, stored, fields)]
        if not found or not any(f"Patient/{person}/_history/{v}" in targets for v in found):
            missing.append(f"{name}: Patient")
            continue
        for mine in (r for r in resources if r["resourceType"] == "RelatedPerson"):
            if not any(_same(mine, stored, tuple(REQUIRED_NK1_AGREEMENT))
                       and stored["patient"]["reference"] == f"Patient/{person}"
                       for _, stored in related.get(mine["id"], [])):
                missing.append(f"{name}: RelatedPerson {mine['id']}")
    return missing


def _recorded_everything(stack: Stack) -> bool:
    topics = Topics(stack.bus.topic_prefix)
    return (len(list(read_topic(stack.bus, topics.bundles, timeout=5))) == _inbound(stack.bus)
            and committed_everything(stack.bus, topics.group("recorder"), topics.bundles))


def _inbound(bus: BusSettings) -> int:
    return len(list(read_topic(bus, Topics(bus.topic_prefix).inbound, timeout=10)))


# --- the tests ---------------------------------------------------------------------------------

def test_corpus_lands_in_the_record_and_a_restart_loses_and_duplicates_nothing(stack: Stack) -> None:
    messages = [(name, (HL7V2_CORPUS / "input" / name).read_bytes()) for name, _ in _pairs()]
    assert len(messages) == 57
    # The two A40s say MSH-15 = NE (enhanced mode, no accept acknowledgement): HL7 says they
    # get no ACK, so they are checked by landing in the record; the other 55 get AA.
    silent = [parse(raw).msh.value(15) == "NE" for _, raw in messages]
    assert sum(silent) == 2
    acks = exchange(stack.port, [frame(raw) for _, raw in messages], [0 if s else 1 for s in silent])
    assert len(acks) == 55
    for (name, raw), ack in zip([m for m, s in zip(messages, silent) if not s], acks):
        assert msa(ack)[1:3] == ["AA", parse(raw).control_id], f"{name}: {ack!r}"
    # Every Patient and NK1 RelatedPerson is in the record as mapped, with its Provenance
    # (the mapping's agreement with FHIR-Converter is measured in tests/unit/test_hl7v2_corpus.py).
    remaining: list[list[str]] = []

    def all_landed() -> bool:
        remaining[:] = [_landed(stack.url, messages)]
        return not remaining[0]

    try:
        wait_for(all_landed, 60, "every corpus message in the record", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {remaining[0]}") from None
    assert list(read_topic(stack.bus, Topics(stack.bus.topic_prefix).deadletter, timeout=5)) == []
    published = _inbound(stack.bus)
    assert published == 57 + 2  # each A40 is published twice: its Bundle, then the merge
    versions = count(stack.url, "SELECT count(*) FROM resource_version")

    # Restart the connector: every resend is known (the dedupe table survived), so it is
    # acknowledged AA as a resend and published again; the recorder absorbs it: no new version.
    stack.stop_connector()
    stack.start_connector()
    again = exchange(stack.port, [frame(raw) for _, raw in messages], [0 if s else 1 for s in silent])
    assert [msa(a)[1] for a in again] == ["AA"] * 55
    assert all("duplicate" in msa(a)[3] for a in again)
    wait_for(lambda: _inbound(stack.bus) == 2 * published, 30, "the resends on the inbound topic")
    wait_for(lambda: _recorded_everything(stack), 60, "the recorder to pass the resends")
    assert count(stack.url, "SELECT count(*) FROM resource_version") == versions


def _patient(url: str, patient_id: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT content::text FROM resource WHERE res_type = 'Patient' AND res_id = %s",
                           (patient_id,)).fetchone()
    return json.loads(row[0]) if row else {}


def _person(url: str, raw: bytes) -> str | None:
    msg = parse(raw)
    link = _links(url).get((f"{msg.msh.value(3)}|{msg.msh.value(4)}", map_message(raw)["entry"][0]["resource"]["id"]))
    return link[0] if link else None


def _accepted(port: int, raw: bytes) -> None:
    ack = exchange(port, [frame(raw)])[0]
    assert msa(ack)[1] == "AA", ack


def test_uk_messages_get_the_right_ack_and_the_right_record(stack: Stack) -> None:
    url, port = stack.url, stack.port
    # NHS number variants from two systems: one person, found by the NHS number.
    first = adt("A28", "UK1", f"M100^^^RXX01^MR~{NHS[:3]} {NHS[3:6]} {NHS[6:]}^^^NHS^NHSNBR")
    second = adt("A04", "UK2", f"X100^^^RYY02^MR~{NHS}^^^^NHSNMBR").replace(b"|PAS|RXX01|", b"|EPR|RYY02|")
    _accepted(port, first)
    _accepted(port, second)
    person = wait_for(lambda: _person(url, first), 30, "the first person")
    wait_for(lambda: _person(url, second), 30, "the second system's record")
    assert _person(url, second) == person
    record = _patient(url, person)
    assert {"system": NHS_SYSTEM, "value": NHS} in [{k: i[k] for k in ("system", "value")} for i in record["identifier"]]

    # A31 updates a carer: the same RelatedPerson, now with the new phone.
    carer = "NK1|1|SMITH^John|CGV^Carer|2 Mill Lane^^Leeds^^LS2 2BB|{phone}|||||||||||||||||||||||||"
    a28 = adt("A28", "UK3", "M200^^^RXX01^MR", nk1=carer.format(phone="01130000001"))
    a31 = adt("A31", "UK4", "M200^^^RXX01^MR", nk1=carer.format(phone="01130000002"))
    _accepted(port, a28)
    _accepted(port, a31)
    carer_id = next(e["resource"]["id"] for e in map_message(a31)["entry"]
                    if e["resource"]["resourceType"] == "RelatedPerson")
    assert carer_id == next(e["resource"]["id"] for e in map_message(a28)["entry"]
                            if e["resource"]["resourceType"] == "RelatedPerson")

    def carer_phone() -> str | None:
        versions = sorted(_versions(url, "RelatedPerson").get(carer_id, []))
        return versions[-1][1]["telecom"][0]["value"] if len(versions) == 2 else None

    assert wait_for(carer_phone, 30, "the carer's update") == "01130000002"
    stored = sorted(_versions(url, "RelatedPerson")[carer_id])[-1][1]
    assert "carer" in json.dumps(stored["relationship"]).lower()

    # A bad check digit: kept as a local identifier, flagged, never the NHS number, never matched.
    bad = adt("A28", "UK5", f"M300^^^RXX01^MR~{BAD_NHS}^^^NHS^NH")
    _accepted(port, bad)
    bad_person = wait_for(lambda: _person(url, bad), 30, "the person with a bad NHS number")
    record = _patient(url, bad_person)
    assert bad_person != person
    assert all(i.get("system") != NHS_SYSTEM for i in record["identifier"])
    assert any(i["value"] == BAD_NHS for i in record["identifier"])
    assert "nhs-number-failed-modulus-11" in json.dumps(record["meta"])
    assert _links(url)[("PAS|RXX01", map_message(bad)["entry"][0]["resource"]["id"])][1] != "nhs-number"

    # A40: the pipeline's merge links the two records and moves the source's links.
    keep, gone = adt("A28", "UK6", "M400^^^RXX01^MR"), adt("A28", "UK7", "M401^^^RXX01^MR")
    _accepted(port, keep)
    _accepted(port, gone)
    kept_id, gone_id = wait_for(lambda: _person(url, keep), 30, "M400"), wait_for(lambda: _person(url, gone), 30, "M401")
    assert kept_id != gone_id
    merge = adt("A40", "UK8", "M400^^^RXX01^MR", extra="MRG|M401^^^RXX01^MR")
    _accepted(port, merge)
    wait_for(lambda: _person(url, gone) == kept_id, 30, "the merge to move M401's link")
    kept, retired = _patient(url, kept_id), _patient(url, gone_id)
    assert {"other": {"reference": f"Patient/{gone_id}"}, "type": "replaces"} in kept["link"]
    assert {"other": {"reference": f"Patient/{kept_id}"}, "type": "replaced-by"} in retired["link"]
    assert retired["active"] is False
    assert "M401" in [i["value"] for i in kept["identifier"]]

    # A47: the same record now carries the corrected identifier, the prior one kept as old.
    _accepted(port, adt("A28", "UK9", "M500^^^RXX01^MR"))
    a47 = adt("A47", "UK10", "M501^^^RXX01^MR", extra="MRG|M500^^^RXX01^MR")
    _accepted(port, a47)
    changed = wait_for(lambda: _person(url, a47), 30, "the A47")
    wait_for(lambda: "M501" in json.dumps(_patient(url, changed)), 30, "the new identifier")
    uses = [(i["value"], i.get("use")) for i in _patient(url, changed)["identifier"]
            if i["value"] in ("M500", "M501")]
    # One identifier is one identifier: M500 now only as `old`, M501 current.
    assert sorted(uses, key=str) == [("M500", "old"), ("M501", None)]

    # Broken input gets the right refusal on the real listener, which keeps serving.
    oru = adt("A01", "R1", "M1^^^RXX01^MR").replace(b"ADT^A01^ADT_A01", b"ORU^R01^ORU_R01")
    ack = exchange(port, [frame(oru)])[0]
    assert msa(ack)[1:3] == ["AR", "R1"] and "200" in err(ack)
    unknown = adt("A99", "R2", "M1^^^RXX01^MR")
    ack = exchange(port, [frame(unknown)])[0]
    assert msa(ack)[1:3] == ["AR", "R2"] and "201" in err(ack)
    truncated = b"MSH|^~\\&|PAS|RXX01|IPC|HUB|20260301||ADT^A01|T1|P|2.5\rEVN|A01\rPI"
    ack = exchange(port, [frame(truncated)])[0]
    assert msa(ack)[1:3] == ["AE", "T1"] and "100" in err(ack)
    wrong = adt("A01", "W1", "M1^^^RXX01^MR").replace(b"PID|1||", b"PID!1!!")
    assert msa(exchange(port, [frame(wrong)])[0])[1:3] == ["AE", "W1"]
    junk = bytes(range(256)) * 4
    ack = exchange(port, [frame(junk)])[0]
    assert msa(ack)[1] == "AR" and "100" in err(ack)
    cut = frame(adt("A01", "B1", "M600^^^RXX01^MR"))[:-2]
    after = adt("A01", "B2", "M601^^^RXX01^MR")
    acks = exchange(port, [b"noise" + cut + frame(after)], replies=2)
    assert [msa(a)[1:3] for a in acks] == [["AR", "B1"], ["AA", "B2"]]
    # Only the good message reached the record; none of the refused ones did.
    wait_for(lambda: _person(url, after), 30, "the message after the broken frame")
    assert _person(url, adt("A01", "B1", "M600^^^RXX01^MR")) is None
    assert _person(url, oru.replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01")) is None
    assert list(read_topic(stack.bus, Topics(stack.bus.topic_prefix).deadletter, timeout=5)) == []


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "mllp.crt", tmp / "mllp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True, timeout=30)
    return cert, key


def test_tls_and_idle_timeout(stack: Stack, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    tls = Stack(stack.bus, stack.url, tmp_path)
    tls.start_connector(HUB_MLLP_TLS_CERT=str(cert), HUB_MLLP_TLS_KEY=str(key), HUB_MLLP_IDLE_TIMEOUT="1")
    try:
        client = ssl.create_default_context(cafile=str(cert))
        ack = exchange(tls.port, [frame(adt("A08", "TLS1", "M700^^^RXX01^MR"))], context=client)[0]
        assert msa(ack)[1:3] == ["AA", "TLS1"]
        # Plain MLLP to the TLS port gets no ACK: the handshake fails and the connection closes.
        assert exchange(tls.port, [frame(adt("A08", "TLS2", "M700^^^RXX01^MR"))]) == []

        async def idle() -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", tls.port, ssl=client,
                                                          server_hostname="localhost")
            started = time.monotonic()
            closed = await asyncio.wait_for(reader.read(1), 10)
            writer.close()
            assert closed == b""
            return time.monotonic() - started

        assert 0.8 <= asyncio.run(idle()) < 5
        # The listener still serves after closing an idle connection.
        ack = exchange(tls.port, [frame(adt("A08", "TLS3", "M700^^^RXX01^MR"))], context=client)[0]
        assert msa(ack)[1:3] == ["AA", "TLS3"]
    finally:
        tls.workers.stop_all()


def test_busy_mllp_port_is_one_line_naming_the_variable(stack: Stack) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([IPC_HUB, "connector", "hl7v2"],
                                env=worker_env(stack.bus, stack.url, HUB_MLLP_PORT=str(port)),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "HUB_MLLP_PORT" in lines[0], result.stderr


def test_a_190_kb_admission_with_2400_next_of_kin_is_acknowledged_and_recorded_whole(stack: Stack) -> None:
    """Issue 19's red-team case: a valid ADT^A01 of ~190 KB (2,400 NK1 segments, under the 1 MiB
    MLLP limit) maps to a Bundle of ~1.5 MB, more than a broker's default record size. It is
    acknowledged AA only because the bus takes it (topics and clients allow
    HUB_KAFKA_MAX_MESSAGE_BYTES), and then it is recorded: every carer, nothing dead-lettered,
    and the pipeline goes on with the next message."""
    carers = "\r".join(f"NK1|{i}|BIGCARER{i:04d}^Alex|CGV^Carer|{i} Mill Lane^^Leeds^^LS2 2BB|07700900456^PRN^CP"
                       "||N^Next of kin" for i in range(1, 2401))
    message = adt("A01", "BIG1", "M4800^^^RXX01^MR", nk1=carers)
    assert 180_000 < len(message) < 1_048_576
    assert len(json.dumps(map_message(message))) > 1_000_000
    after = adt("A28", "BIG2", "M4801^^^RXX01^MR")
    acks = exchange(stack.port, [frame(message), frame(after)])
    assert [msa(a)[1:3] for a in acks] == [["AA", "BIG1"], ["AA", "BIG2"]]

    def carers_recorded() -> int:
        return count(stack.url, "SELECT count(*) FROM resource WHERE res_type = 'RelatedPerson' "
                                "AND content->'name'->0->>'family' LIKE 'BIGCARER%%'")

    wait_for(lambda: carers_recorded() == 2400, 120, "all 2,400 carers in the record")
    wait_for(lambda: count(stack.url, "SELECT count(*) FROM resource r, json_array_elements(r.content->'identifier') i "
                                      "WHERE r.res_type = 'Patient' AND i->>'value' = 'M4801'") == 1, 60,
             "the message after it in the record")
    assert list(read_topic(stack.bus, Topics(stack.bus.topic_prefix).deadletter, timeout=5)) == []
