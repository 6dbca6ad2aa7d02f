"""The audit writer against a real PostgreSQL of its own that the tests stop and start: records
queued while the database is away are written once it is back, none lost and none twice; a
full queue holds its producers back; closing writes everything still queued."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from hub.api.audit import _row
from hub.audit.record import AuditRecord, build_record
from hub.audit.spill import Spill, load
from hub.audit.writer import AuditWriter
from hub.runtime.embedded import EmbeddedPostgres
from hub.store.audit import AuditStore, refused
from hub.store.migrate import migrate


@pytest.fixture()
def own_database(tmp_path: Path):
    server = EmbeddedPostgres(tmp_path)
    url = server.start()
    migrate(url)
    yield server
    server.stop()


def record(patient: str) -> AuditRecord:
    return build_record(method="GET", path=f"/fhir/Patient/{patient}", query="", status=200,
                        recorded=datetime.now(UTC), state={}, address="127.0.0.1")


def stored(url: str, patient: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM audit_event WHERE patients && %s",
                            ([patient],)).fetchone()[0]


async def until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def make_writer(url: str, **options) -> tuple[AuditWriter, AuditStore]:
    store = AuditStore(url)

    async def flush(records: list[AuditRecord], retry: bool) -> None:
        await store.write([_row(r) for r in records], retry=retry)

    return AuditWriter(flush, retry_max_delay_s=0.2, **options), store


def test_records_queued_while_the_database_is_down_are_written_once_it_is_back(own_database):
    url = own_database.url
    patient = uuid.uuid4().hex

    async def scenario() -> None:
        writer, store = make_writer(url, queue_size=1000, batch_size=50)
        writer.start()
        for _ in range(100):
            await writer.submit(record(patient))
        await until(lambda: stored(url, patient) == 100)

        own_database.stop()
        for _ in range(150):
            await writer.submit(record(patient))
        failures_before = writer.failures
        await until(lambda: writer.failures > failures_before)  # it tried and found no database

        await asyncio.to_thread(own_database.start)
        await until(lambda: stored(url, patient) == 250)
        await writer.close()
        await store.close()
        assert writer.written == 250 and writer.pending == 0

    asyncio.run(scenario())
    assert stored(own_database.url, patient) == 250  # none lost, none twice


def test_a_full_queue_holds_producers_back_instead_of_dropping(own_database):
    url = own_database.url
    patient = uuid.uuid4().hex

    async def scenario() -> None:
        writer, store = make_writer(url, queue_size=5, batch_size=2)
        writer.start()
        own_database.stop()

        async def produce() -> None:
            for _ in range(40):
                await writer.submit(record(patient))

        producer = asyncio.create_task(produce())
        await until(lambda: writer.pending == 5)
        assert not producer.done()  # waiting for room, not dropping
        await asyncio.to_thread(own_database.start)
        await asyncio.wait_for(producer, 30)
        await writer.close()
        await store.close()

    asyncio.run(scenario())
    assert stored(own_database.url, patient) == 40


def test_closing_writes_everything_still_queued(own_database):
    url = own_database.url
    patient = uuid.uuid4().hex

    async def scenario() -> None:
        writer, store = make_writer(url, queue_size=5000, batch_size=500)
        for _ in range(2000):
            await writer.submit(record(patient))
        writer.start()
        await writer.close()
        await store.close()

    asyncio.run(scenario())
    assert stored(url, patient) == 2000


def test_a_retried_batch_already_stored_is_not_stored_twice(own_database):
    url = own_database.url
    patient = uuid.uuid4().hex
    rows = [_row(record(patient)) for _ in range(20)]

    async def scenario() -> None:
        store = AuditStore(url)
        await store.write(rows[:10])
        await store.write(rows, retry=True)  # the first ten were stored: only the rest are added
        await store.close()

    asyncio.run(scenario())
    assert stored(url, patient) == 20


def test_closing_while_the_database_stays_away_says_how_many_records_were_not_written(own_database, caplog):
    url = own_database.url

    async def scenario() -> None:
        writer, store = make_writer(url, queue_size=100, batch_size=10)
        writer.start()
        own_database.stop()
        for _ in range(25):
            await writer.submit(record(uuid.uuid4().hex))
        await writer.close(timeout_s=1.0)
        await store.close()

    with caplog.at_level("ERROR", logger="hub.audit.writer"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records if r.name == "hub.audit.writer"]
    counts = [int(m.split("writer: ")[1].split()[0]) for m in messages if "unwritten" in m]
    assert counts == [25], messages  # every record still held is counted, once
    own_database.start()  # for the fixture's stop


def spilling_writer(url: str, spill: Spill, batch_size: int) -> tuple[AuditWriter, AuditStore]:
    """A writer of table rows, as the API wires it: refused records set aside in `spill`."""
    store = AuditStore(url)

    async def flush(rows: list[tuple], retry: bool) -> None:
        await store.write(rows, retry=retry)

    return AuditWriter(flush, batch_size=batch_size, retry_max_delay_s=0.2, rejects=refused, set_aside=spill), store


def _poisoned(patient: str) -> tuple:
    """A row no PostgreSQL text column can take (a NUL character), as a record that escaped
    cleaning would be."""
    row = list(_row(record(patient)))
    row[7] = "/fhir/Patient/a\x00b"
    return tuple(row)


def test_one_record_storage_refuses_is_set_aside_and_every_other_record_is_written(own_database, tmp_path):
    """Issue 20, finding 6: one bad audit record never stops the trail."""
    url = own_database.url
    patient, bad_patient = uuid.uuid4().hex, uuid.uuid4().hex
    spill = Spill(tmp_path / "spill")

    async def scenario() -> AuditWriter:
        writer, store = spilling_writer(url, spill, batch_size=50)
        writer.start()
        for n in range(120):
            await writer.submit(_poisoned(bad_patient) if n == 7 else _row(record(patient)))
        await until(lambda: stored(url, patient) == 119)
        await writer.close(timeout_s=10)
        await store.close()
        return writer

    writer = asyncio.run(scenario())
    assert stored(url, patient) == 119 and stored(url, bad_patient) == 0
    assert writer.set_aside == 1 and writer.pending == 0
    kept = load(tmp_path / "spill")
    assert len(kept) == 1 and kept[0]["row"][16] == _poisoned(bad_patient)[16]
    assert "refused" in kept[0]["reason"]
    assert (spill.path.stat().st_mode & 0o777) == 0o600  # it names people: the hub's user only


def test_shutdown_is_bounded_and_what_was_not_written_is_kept_on_disk(own_database, tmp_path):
    url = own_database.url
    patients = [uuid.uuid4().hex for _ in range(30)]
    spill = Spill(tmp_path / "spill")

    async def scenario() -> None:
        writer, store = spilling_writer(url, spill, batch_size=10)
        writer.start()
        own_database.stop()
        for p in patients:
            await writer.submit(_row(record(p)))
        await writer.close(timeout_s=1.0)  # returns, though the database never comes back
        await store.close()

    asyncio.run(scenario())
    kept = load(tmp_path / "spill")
    assert sorted(k["row"][16] for k in kept) == sorted("{" + f'"{p}"' + "}" for p in patients)
    assert all("before shutdown" in k["reason"] for k in kept)
    own_database.start()  # for the fixture's stop
