"""The export runner: takes queued Bulk Data export jobs and writes their NDJSON files.

Each job is read in one REPEATABLE READ, READ ONLY transaction (one snapshot for every type, so
the files agree with each other and with `transactionTime`), type by type, with the caller's
consent filter in each query (hub.search.sql.build_rows_sql): the export holds exactly what the
client may read, as a search by that client would. Rows stream from PostgreSQL as binary COPY
straight into files of at most `file_resources` resources each, so memory stays bounded by one
chunk whatever the export's size. Between chunks the runner renews its lease and notes its
progress; a cancelled job stops there and its files are removed.

Jobs are claimed from the table with SKIP LOCKED and a lease, so several runners (one per API
process by default, or `ipc-hub worker exporter` processes) share the queue, and a job whose
runner died is taken over when its lease runs out. Expired and cancelled jobs' files are
removed by whichever runner sweeps first.

A runner's thread is scheduled below the rest of its process (`niceness`, HUB_EXPORT_NICENESS):
an export is work that can wait, reads by id beside it cannot (make bench, section cohorts).
`ipc-hub up` runs exports in the exporter worker's process, not the API's, for the same reason."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson
import psycopg
from psycopg import IsolationLevel

from hub.exports.kickoff import NOT_EXPORTED, ExportSpec, access_from_record
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.fhir.resources import SUPPORTED_TYPES
from hub.search.access import Access
from hub.search.parse import parse_criteria
from hub.search.sql import build_rows_sql
from hub.store import exports
from hub.store.exports import ExportFile, Job

log = logging.getLogger(__name__)

# A deleted resource's id and when it was deleted, as a FHIR instant in UTC.
_DELETED_COLUMNS = ("r.patient_id, r.res_id, "
                    "to_char(r.last_updated AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")


class Cancelled(Exception):
    """The job was cancelled (or taken over) while it ran."""


class ExportRunner:
    name = "exporter"

    def __init__(self, database_url: str, directory: Path, *, file_resources: int = 100_000,
                 retention_s: float = 3600.0, lease_s: float = 30.0, check_every: int = 20_000,
                 niceness: int = 0) -> None:
        self.database_url = database_url
        self.directory = directory
        self.file_resources = file_resources
        self.retention_s = retention_s
        self.lease_s = lease_s
        self.check_every = check_every
        self.niceness = niceness
        self.last_loop = time.monotonic()
        self.connected = False

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < max(60.0, self.lease_s * 2)

    def ready(self) -> bool:
        return self.alive() and self.connected

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run jobs until `stop` is set; a database outage is waited out."""
        _lower_priority(self.niceness)
        delay = 0.1
        while not stop.is_set():
            self.last_loop = time.monotonic()
            try:
                self._serve(stop)
                delay = 0.1
            except psycopg.OperationalError as exc:
                self.connected = False
                log.warning("export runner: database unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _serve(self, stop: threading.Event) -> None:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as control:
            control.execute("LISTEN bulk_export")
            self.connected = True
            while not stop.is_set():
                self.last_loop = time.monotonic()
                self.sweep(control)
                job = exports.claim(control, self.lease_s)
                if job is not None:
                    self.run_job(control, job)
                    continue
                for _ in control.notifies(timeout=1.0, stop_after=1):
                    pass

    def run_once(self) -> int:
        """Run every job waiting now, then return how many ran (for tests and the bench)."""
        ran = 0
        with psycopg.connect(self.database_url, autocommit=True) as control:
            self.sweep(control)
            while (job := exports.claim(control, self.lease_s)) is not None:
                self.run_job(control, job)
                ran += 1
        return ran

    def sweep(self, control: psycopg.Connection) -> None:
        for job_id in exports.gone(control):
            shutil.rmtree(self.directory / job_id, ignore_errors=True)

    # --- one job ----------------------------------------------------------------------------

    def run_job(self, control: psycopg.Connection, job: Job) -> None:
        folder = self.directory / job.id
        shutil.rmtree(folder, ignore_errors=True)  # a taken-over job starts again from nothing
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            tt, written = self._export(control, job, folder)
        except Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("export %s stopped: cancelled", job.id)
            return
        except Exception as exc:  # noqa: BLE001 - any failure fails the job, with its kind only
            shutil.rmtree(folder, ignore_errors=True)
            log.error("export %s failed: %s", job.id, type(exc).__name__)
            exports.fail(control, job.id, f"the export failed ({type(exc).__name__}); ask for it again",
                         _retention(job, self.retention_s))
            return
        if not exports.finish(control, job.id, tt, written, _retention(job, self.retention_s)):
            shutil.rmtree(folder, ignore_errors=True)
            return
        total = sum(f.count for f in written if f.kind == "output")
        log.info("export %s complete: %d resources in %d files, %.1f s", job.id, total, len(written),
                 time.monotonic() - started)

    def _export(self, control: psycopg.Connection, job: Job, folder: Path) -> tuple[datetime, list[ExportFile]]:
        spec = ExportSpec.from_params(job.level, job.params)
        access = access_from_record(job.access)
        types = export_types(spec, access)
        written: list[ExportFile] = []
        problems: list[Issue] = [Issue("not-supported", w, severity="warning") for w in spec.warnings]
        with psycopg.connect(self.database_url) as reader:
            reader.isolation_level = IsolationLevel.REPEATABLE_READ
            reader.read_only = True
            with reader.transaction():
                tt = exports.transaction_time(reader)
                for n, res_type in enumerate(types):
                    filters = []
                    for query in spec.type_filters.get(res_type, []):
                        try:
                            filters.append(parse_criteria(res_type, query, where=f"the filter on {res_type}"))
                        except FhirError as exc:  # checked at kick-off; a definition may have changed
                            problems.append(Issue("invalid", exc.issues[0].diagnostics))
                    if spec.type_filters.get(res_type) and not filters:
                        continue
                    sql, params = build_rows_sql(
                        res_type, "r.patient_id, r.content::text", access=access, filters=filters,
                        since=spec.since, patients=spec.patients, in_a_record=spec.level != "system")
                    written += self._write_type(control, job, folder, reader, res_type, sql, params,
                                                f"{res_type} ({n + 1} of {len(types)} types)")
                if spec.since is not None:
                    for res_type in types:
                        sql, params = build_rows_sql(
                            res_type, _DELETED_COLUMNS, access=access,
                            since=spec.since, patients=spec.patients, in_a_record=spec.level != "system",
                            deleted=True)
                        written += self._write_deleted(folder, reader, res_type, sql, params)
        if problems:
            body = orjson.dumps(operation_outcome(problems)) + b"\n"
            (folder / "errors.ndjson").write_bytes(body)
            written.append(ExportFile("errors.ndjson", "error", "OperationOutcome", 1, len(body), []))
        return tt, written

    def _write_type(self, control: psycopg.Connection, job: Job, folder: Path, reader: psycopg.Connection,
                    res_type: str, sql: str, params: list, where: str) -> list[ExportFile]:
        files: list[ExportFile] = []
        out = None
        count = size = 0
        patients: set[str] = set()
        since_check = 0
        total = 0

        def close() -> None:
            nonlocal out
            if out is not None:
                out.close()
                files.append(ExportFile(name, "output", res_type, count, size, sorted(patients)))
                out = None

        try:
            for patient_id, content in exports.stream(reader, sql, params):
                if out is None or count >= self.file_resources:
                    close()
                    name = f"{res_type}-{len(files) + 1}.ndjson"
                    out = open(folder / name, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
                    count = size = 0
                    patients = set()
                if b"\n" in content or b"\r" in content:
                    # Only whitespace between tokens can be a raw line break in JSON text.
                    content = content.replace(b"\r", b"").replace(b"\n", b"")
                out.write(content)
                out.write(b"\n")
                count += 1
                total += 1
                size += len(content) + 1
                if patient_id is not None:
                    patients.add(patient_id.decode())
                since_check += 1
                if since_check >= self.check_every:
                    since_check = 0
                    if not exports.still_ours(control, job.id, self.lease_s, f"{where}: {total} resources"):
                        raise Cancelled
            close()
        finally:
            if out is not None:
                out.close()
        if not exports.still_ours(control, job.id, self.lease_s, f"{where}: {total} resources"):
            raise Cancelled
        return files

    def _write_deleted(self, folder: Path, reader: psycopg.Connection, res_type: str, sql: str,
                       params: list) -> list[ExportFile]:
        """Resources deleted since `_since`: each a line holding a transaction Bundle with one
        DELETE entry, as the specification's `deleted` array asks."""
        name = f"deleted-{res_type}.ndjson"
        count = size = 0
        patients: set[str] = set()
        with open(folder / name, "wb", buffering=1 << 20) as out:
            for patient_id, res_id, when in exports.stream(reader, sql, params):
                line = orjson.dumps({
                    "resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"lastUpdated": when.decode()},
                    "type": "transaction",
                    "entry": [{"request": {"method": "DELETE", "url": f"{res_type}/{res_id.decode()}"}}]}) + b"\n"
                out.write(line)
                count += 1
                size += len(line)
                if patient_id is not None:
                    patients.add(patient_id.decode())
        if not count:
            (folder / name).unlink()
            return []
        return [ExportFile(name, "deleted", "Bundle", count, size, sorted(patients))]


def _lower_priority(niceness: int) -> None:
    """Schedule the calling thread `niceness` steps below where it is (on Linux a thread has a
    priority of its own: the API's event loop keeps its own). Raising it back needs privileges
    a runner does not have, so this is done once, in the runner's own thread."""
    if niceness <= 0:
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    except (OSError, AttributeError) as exc:  # not Linux, or not allowed: run at the process's priority
        log.warning("export runner: could not lower its priority (%s)", type(exc).__name__)


def _retention(job: Job, default: float) -> float:
    """How long the finished job's files are kept: as the API that accepted it was configured."""
    kept = job.params.get("retentionSeconds")
    return float(kept) if isinstance(kept, (int, float)) else default


def export_types(spec: ExportSpec, access: Access) -> list[str]:
    """The types an export reads: those asked for (`_type`, each checked at kick-off against the
    client's scopes), else every supported type the client may read."""
    if spec.types is not None:
        return list(spec.types)
    candidates = sorted(t for t in SUPPORTED_TYPES if t not in NOT_EXPORTED)
    readable = access.types_with("r", candidates)
    return candidates if readable is None else readable
