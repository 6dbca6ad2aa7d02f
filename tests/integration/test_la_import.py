"""The LA connector against the real Kafka-protocol broker: the samples published keyed by
person in extract order, every bad row in the error file with line, column and reason, whole
files refused with a reason, duplicate uploads caught, the drop folder, and the CLI."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from connectors.la import DropFolder, Importer, Ledger, iter_errors
from connectors.la.extract import ERRORS_SUFFIX
from connectors.la.publish import KafkaSink
from hub.bus.envelope import from_record
from hub.bus.kafka import BusSettings
from hub.bus.replay import read_topic
from hub.bus.topics import Topics
from tests.pipeline.conftest import IPC_HUB, bus, kafka, worker_env  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "la" / "samples"


def copy(names: list[str], folder: Path) -> list[Path]:
    out = []
    for name in names:
        target = folder / Path(name).name
        shutil.copy(SAMPLES / name, target)
        out.append(target)
    return out


def inbound(bus: BusSettings) -> list:
    return [(r, from_record(r.value, r.raw_headers))
            for r in read_topic(bus, Topics(bus.topic_prefix).inbound, timeout=10)]


@pytest.fixture()
def importer(bus: BusSettings, tmp_path: Path):
    sink = KafkaSink(bus, max_in_flight=3)  # small: the bound is exercised on the samples too
    yield Importer(sink, Ledger(tmp_path / "ledger"))
    sink.close()


def test_an_extract_is_published_by_person_people_then_carers_then_events(importer, bus, tmp_path):
    files = copy(["events.csv", "carers.csv", "people.csv"], tmp_path)  # given in the wrong order
    reports = importer.import_extract(files)
    assert [(r.path.name, r.kind, r.status, r.rows_good, r.rows_bad, r.envelopes) for r in reports] == [
        ("events.csv", "events", "imported", 18, 0, 4),  # one envelope per person
        ("carers.csv", "carers", "imported", 4, 0, 4),
        ("people.csv", "people", "imported", 4, 0, 4),
    ]
    assert all(r.errors_path is None for r in reports)
    assert not list(tmp_path.glob("*" + ERRORS_SUFFIX))
    records = inbound(bus)
    assert len(records) == 12
    rank = {"la-cld-person": 0, "la-cld-carer": 1, "la-cld-events": 2}
    by_partition: dict[int, list[int]] = {}
    for record, envelope in sorted(records, key=lambda x: (x[0].partition, x[0].offset)):
        assert envelope.source == "la-E10000024" and envelope.content_type.startswith("text/csv")
        assert record.key == envelope.person_key.encode() and envelope.person_key.startswith("la-E10000024:")
        by_partition.setdefault(record.partition, []).append(rank[envelope.kind])
    for kinds in by_partition.values():
        assert kinds == sorted(kinds)  # within a partition (so for every person): people, carers, events
    events = [e for _, e in records if e.kind == "la-cld-events"]
    p1 = next(e for e in events if e.person_key == "la-E10000024:P100001")
    assert p1.payload.decode().count("\n") == 1 + 7  # header and P100001's seven events, the last out of order


def test_every_bad_row_is_in_the_error_file_and_the_good_rows_go_through(importer, bus, tmp_path):
    files = copy(["bad/people-bad-rows.csv", "bad/carers-bad-rows.csv", "bad/events-bad-rows.csv"], tmp_path)
    people, carers, events = importer.import_extract(files)
    assert (people.rows_read, people.rows_good, people.rows_bad) == (6, 1, 5)
    assert (carers.rows_good, carers.rows_bad, events.rows_good, events.rows_bad) == (1, 4, 1, 10)
    assert all(r.ok for r in (people, carers, events))  # the file is imported; its bad rows are not
    found = [(e.file, e.line, e.column) for e in iter_errors(tmp_path / "events-bad-rows.csv.errors.csv")]
    assert found == [("events-bad-rows.csv", 2, "Delivery_Mechanism"), ("events-bad-rows.csv", 3, "Event_Start_Date"),
                     ("events-bad-rows.csv", 4, "Unit_Cost"), ("events-bad-rows.csv", 5, "Event_End_Date"),
                     ("events-bad-rows.csv", 6, "LA_Person_Unique_Identifier"),
                     ("events-bad-rows.csv", 7, "Event_Reference"), ("events-bad-rows.csv", 8, ""),
                     ("events-bad-rows.csv", 9, "Unit_Cost"), ("events-bad-rows.csv", 10, "Planned_units_per_week"),
                     ("events-bad-rows.csv", 11, "LA_Code"), ("events-bad-rows.csv", 11, "Client_Type")]
    reasons = {(e.line, e.column): e.reason for e in iter_errors(tmp_path / "people-bad-rows.csv.errors.csv")}
    assert "Modulus 11" in reasons[(2, "NHS_Number")] and "before the date of birth" in reasons[(6, "Date_of_Death")]
    assert [(r.key, r.value.decode().splitlines()[1][:30]) for r, _ in
            [(r, e) for r, e in inbound(bus)] if r.key.endswith(b"P100001")] == [
        (b"la-E10000024:P100001", "E10000024,EV-1011,P100001,Serv")]
    assert len(inbound(bus)) == 3


def test_wrong_encoding_truncation_and_a_bom_each_get_their_own_report(importer, bus, tmp_path):
    latin1, truncated, bom = importer.import_extract(
        copy(["bad/people-latin1.csv", "bad/events-truncated.csv", "bad/people-bom-crlf.csv"], tmp_path))
    [error] = iter_errors(latin1.errors_path)
    assert (error.line, error.column) == (2, "") and "not UTF-8: byte 0xE9" in error.reason
    assert latin1.rows_good == 1  # the other row went through
    [error] = iter_errors(truncated.errors_path)
    assert error.line == 3 and "truncated last line" in error.reason and "10 of 14 fields" in error.reason
    assert truncated.rows_good == 1
    assert bom.ok and bom.rows_good == 1 and bom.errors_path is None
    names = sorted(e.payload.decode().splitlines()[1].split(",")[3] for _, e in inbound(bus) if e.kind == "la-cld-person")
    assert names == ["Max", "Zoë"]


def test_a_bad_header_or_empty_file_is_refused_whole_and_nothing_is_published(importer, bus, tmp_path):
    header, empty, utf16, people = importer.import_extract(
        copy(["bad/people-bad-header.csv", "bad/empty.csv", "bad/people-utf16.csv", "people.csv"], tmp_path))
    assert utf16.status == "refused" and "the header is not UTF-8" in utf16.reason
    assert header.status == "refused" and "missing Family_Name; unknown 'Surname', 'Religion'" in header.reason
    assert [(e.line, e.reason) for e in iter_errors(header.errors_path)] == [(1, header.reason)]
    assert empty.status == "refused" and "empty" in empty.reason
    assert people.ok
    assert {e.kind for _, e in inbound(bus)} == {"la-cld-person"} and len(inbound(bus)) == 4


def test_a_duplicate_upload_is_reported_and_not_published_unless_forced(importer, bus, tmp_path):
    [first] = importer.import_extract(copy(["people.csv"], tmp_path))
    assert first.ok and len(inbound(bus)) == 4
    again = tmp_path / "again"
    again.mkdir()
    [second] = importer.import_extract(copy(["people.csv"], again))
    assert second.status == "duplicate" and "imported as people.csv" in second.reason
    assert [e.line for e in iter_errors(second.errors_path)] == [0]
    assert len(inbound(bus)) == 4
    [forced] = importer.import_extract([again / "people.csv"], force=True)
    assert forced.ok and forced.errors_path is None and len(inbound(bus)) == 8


def test_the_drop_folder_takes_complete_files_and_files_them_away_with_their_reports(bus, tmp_path):
    sink = KafkaSink(bus)
    try:
        drop = DropFolder(tmp_path / "drop", Importer(sink, Ledger(tmp_path / "ledger")))
        (drop.folder / "people.csv.part").write_bytes((SAMPLES / "people.csv").read_bytes())
        assert drop.scan() == []  # still being uploaded
        os.rename(drop.folder / "people.csv.part", drop.folder / "people.csv")
        copy(["bad/events-bad-rows.csv", "bad/people-bad-header.csv"], drop.folder)
        # A file claimed by a watcher that stopped mid-import is imported on the next scan.
        shutil.copy(SAMPLES / "carers.csv", drop.processing / "carers.csv")
        reports = drop.scan()
        assert sorted((r.path.parent.name, r.status) for r in reports) == [
            ("failed", "refused"), ("processed", "imported"), ("processed", "imported"), ("processed", "imported")]
        assert not list(drop.folder.glob("*.csv")) and not list(drop.processing.iterdir())
        [reason] = drop.failed.glob("*.reason.txt")
        assert reason.read_text().startswith("refused: not a valid people file header")
        [errors] = drop.processed.glob("*-events-bad-rows.csv" + ERRORS_SUFFIX)
        assert len(list(iter_errors(errors))) == 11
        assert len(list(drop.failed.glob("*-people-bad-header.csv" + ERRORS_SUFFIX))) == 1
        kinds = [e.kind for _, e in inbound(bus)]
        assert sorted(kinds) == ["la-cld-carer"] * 4 + ["la-cld-events"] + ["la-cld-person"] * 4
        # The same people file dropped again is a duplicate upload: failed/, with the reason.
        shutil.copy(SAMPLES / "people.csv", drop.folder / "people.csv")
        [dup] = drop.scan()
        assert dup.status == "duplicate" and dup.path.parent == drop.failed
        assert len(inbound(bus)) == 9
    finally:
        sink.close()


def test_the_cli_imports_and_its_exit_status_says_how_it_went(bus, tmp_path, pg_url):
    env = worker_env(bus, pg_url, HUB_LA_LEDGER_DIR=str(tmp_path / "ledger"))
    files = copy(["people.csv", "bad/events-bad-rows.csv"], tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([IPC_HUB, "connector", "la", "import", *args], env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    done = run(*map(str, files))
    assert done.returncode == 1, done.stderr  # some rows rejected
    assert "people.csv: imported as people; 4 rows read, 4 published in 4 envelopes, 0 rejected" in done.stdout
    assert "events-bad-rows.csv: imported as events; 11 rows read, 1 published" in done.stdout
    done = run(str(files[0]))
    assert done.returncode == 2 and "people.csv: duplicate" in done.stdout
    done = run("--force", str(files[0]))
    assert done.returncode == 0 and len(inbound(bus)) == 9
    assert "9990000018" not in done.stdout + done.stderr  # no personal data in what it prints


def test_the_watch_ipc_hub_up_starts_picks_up_a_dropped_extract_and_stops_with_its_stack(bus, tmp_path):
    from contextlib import ExitStack

    from hub.cli.la_extracts import start_la_watch
    from hub.config import Settings
    from tests.pipeline.conftest import wait_for

    settings = Settings(data_dir=tmp_path, topic_prefix=bus.topic_prefix, topic_partitions=bus.partitions,
                        la_poll_interval_s=0.05, bus_journal="off")
    with ExitStack() as stack:
        drop = start_la_watch(settings, bus.bootstrap, stack)
        assert drop.folder == tmp_path / "la-drop"
        (drop.folder / "x.part").write_bytes((SAMPLES / "people.csv").read_bytes())
        os.rename(drop.folder / "x.part", drop.folder / "people.csv")
        wait_for(lambda: list(drop.processed.glob("*-people.csv")), 30, "the dropped file processed")
    assert len(inbound(bus)) == 4
    assert (tmp_path / "la-imports").is_dir()  # the ledger, under the data folder by default


def test_the_sink_never_has_more_than_its_bound_in_flight_and_loses_nothing(bus):
    from hub.bus.envelope import Envelope

    sink = KafkaSink(bus, max_in_flight=5)
    try:
        peak = 0
        for i in range(300):
            sink.send(Envelope(source="la-E10000024", kind="la-cld-person", payload=b"x", person_key=f"k{i}"))
            peak = max(peak, sink.in_flight)
        sink.flush()
        assert peak == 5 and sink.in_flight == 0
    finally:
        sink.close()
    assert len(inbound(bus)) == 300
