"""Audit records leave the request path through a bounded in-process queue; one background task
writes them in batches. Nothing is dropped: a full queue makes the request that finished last
wait for room (back-pressure) rather than forget who looked; a failed write is retried with
back-off, holding its batch, until storage is back; closing drains the queue.

One bad record never stops the trail. A batch refused for its content (`rejects(exc)` says so:
the storage is up, but will never take it) is split in halves until the records storage will
take are written and the ones it will not are found; each of those is handed to `set_aside`
(kept on disk and reported: hub.audit.spill), never retried forever in front of every later
record. Closing is bounded: what storage has not taken within the time given is handed to
`set_aside` too, so a stopping hub neither hangs nor forgets who looked.

Storage is any async `flush(records, retry)` that writes a whole batch or raises (the API wires in
`hub.store.audit.AuditStore.write`), so this module knows nothing of SQL."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

# Served at /metrics with the hub's other metrics: a growing queue or failing writes mean the
# audit trail is behind (and, once the queue is full, requests are being held back).
WRITTEN = Counter("ipc_audit_records_written", "Audit records stored")
FAILED_WRITES = Counter("ipc_audit_write_failures", "Audit batch writes that failed and were retried")
QUEUED = Gauge("ipc_audit_queue_depth", "Audit records waiting to be written")
SET_ASIDE = Counter("ipc_audit_records_set_aside", "Audit records storage refused or could not take in time, kept on disk")

# What is queued: an AuditRecord, or (as the API queues it) the record's table row.
T = TypeVar("T")
# flush(records, retry): store the batch or raise. `retry` says an earlier attempt failed, so
# some records may be stored already and must not be stored twice.
Flush = Callable[[list[T], bool], Awaitable[None]]
# set_aside(records, reason): keep records storage will not take (or did not take before
# shutdown) somewhere durable, and report them. Called from the writer task; must not raise.
SetAside = Callable[[list[T], str], None]


class AuditWriter(Generic[T]):
    def __init__(self, flush: Flush, *, queue_size: int = 10_000, batch_size: int = 500,
                 linger_s: float = 0.05, retry_max_delay_s: float = 5.0,
                 rejects: Callable[[BaseException], bool] = lambda exc: False,
                 set_aside: SetAside | None = None) -> None:
        self._flush = flush
        self._rejects = rejects
        self._set_aside = set_aside
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._retry_max_delay_s = retry_max_delay_s
        self._task: asyncio.Task | None = None
        self.written = 0  # records stored since start (for tests and metrics)
        self.failures = 0  # failed flush attempts since start
        self._holding: list[T] = []  # the batch being written
        self.set_aside = 0  # records handed to set_aside since start

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def submit(self, record: T) -> None:
        """Queue a record; waits only when the queue is full (storage far behind)."""
        await self._queue.put(record)

    def offer(self, record: T) -> bool:
        """Queue a record if there is room now (False: use `submit` and wait). The request path
        calls this first: queueing then costs no coroutine and no extra await."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            return False
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop, within `timeout_s`. What storage has not taken by
        then (a database that stays away) is handed to `set_aside`, or, with none, logged as a
        count: never silently."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.put(_STOP)
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001  (stopped mid-write: its batch is kept below)
                pass
            left = list(self._holding)
            while True:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is not _STOP:
                    left.append(item)
            self._holding = []
            QUEUED.set(0)
            self._put_aside(left, "storage did not take them before shutdown")
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            stop = bool(batch) and batch[-1] is _STOP
            if stop:
                batch.pop()
            if batch:
                self._holding = list(batch)
                await self._write(batch)
            if stop:
                return

    async def _next_batch(self) -> list[T]:
        """The next records to write: whatever arrives within `linger_s` of the first, so a busy
        hub writes a few large batches (one transaction each) rather than one per request."""
        batch = [await self._queue.get()]
        if batch[0] is not _STOP and self._linger_s and self._queue.qsize() < self._batch_size:
            await asyncio.sleep(self._linger_s)
        while len(batch) < self._batch_size and batch[-1] is not _STOP:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _write(self, batch: list[T], *, retry: bool = False) -> None:
        delay = 0.05
        while True:
            try:
                await self._flush(batch, retry)
            except Exception as exc:  # noqa: BLE001  (storage away or failing: hold the batch, try again)
                if self._rejects(exc):
                    await self._split(batch, exc)
                    return
                self.failures += 1
                FAILED_WRITES.inc()
                QUEUED.set(self._queue.qsize() + len(batch))
                log.warning("audit write of %d records failed (%s); retrying in %.2f s",
                            len(batch), type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay, retry = min(delay * 2, self._retry_max_delay_s), True
            else:
                self.written += len(batch)
                self._release(batch)
                WRITTEN.inc(len(batch))
                QUEUED.set(self._queue.qsize())
                return

    async def _split(self, batch: list[T], exc: BaseException) -> None:
        """A batch storage refused for its content: its halves are written apart (each retried
        as usual while storage is away), down to the single records it will not take, which are
        set aside. `retry` on the halves: the refused transaction stored nothing, but an earlier
        attempt of this batch may have."""
        if len(batch) == 1:
            self._release(batch)
            self._put_aside(batch, f"storage refused the record ({type(exc).__name__})")
            return
        middle = len(batch) // 2
        await self._write(batch[:middle], retry=True)
        await self._write(batch[middle:], retry=True)

    def _release(self, records: list[T]) -> None:
        """`records` are dealt with: no longer held (what close() would have to keep)."""
        if len(records) == len(self._holding):
            self._holding = []
        else:
            done = {id(r) for r in records}
            self._holding = [r for r in self._holding if id(r) not in done]

    def _put_aside(self, records: list[T], reason: str) -> None:
        if not records:
            return
        self.set_aside += len(records)
        SET_ASIDE.inc(len(records))
        if self._set_aside is None:
            log.error("audit writer: %d records unwritten: %s", len(records), reason)
            return
        try:
            self._set_aside(records, reason)
        except Exception:  # noqa: BLE001  (the last resort failed: say so, with the count)
            log.exception("audit writer: %d records could not be written or kept on disk: %s", len(records), reason)


_STOP = object()  # type: ignore[assignment]  # the queue's end marker, put by close()
