"""Bulk Data export jobs and their files (tables `bulk_export`, `bulk_export_file`), and the
streaming read an export is made of.

The API side (kick-off, status, download, cancel) is async, on the API's pool; the runner side
(claim, progress, finish, expiry) is synchronous, on the runner's own connections, because the
runner streams with COPY in a thread or process of its own (hub/exports/runner.py).

`stream` reads one resource type's rows for an export as `COPY (SELECT …) TO STDOUT` in binary
format: the stored JSON text goes from PostgreSQL to the file as bytes, never parsed, so memory
stays bounded by one chunk whatever the export's size."""
from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, Connection

_COLUMNS = ("id, client_id, user_ref, request, level, params, access, status, progress, error, created, "
            "started, finished, transaction_time, expires, attempts")


@dataclass(slots=True)
class Job:
    id: str
    client_id: str
    user_ref: str | None
    request: str
    level: str
    params: dict[str, Any]
    access: dict[str, Any]
    status: str
    progress: str
    error: str | None
    created: datetime
    started: datetime | None
    finished: datetime | None
    transaction_time: datetime | None
    expires: datetime | None
    attempts: int


@dataclass(slots=True)
class ExportFile:
    name: str
    kind: str  # output, deleted, error
    res_type: str
    count: int
    bytes: int
    patients: list[str]


def _job(row: tuple) -> Job:
    values = list(row)
    values[0] = str(values[0])
    return Job(*values)


# --- the API side ---------------------------------------------------------------------------


async def create(conn: AsyncConnection, *, client_id: str, user_ref: str | None, request: str, level: str,
                 params: dict[str, Any], access: dict[str, Any], created: datetime) -> str:
    job_id = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO bulk_export (id, client_id, user_ref, request, level, params, access, status, created) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, 'queued', %s)",
        (job_id, client_id, user_ref, request, level, orjson.dumps(params).decode(),
         orjson.dumps(access).decode(), created))
    await conn.execute("SELECT pg_notify('bulk_export', %s)", (job_id,))
    return job_id


async def active_count(conn: AsyncConnection, client_id: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM bulk_export WHERE client_id = %s "
                             "AND status IN ('queued', 'running')", (client_id,))
    return (await cur.fetchone())[0]


async def get(conn: AsyncConnection, job_id: str) -> Job | None:
    try:
        uuid.UUID(job_id)
    except ValueError:
        return None
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM bulk_export WHERE id = %s", (job_id,))
    row = await cur.fetchone()
    return _job(row) if row else None


async def files(conn: AsyncConnection, job_id: str) -> list[ExportFile]:
    cur = await conn.execute("SELECT name, kind, res_type, count, bytes, patients FROM bulk_export_file "
                             "WHERE export_id = %s ORDER BY kind, res_type, name", (job_id,))
    return [ExportFile(*row) for row in await cur.fetchall()]


async def file(conn: AsyncConnection, job_id: str, name: str) -> ExportFile | None:
    cur = await conn.execute("SELECT name, kind, res_type, count, bytes, patients FROM bulk_export_file "
                             "WHERE export_id = %s AND name = %s", (job_id, name))
    row = await cur.fetchone()
    return ExportFile(*row) if row else None


async def cancel(conn: AsyncConnection, job_id: str) -> None:
    """Mark the job cancelled: a running export stops at its next chunk, and the runner removes
    what it wrote (a completed export's files too)."""
    await conn.execute("UPDATE bulk_export SET status = 'cancelled', finished = coalesce(finished, now()) "
                       "WHERE id = %s", (job_id,))
    await conn.execute("SELECT pg_notify('bulk_export', %s)", (job_id,))


# --- the runner side ------------------------------------------------------------------------


def claim(conn: Connection, lease_s: float) -> Job | None:
    """The oldest job waiting, or one whose runner's lease has run out (it died), now ours."""
    with conn.transaction():
        row = conn.execute(
            "SELECT id FROM bulk_export WHERE status = 'queued' "
            "   OR (status = 'running' AND lease_until < now()) "
            "ORDER BY created FOR UPDATE SKIP LOCKED LIMIT 1").fetchone()
        if row is None:
            return None
        found = conn.execute(
            "UPDATE bulk_export SET status = 'running', started = coalesce(started, now()), "
            "lease_until = now() + make_interval(secs => %s), attempts = attempts + 1, progress = '' "
            f"WHERE id = %s RETURNING {_COLUMNS}", (lease_s, row[0])).fetchone()
    return _job(found)


