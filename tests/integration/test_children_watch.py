"""The children's drop folder as `ipc-hub up` runs it (`connector children watch`, a supervised
child: tests/pipeline/test_up.py checks that end to end), here in process against the real broker
and PostgreSQL: a dropped file moves to processed/ only once the bus journal and the broker both
hold every envelope it published (the council extracts' acknowledgement rule)."""
from __future__ import annotations

import os
import threading
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from connectors.la import DropFolder
from hub.cli.children import drop_dir, importer
from hub.config import Settings
from tests.integration.test_la_import import inbound
from tests.pipeline.conftest import bus, kafka, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "children" / "samples"


def test_a_dropped_childrens_file_is_processed_only_once_the_journal_and_the_broker_hold_it(bus, pg_url, tmp_path):
    settings = Settings(data_dir=tmp_path, topic_prefix=bus.topic_prefix, topic_partitions=bus.partitions,
                        la_poll_interval_s=0.05, bus_journal="on", database_url=pg_url)
    stop = threading.Event()
    with ExitStack() as stack:
        folder = DropFolder(drop_dir(settings), importer(settings, bus.bootstrap, stack))
        assert folder.folder == tmp_path / "children-drop"     # HUB_DATA_DIR/children-drop unless set
        watcher = threading.Thread(target=folder.watch, args=(stop, 0.05), daemon=True)
        watcher.start()
        try:
            partial = folder.folder / "children.csv.part"
            partial.write_bytes((SAMPLES / "children.csv").read_bytes())
            os.rename(partial, folder.folder / "children.csv")
            [done] = wait_for(lambda: list(folder.processed.glob("*-children.csv")), 30, "the file processed")
        finally:
            stop.set()
            watcher.join(30)
    # Processed means held twice: every envelope is on the broker and in the journal.
    published = [envelope for _, envelope in inbound(bus)]
    assert sorted(e.kind for e in published) == ["children-person"] * 3
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ids = [e.id for e in published]
        held = conn.execute("SELECT count(*) FROM bus_journal WHERE envelope_id = ANY(%s)", (ids,)).fetchone()[0]
        conn.execute("DELETE FROM bus_journal WHERE envelope_id = ANY(%s)", (ids,))
    assert held == 3
    assert done.read_bytes() == (SAMPLES / "children.csv").read_bytes()
    assert not list(folder.failed.iterdir())
