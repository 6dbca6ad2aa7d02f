"""`$export` (FHIR Bulk Data Access 2.0.0): the kick-off at system level (`/$export`), for every
person (`/Patient/$export`) and for a group's members (`/Group/[id]/$export`).

The request is checked at once (hub.exports.kickoff: `Prefer: respond-async`, `_outputFormat`,
`_since`, `_type`, `_typeFilter`, `patient`) and queued as a job that keeps the caller's access;
the answer is 202 with `Content-Location`, the status URL the client polls (hub/api/exports.py).
A runner (hub.exports.runner) writes the files under that same access, so an export holds
exactly what the client may read: its scopes pick the types (`system/*.read` or
`system/[Type].rs`, v1 or v2), and each person's consent, as for a search, picks the rows.

A type named in `_type` that the client may not read is refused (403), never silently dropped;
without `_type`, every type it may read. A Group the client may not read answers 404."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from hub.exports import kickoff
from hub.exports.status import status_url
from hub.fhir import jsontext
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, parameters
from hub.store import exports
from hub.store.resources import read


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    level = "group" if res_type == "Group" else "patient" if res_type == "Patient" else "system"
    pairs, _ = parameters(request)
    body = request.body if isinstance(request.body, dict) else None
    spec = kickoff.read_kickoff(level, pairs, body, request.headers.get("prefer") or "")
    for name in spec.types or []:
        ctx.access.require(name, "r")
    if level != "system":
        ctx.access.require("Patient", "r")
    if level == "group":
        assert res_id is not None
        ctx.access.require("Group", "r")
        async with ctx.reading() as conn:
            group = await read(conn, "Group", res_id, access=ctx.access)
        ctx.touched.append(group)
        members = current_members(jsontext.loads(group.content))
        spec.group_id = res_id
        spec.patients = [p for p in members if spec.patients is None or p in spec.patients]
    principal = ctx.principal
    client_id = principal.client_id if principal is not None else ""
    async with ctx.writing() as conn:
        if principal is not None and await exports.active_count(conn, client_id) >= ctx.settings.export_max_active:
            raise FhirError("throttled", f"this client already has {ctx.settings.export_max_active} exports "
                            "in progress; wait for one to finish or cancel it", status=429,
                            headers={"Retry-After": "30"})
        job_id = await exports.create(
            conn, client_id=client_id, user_ref=principal.user if principal is not None else None,
            request=_request_url(ctx, request), level=level,
            params={**spec.to_params(), "retentionSeconds": ctx.settings.export_retention_s},
            access=kickoff.access_record(ctx.access), created=datetime.now(UTC))
    issues = [Issue("informational", f"export {job_id} accepted; poll the Content-Location for its status",
                    severity="information")]
    issues += [Issue("not-supported", w, severity="warning") for w in spec.warnings]
    return Outcome(202, body=operation_outcome(issues), headers={"Content-Location": status_url(ctx.base, job_id)})


def current_members(group: dict[str, Any]) -> list[str]:
    """Patient ids of a Group's members now: not marked inactive and whose membership period has
    not ended."""
    now = datetime.now(UTC).isoformat()
    found: list[str] = []
    for member in group.get("member") or []:
        ref = (member.get("entity") or {}).get("reference") or ""
        if not ref.startswith("Patient/") or member.get("inactive") is True:
            continue
        end = (member.get("period") or {}).get("end")
        if end and end < now[:len(end)]:
            continue
        patient_id = ref[len("Patient/"):].split("/")[0]
        if patient_id not in found:
            found.append(patient_id)
    return found


def _request_url(ctx: Context, request: FhirRequest) -> str:
    query = urlencode(request.query) if request.query else ""
    return f"{ctx.base}/{request.path}" + (f"?{query}" if query else "")


OPERATION = Operation(
    name="export",
    definition="http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    levels=frozenset({"system", "type", "instance"}),
    types_by_level=(("type", frozenset({"Patient"})), ("instance", frozenset({"Group"}))),
    definitions=(("Patient", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"),
                 ("Group", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export")),
    run=run,
    documentation="Bulk Data export (asynchronous, NDJSON): everything the client may read, for the system, "
                  "every person or a group's members; `_type`, `_since`, `_typeFilter`, `_outputFormat`, "
                  "`patient`. Poll the Content-Location.",
)