def still_ours(conn: Connection, job_id: str, lease_s: float, progress: str) -> bool:
    """Renew the lease and note the progress; False once the job was cancelled (or taken over)."""
    row = conn.execute(
        "UPDATE bulk_export SET lease_until = now() + make_interval(secs => %s), progress = %s "
        "WHERE id = %s AND status = 'running' RETURNING 1", (lease_s, progress, job_id)).fetchone()
    return row is not None


def finish(conn: Connection, job_id: str, transaction_time: datetime, written: list[ExportFile],
           retention_s: float) -> bool:
    """Record the files and mark the job completed (unless it was cancelled meanwhile); its files
    are kept `retention_s` from now."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE bulk_export SET status = 'completed', finished = now(), transaction_time = %s, "
            "expires = now() + make_interval(secs => %s), progress = 'complete', lease_until = NULL "
            "WHERE id = %s AND status = 'running' RETURNING 1", (transaction_time, retention_s, job_id)).fetchone()
        if row is None:
            return False
        with conn.cursor().copy("COPY bulk_export_file (export_id, name, kind, res_type, count, bytes, patients) "
                                "FROM STDIN") as copy:
            for f in written:
                copy.write_row((job_id, f.name, f.kind, f.res_type, f.count, f.bytes, f.patients))
    return True


def fail(conn: Connection, job_id: str, reason: str, retention_s: float) -> None:
    conn.execute("UPDATE bulk_export SET status = 'failed', finished = now(), error = %s, lease_until = NULL, "
                 "expires = now() + make_interval(secs => %s) WHERE id = %s AND status = 'running'",
                 (reason, retention_s, job_id))


def gone(conn: Connection) -> list[str]:
    """Jobs whose files should go: cancelled ones, and any past its expiry. Their rows are
    deleted, so polling them answers 404 from now on."""
    rows = conn.execute("DELETE FROM bulk_export WHERE status = 'cancelled' OR expires < now() "
                        "RETURNING id").fetchall()
    return [str(r[0]) for r in rows]


def transaction_time(conn: Connection) -> datetime:
    """The export's transactionTime, read inside its snapshot: the snapshot's own time, or the
    start of the oldest other transaction still open if earlier. A write commits with the time it
    took inside its transaction, so one still open when the snapshot was taken can commit later
    with an earlier time; starting the next `_since` no later than it starts means that write is
    not missed (it may be exported twice, which is safe)."""
    return conn.execute(
        "SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity "
        "                     WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() "
        "                       AND datname = current_database()))").fetchone()[0]


# --- streaming ------------------------------------------------------------------------------

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")


def stream(conn: Connection, query: str, params: list[Any]) -> Iterator[tuple[bytes | None, ...]]:
    """Each row of `query` (a SELECT of text columns) as a tuple of UTF-8 bytes (None for NULL),
    read with `COPY (query) TO STDOUT (FORMAT binary)` in chunks: bounded memory, no decoding."""
    statement = f"COPY ({query}) TO STDOUT (FORMAT binary)"
    with conn.cursor().copy(statement, params) as copy:
        yield from _binary_rows(iter(copy))


def _binary_rows(chunks: Iterator[Any]) -> Iterator[tuple[bytes | None, ...]]:
    buffer = bytearray()
    started = finished = False
    for chunk in chunks:  # read to the end even after the trailer, so the COPY completes
        if finished:
            continue
        buffer += chunk
        at = 0
        if not started:
            if len(buffer) < 19:
                continue
            if bytes(buffer[:11]) != _SIGNATURE:
                raise ValueError("not a PostgreSQL binary COPY stream")
            at = 19 + _INT32.unpack_from(buffer, 15)[0]
            started = True
        view = memoryview(buffer)
        end = len(buffer)
        while at + 2 <= end:
            fields = _INT16.unpack_from(buffer, at)[0]
            if fields == -1:
                finished = True
                break
            pos = at + 2
            row: list[bytes | None] = []
            complete = True
            for _ in range(fields):
                if pos + 4 > end:
                    complete = False
                    break
                size = _INT32.unpack_from(buffer, pos)[0]
                pos += 4
                if size < 0:
                    row.append(None)
                    continue
                if pos + size > end:
                    complete = False
                    break
                row.append(bytes(view[pos:pos + size]))
                pos += size
            if not complete:
                break
            yield tuple(row)
            at = pos
        view.release()
        del buffer[:at]
