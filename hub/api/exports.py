"""The Bulk Data export's status URL and file URLs, as HTTP (the kick-off is the `$export`
operation in the registry). What each answers is decided in hub.exports.status; this module
only translates: the manifest as `application/json`, OperationOutcomes as FHIR JSON, files
streamed from disk as `application/fhir+ndjson`. A file's download is audited naming every
person whose data it holds."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from hub.api import access
from hub.api.formats import JSON, fhir_response, render
from hub.exports import status
from hub.fhir import jsontext
from hub.fhir.errors import FhirError

router = APIRouter(prefix="/fhir/bulk-export", tags=["Bulk Data"])


def _answer(answer: status.Answer) -> Response:
    if not answer.fhir:
        return Response(jsontext.dumps(answer.body or {}), status_code=answer.status, headers=answer.headers,
                        media_type="application/json")
    if answer.body is None:
        return Response(status_code=answer.status, headers=answer.headers)
    return fhir_response(render(answer.body, JSON), JSON, status=answer.status, headers=answer.headers)


@router.get("/{job_id}", summary="Bulk Data export status (202 in progress, 200 with the manifest)")
async def export_status(job_id: str, request: Request) -> Response:
    access.of(request)  # refuses a request that escaped authentication
    async with request.app.state.pool.connection() as conn:
        answer = await status.status(conn, job_id, access.principal(request), request.app.state.base_url)
    return _answer(answer)


@router.delete("/{job_id}", summary="Cancel a Bulk Data export, or remove a finished one's files")
async def export_cancel(job_id: str, request: Request) -> Response:
    access.of(request)
    async with request.app.state.pool.connection() as conn:
        answer = await status.cancel(conn, job_id, access.principal(request))
    return _answer(answer)


@router.get("/{job_id}/{name}", summary="One NDJSON file of a completed Bulk Data export")
async def export_file(job_id: str, name: str, request: Request) -> Response:
    access.of(request)
    async with request.app.state.pool.connection() as conn:
        found = await status.download(conn, job_id, name, access.principal(request))
    path = Path(request.app.state.settings.exports_folder()) / job_id / found.name
    if not path.is_file():
        raise FhirError("not-found", f"export {job_id[:40]} has no file {name[:60]} any more", status=404)
    state = request.scope.setdefault("state", {})
    state.setdefault("audit_patients", set()).update(found.patients)
    # The file, by its absolute URL (a Reference may be one), beside everyone whose data it holds.
    state.setdefault("audit_entities", []).append(f"{status.status_url(request.app.state.base_url, job_id)}/{found.name}")
    return FileResponse(path, media_type="application/fhir+ndjson", filename=None)
