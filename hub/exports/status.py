"""What the status URL and the file URLs of a Bulk Data export answer (Bulk Data Access 2.0.0):
in progress 202 with `X-Progress` and `Retry-After`; failed 500 with an OperationOutcome;
complete 200 with the manifest and `Expires`; cancelled, expired or unknown 404.

Only the client that kicked an export off (and, for an app, the same signed-in person) may poll
it, cancel it or download its files: to anyone else it answers exactly as an unknown export."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from email.utils import format_datetime
from typing import Any

from psycopg import AsyncConnection

from hub.auth.principal import Principal
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.store import exports
from hub.store.exports import ExportFile, Job
from hub.store.resources import instant

RETRY_AFTER_S = 2


@dataclass(slots=True)
class Answer:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    fhir: bool = True  # an OperationOutcome (application/fhir+json); False: the manifest (application/json)


def status_url(base: str, job_id: str) -> str:
    return f"{base}/bulk-export/{job_id}"


async def owned_job(conn: AsyncConnection, job_id: str, principal: Principal | None) -> Job:
    """The job, if this caller kicked it off; otherwise 404 as for an export that never was."""
    job = await exports.get(conn, job_id)
    if job is None or job.status == "cancelled" or not _owner(job, principal):
        raise FhirError("not-found", f"there is no export {job_id[:40]} for this client (it may have been "
                        "cancelled or have expired)", status=404)
    return job


def _owner(job: Job, principal: Principal | None) -> bool:
    if principal is None:  # authorisation off (measuring only): the job was made without a client too
        return job.client_id == ""
    return job.client_id == principal.client_id and job.user_ref == principal.user


async def status(conn: AsyncConnection, job_id: str, principal: Principal | None, base: str) -> Answer:
    job = await owned_job(conn, job_id, principal)
    if job.status in ("queued", "running"):
        progress = job.progress or ("waiting to start" if job.status == "queued" else "starting")
        return Answer(202, None, {"X-Progress": progress[:100], "Retry-After": str(RETRY_AFTER_S)})
    if job.status == "failed":
        outcome = operation_outcome([Issue("exception", job.error or "the export failed")])
        return Answer(500, outcome)
    files = await exports.files(conn, job.id)
    headers = {"Expires": format_datetime(job.expires.astimezone(UTC), usegmt=True)} if job.expires else {}
    return Answer(200, manifest(job, files, base), headers, fhir=False)


def manifest(job: Job, files: list[ExportFile], base: str) -> dict[str, Any]:
    """The complete-status body: transactionTime, request, requiresAccessToken, output, deleted
    (when `_since` was given) and error."""
    def item(f: ExportFile) -> dict[str, Any]:
        return {"type": f.res_type, "url": f"{status_url(base, job.id)}/{f.name}", "count": f.count}

    body: dict[str, Any] = {
        "transactionTime": instant(job.transaction_time) if job.transaction_time else None,
        "request": job.request,
        "requiresAccessToken": True,
        "output": [item(f) for f in files if f.kind == "output"],
        "error": [item(f) for f in files if f.kind == "error"],
    }
    if job.params.get("since"):
        body["deleted"] = [item(f) for f in files if f.kind == "deleted"]
    return body


async def cancel(conn: AsyncConnection, job_id: str, principal: Principal | None) -> Answer:
    """DELETE on the status URL: a running export stops, a finished one's files are removed; the
    status URL answers 404 from then on."""
    job = await owned_job(conn, job_id, principal)
    await exports.cancel(conn, job.id)
    note = operation_outcome([Issue("informational", f"export {job.id} cancelled; its files will be removed",
                                    severity="information")])
    return Answer(202, note)


async def download(conn: AsyncConnection, job_id: str, name: str, principal: Principal | None) -> ExportFile:
    """The file of a completed export (404 for anything else, or anyone else)."""
    job = await owned_job(conn, job_id, principal)
    found = await exports.file(conn, job.id, name) if job.status == "completed" else None
    if found is None:
        raise FhirError("not-found", f"export {job_id[:40]} has no file {name[:60]}", status=404)
    return found
