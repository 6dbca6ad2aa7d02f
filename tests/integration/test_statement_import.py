"""The statements connector against the real Kafka-protocol broker: good lines published one
envelope each keyed by the person, every bad row and every duplicate line in the error file with
line, column and reason, a duplicate upload refused, a whole file refused for its header, and the
CLI's exit status."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from connectors.la import Ledger, iter_errors
from connectors.la.publish import KafkaSink
from connectors.statements import StatementImporter
from hub.bus.envelope import from_record
from hub.bus.kafka import BusSettings
from hub.bus.replay import read_topic
from hub.bus.topics import Topics
from mappings.statements import map_line
from tests.pipeline.conftest import IPC_HUB, bus, kafka, worker_env  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "connectors" / "statements" / "samples" / "statement.csv"
HEADER = SAMPLE.read_text().splitlines()[0]
GOOD = "DPSS01,2026-10,L-{n},9990000026,nhs,direct-payment,2026-10-0{d},Spend,PA,100.00,personal-assistant,,,,"


def inbound(bus: BusSettings) -> list:
    return [(r, from_record(r.value, r.raw_headers))
            for r in read_topic(bus, Topics(bus.topic_prefix).inbound, timeout=10)]


@pytest.fixture()
def importer(bus: BusSettings, tmp_path: Path):
    sink = KafkaSink(bus, max_in_flight=2, client_id="test-statements")
    yield StatementImporter(sink, Ledger(tmp_path / "ledger"))
    sink.close()


def test_good_bad_and_duplicate_lines_each_get_their_due(importer, bus, tmp_path):
    rows = [HEADER,
            GOOD.format(n=1, d=1),
            GOOD.format(n=2, d=2),
            GOOD.format(n=1, d=1),                                   # line 4: the same line again
            GOOD.format(n=2, d=3),                                   # line 5: another line under L-2
            GOOD.format(n=3, d=4).replace("9990000026", "9990000027"),  # line 6: fails Modulus 11
            GOOD.format(n=4, d=5).replace("100.00", "-5"),           # line 7: a negative amount
            GOOD.format(n=5, d=6).replace(",Spend,PA,", ",Spend,,"),  # line 8: a Spend without payee
            GOOD.format(n=6, d=7).replace("personal-assistant", "holiday"),  # line 9: unknown category
            GOOD.format(n=7, d=8).replace("Spend", "Refund")]        # line 10: good
    path = tmp_path / "october.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    [report] = importer.import_extract([path])
    assert (report.status, report.rows_read, report.rows_good, report.rows_bad, report.envelopes) == (
        "imported", 9, 3, 6, 3)
    errors = {(e.line, e.column): e.reason for e in iter_errors(report.errors_path)}
    assert errors[(4, "Line_Reference")] == "duplicate line: the same as line 2"
    assert errors[(5, "Line_Reference")].startswith("Line_Reference already used on line 3")
    assert "Modulus 11" in errors[(6, "NHS_Number")]
    assert "not an amount" in errors[(7, "Amount")]
    assert errors[(8, "Payee")] == "a Spend line names who was paid"
    assert "not a known code" in errors[(9, "Category")]
    published = inbound(bus)
    assert sorted(e.correlation_id.rsplit(":", 1)[1] for _, e in published) == ["10", "2", "3"]
    for record, envelope in published:
        assert envelope.kind == "statement-line" and envelope.source == "stmt-DPSS01"
        assert record.key == b"nhs:9990000026"
        bundle = map_line(envelope.payload, envelope.source)   # each envelope maps to one spend line
        assert bundle["entry"][0]["resource"]["resourceType"] == "ChargeItem"
    # The same file again is a duplicate upload: reported, nothing published.
    [again] = importer.import_extract([path])
    assert again.status == "duplicate" and again.envelopes == 0
    assert len(inbound(bus)) == 3


def test_a_file_with_a_wrong_header_is_refused_whole(importer, bus, tmp_path):
    path = tmp_path / "wrong.csv"
    path.write_text(HEADER.replace("Line_Reference", "Line_Ref") + "\n" + GOOD.format(n=1, d=1) + "\n")
    [report] = importer.import_extract([path])
    assert report.status == "refused" and "missing Line_Reference" in report.reason
    assert "unknown 'Line_Ref'" in report.reason
    assert inbound(bus) == []


def test_the_cli_imports_the_sample_and_says_how_it_went(bus, tmp_path, pg_url):
    sample = Path(shutil.copy(SAMPLE, tmp_path / "statement.csv"))
    env = worker_env(bus, pg_url, HUB_STATEMENTS_LEDGER_DIR=str(tmp_path / "ledger"))
    done = subprocess.run([IPC_HUB, "connector", "statements", "import", str(sample)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 rows read, 6 published in 6 envelopes, 0 rejected" in done.stdout
    again = subprocess.run([IPC_HUB, "connector", "statements", "import", str(sample)], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 2 and "duplicate upload" in again.stdout
