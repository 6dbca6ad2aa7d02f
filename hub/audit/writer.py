"""Audit records leave the request path through a bounded in-process queue; one background task
writes them in batches. Nothing is dropped: a full queue makes the request that finished last
wait for room (back-pressure) rather than forget who looked; a failed write is retried with
back-off, holding its batch, until storage is back; closing drains the queue.

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

# What is queued: an AuditRecord, or (as the API queues it) the record's table row.
T = TypeVar("T")
# flush(records, retry): store the batch or raise. `retry` says an earlier attempt failed, so
# some records may be stored already and must not be stored twice.
Flush = Callable[[list[T], bool], Awaitable[None]]


class AuditWriter(Generic[T]):
    def __init__(self, flush: Flush, *, queue_size: int = 10_000, batch_size: int = 500,
                 linger_s: float = 0.05, retry_max_delay_s: float = 5.0) -> None:
        self._flush = flush
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._retry_max_delay_s = retry_max_delay_s
        self._task: asyncio.Task | None = None
        self.written = 0  # records stored since start (for tests and metrics)
        self.failures = 0  # failed flush attempts since start
        self._holding = 0  # records in the batch being written

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
        """Write everything queued, then stop. A database that stays away longer than
        `timeout_s` leaves records unwritten: that is logged as a count, never silently."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.put(_STOP)
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            log.error("audit writer stopped with up to %d records unwritten: storage unavailable",
                      self._holding + self._queue.qsize())

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            stop = bool(batch) and batch[-1] is _STOP
            if stop:
                batch.pop()
            if batch:
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

    async def _write(self, batch: list[T]) -> None:
        delay, retry = 0.05, False
        self._holding = len(batch)
        while True:
            try:
                await self._flush(batch, retry)
            except Exception as exc:  # noqa: BLE001  (storage away or failing: hold the batch, try again)
                self.failures += 1
                FAILED_WRITES.inc()
                QUEUED.set(self._queue.qsize() + len(batch))
                log.warning("audit write of %d records failed (%s); retrying in %.2f s",
                            len(batch), type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay, retry = min(delay * 2, self._retry_max_delay_s), True
            else:
                self.written += len(batch)
                self._holding = 0
                WRITTEN.inc(len(batch))
                QUEUED.set(self._queue.qsize())
                return


_STOP = object()  # type: ignore[assignment]  # the queue's end marker, put by close()
