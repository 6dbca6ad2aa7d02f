"""$validate at type and instance level (FHIR R4 OperationDefinition Resource-validate): checks a
resource exactly as a write would (hub.fhir.resources.examine: the base specification, the
structure, the IPC profiles; or, with `profile`, that profile instead of the ones in scope) and
answers 200 with an OperationOutcome whether or not it is valid, adding the warnings a write does
not wait for (extensible bindings, best-practice invariants); nothing is stored."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.api import access, paths  # noqa: F401  (registers the path convertors)
from hub.api.formats import fhir_response, read_body, render, response_format
from hub.fhir import jsontext
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.fhir.resources import examine, require_supported
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
    """Every issue a write would be refused for, and the warnings besides."""
    issues, status = examine(resource, res_type, warnings=True, profile=profile)
    if status is None:
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
