"""The terminology operations over HTTP: CodeSystem/$lookup, CodeSystem/$validate-code,
ValueSet/$validate-code and ValueSet/$expand, at type level and (but $lookup) on a stored
instance, by GET (parameters in the query) or POST (a Parameters body). The answers come from
hub.fhir.terminology.operations over the R4 core and the IPC guide held in memory; this module
only reads the request, finds a stored instance and writes the answer.

Terminology is not personal data: any valid token may ask, as it may read the guide's CodeSystems
and ValueSets (hub.search.access CONFORMANCE_TYPES)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.api import access, paths  # noqa: F401  (registers the path convertors)
from hub.api.formats import fhir_response, read_body, render, response_format, wants_pretty
from hub.fhir import jsontext
from hub.fhir.terminology import operations
from hub.fhir.terminology.operations import Inputs
from hub.fhir.validation import terminology
from hub.store import repository

router = APIRouter(prefix="/fhir")

# What the CapabilityStatement lists for these routes (hub.api.capability), by resource type.
CAPABILITIES = {
    "CodeSystem": [{"name": "lookup", "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup"},
                   {"name": "validate-code",
                    "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-validate-code"}],
    "ValueSet": [{"name": "expand", "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"},
                 {"name": "validate-code",
                  "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code"}],
}


async def _inputs(request: Request) -> Inputs:
    if request.method == "POST":
        body = await read_body(request, request.app.state.settings.max_body_bytes)
        return Inputs.from_parameters(body)
    return Inputs.from_query(request.query_params.multi_items())


async def _stored(request: Request, res_type: str, res_id: str) -> dict[str, Any]:
    viewer = access.require(request, res_type, "r")
    async with request.app.state.pool.connection() as conn:
        version = await repository.read(conn, res_type, res_id, viewer=viewer)
    access.disclosed(request, (version,))
    return jsontext.loads(version.content)


def _reply(request: Request, resource: dict[str, Any]) -> Response:
    fmt = response_format(request)
    return fhir_response(render(resource, fmt, pretty=wants_pretty(request)), fmt)


@router.get("/CodeSystem/$lookup")
@router.post("/CodeSystem/$lookup")
async def lookup(request: Request) -> Response:
    access.require(request, "CodeSystem", "r")
    return _reply(request, operations.lookup(terminology(), await _inputs(request)))


@router.get("/CodeSystem/$validate-code")
@router.post("/CodeSystem/$validate-code")
async def code_system_validate_code(request: Request) -> Response:
    access.require(request, "CodeSystem", "r")
    inputs = await _inputs(request)
    return _reply(request, operations.validate_code_in_code_system(terminology(), inputs))


@router.get("/CodeSystem/{res_id:fhirid}/$validate-code")
@router.post("/CodeSystem/{res_id:fhirid}/$validate-code")
async def code_system_instance_validate_code(res_id: str, request: Request) -> Response:
    stored = await _stored(request, "CodeSystem", res_id)
    inputs = await _inputs(request)
    return _reply(request, operations.validate_code_in_code_system(terminology(), inputs, stored))


@router.get("/ValueSet/$validate-code")
@router.post("/ValueSet/$validate-code")
async def value_set_validate_code(request: Request) -> Response:
    access.require(request, "ValueSet", "r")
    return _reply(request, operations.validate_code_in_value_set(terminology(), await _inputs(request)))


@router.get("/ValueSet/{res_id:fhirid}/$validate-code")
@router.post("/ValueSet/{res_id:fhirid}/$validate-code")
async def value_set_instance_validate_code(res_id: str, request: Request) -> Response:
    inputs, value_set = _instance(await _stored(request, "ValueSet", res_id), await _inputs(request))
    return _reply(request, operations.validate_code_in_value_set(terminology(), inputs, value_set))


@router.get("/ValueSet/$expand")
@router.post("/ValueSet/$expand")
async def expand(request: Request) -> Response:
    access.require(request, "ValueSet", "r")
    return _reply(request, operations.expand(terminology(), await _inputs(request)))


@router.get("/ValueSet/{res_id:fhirid}/$expand")
@router.post("/ValueSet/{res_id:fhirid}/$expand")
async def instance_expand(res_id: str, request: Request) -> Response:
    inputs, value_set = _instance(await _stored(request, "ValueSet", res_id), await _inputs(request))
    return _reply(request, operations.expand(terminology(), inputs, value_set))


def _instance(stored: dict[str, Any], inputs: Inputs) -> tuple[Inputs, dict[str, Any] | None]:
    """A stored ValueSet that is the one held in memory (the guide's) is answered by its url, from
    the expansion already worked out; any other is expanded for this request."""
    held = terminology().value_set(stored.get("url") or "")
    if held is not None and {k: v for k, v in held.items() if k != "meta"} == \
            {k: v for k, v in stored.items() if k != "meta"}:
        return Inputs({**inputs.values, "url": [stored["url"]]}), None
    return inputs, stored
