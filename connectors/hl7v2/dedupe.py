"""The connector's own bookkeeping: which messages it has already accepted, in PostgreSQL, so a
restarted connector and several connectors behind one load balancer agree on duplicates.

A connector persists nothing of the record (DESIGN: connectors never import the store). This
table is the connector's, not the record's: one row per accepted message, keyed by
sender + MSH-10 + content digest (`server.dedupe_key`), with the instant its first copy was
received (a resend is published with it), written only after Kafka acknowledged the envelope. The table is created here on first use (`CREATE TABLE IF NOT EXISTS`), so the
connector needs no migration from the store and can point at a database of its own.

Failure cases, each safe: a crash between Kafka's ack and the insert means no AA was sent, the
sender resends, and the envelope is published again; two connectors taking the same resend at
the same moment both publish. In both cases the pipeline is idempotent (deterministic resource
ids, unchanged content is not rewritten), so the record is unchanged: the dedupe keeps the bus
quiet, it is not what keeps the record right."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hl7v2_accepted (
    key text PRIMARY KEY,
    accepted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS hl7v2_accepted_at ON hl7v2_accepted (accepted_at);
"""


class PostgresDedupe:
    """`Dedupe` for MllpServer over a small table; keys older than `retention_days` are pruned
    at open (a sender resends within minutes, not weeks).

    `remember` only queues the key: a task writes queued keys in one INSERT every
    `flush_interval` seconds (and at close), so the AA waits for one lookup and Kafka, not for a
    second write. Losing the queue in a crash loses nothing: those messages were acknowledged,
    so their senders do not resend them, and a resend that does come is published again and
    changes nothing in the record (see above)."""

    def __init__(self, database_url: str, retention_days: int = 30, max_size: int = 8,
                 flush_interval: float = 0.05) -> None:
        self._pool = AsyncConnectionPool(database_url, min_size=2, max_size=max_size, open=False,
                                         kwargs={"autocommit": True})
        self._retention_days = retention_days
        self._flush_interval = flush_interval
        self._queued: dict[str, datetime] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=30)
        async with self._pool.connection() as conn:
            # Several connectors may start together: one creates the table, the others wait.
            await conn.execute("SELECT pg_advisory_lock(hashtext('hl7v2_accepted'))")
            try:
                await conn.execute(SCHEMA)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext('hl7v2_accepted'))")
            await conn.execute("DELETE FROM hl7v2_accepted WHERE accepted_at < now() - make_interval(days => %s)",
                               (self._retention_days,))
        self._flusher = asyncio.create_task(self._flush_forever())

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        try:
            await self.flush()
        finally:
            await self._pool.close()

    async def seen(self, key: str) -> datetime | None:
        if key in self._queued:
            return self._queued[key]
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT accepted_at FROM hl7v2_accepted WHERE key = %s", (key,))
            row = await cur.fetchone()
            return None if row is None else row[0]

    async def remember(self, key: str, received_at: datetime) -> None:
        self._queued[key] = received_at

    async def flush(self) -> None:
        """Write every queued key now (also called by the background task)."""
        if not self._queued:
            return
        queued = dict(self._queued)
        async with self._pool.connection() as conn:
            # accepted_at: when the first copy was received (the envelope's received-at).
            await conn.execute("INSERT INTO hl7v2_accepted (key, accepted_at) "
                               "SELECT * FROM unnest(%s::text[], %s::timestamptz[]) ON CONFLICT DO NOTHING",
                               (list(queued), list(queued.values())))
        for key in queued:
            self._queued.pop(key, None)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush()
            except Exception:  # the database away: keep the keys queued and try again
                log.warning("could not record accepted HL7 v2 message keys; will retry", exc_info=True)
