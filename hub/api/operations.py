"""$validate at type and instance level (FHIR R4 OperationDefinition Resource-validate): checks a
resource against its structure and the IPC profiles (or the one named by `profile`) and answers
200 with an OperationOutcome whether or not it is valid; nothing is stored."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.api import access, paths  # noqa: F401  (registers the path convertors)
from hub.api.formats import fhir_response, read_body, render, response_format
from hub.fhir import jsontext
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.fhir.resources import check_structure, require_supported
from hub.fhir.validation import validate
from hub.store import repository

router = APIRouter(prefix="/fhir")


def _from_parameters(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    resource = profile = None
    for param in body.get("parameter", []):
        if param.get("name") == "resource":
            resource = param.get("resource")
        elif param.get("name") == "profile":
            profile = param.get("valueUri") or param.get("valueCanonical")
    return resource, profile


def validation_outcome(resource: Any, res_type: str, profile: str | None) -> dict[str, Any]:
    """Every issue found: structural first (they stop the check), then profile issues."""
    try:
        if profile is None:
            check_structure(resource, res_type)
            issues: list[Issue] = [i for i in validate(resource) if i.severity != "error"]
        else:
            try:
                check_structure(resource, res_type)
            except FhirError as exc:
                if exc.status != 422:
                    raise
            issues = validate(resource, profile)
    except FhirError as exc:
        issues = exc.issues
    if not any(i.severity == "error" for i in issues):
        issues.append(Issue("informational", f"{res_type} is valid" + (f" against {profile}" if profile else ""),
                            severity="information"))
    return operation_outcome(issues)


async def _answer(request: Request, res_type: str, stored: dict[str, Any] | None) -> Response:
    profile = request.query_params.get("profile")
    resource = stored
    if request.method == "POST":
        body = await read_body(request, request.app.state.settings.max_body_bytes)
        if body.get("resourceType") == "Parameters":
            supplied, named = _from_parameters(body)
            resource, profile = supplied or stored, named or profile
        else:
            resource = body
    if resource is None:
        raise FhirError("required", "$validate needs a resource: in the body or as the Parameters 'resource'")
    fmt = response_format(request)
    return fhir_response(render(validation_outcome(resource, res_type, profile), fmt), fmt)


@router.post("/{res_type:fhirtype}/$validate")
async def validate_type(res_type: str, request: Request) -> Response:
    """Needs create or update on the type: validating is what a client does before writing."""
    require_supported(res_type)
    access.require_either(request, res_type, "cu")
    return await _answer(request, res_type, None)


@router.get("/{res_type:fhirtype}/{res_id:fhirid}/$validate")
async def validate_instance(res_type: str, res_id: str, request: Request) -> Response:
    require_supported(res_type)
    access.require_either(request, res_type, "cu")
    viewer = access.require(request, res_type, "r")  # it also reads the stored resource
    async with request.app.state.pool.connection() as conn:
        version = await repository.read(conn, res_type, res_id, viewer=viewer)
    access.disclosed(request, (version,))
    return await _answer(request, res_type, jsontext.loads(version.content))


@router.post("/{res_type:fhirtype}/{res_id:fhirid}/$validate")
async def validate_instance_post(res_type: str, res_id: str, request: Request) -> Response:
    return await validate_instance(res_type, res_id, request)
