"""The FHIR REST API at /fhir, as HTTP: each route reads the request (path, query, headers, a
body in JSON or XML, a search form), hands it to the interaction core (hub.interactions.router)
with the caller's context, and writes the outcome back (status, ETag, Last-Modified,
Location, Prefer: return=…, the client's format). What each interaction does lives in the core,
the same for an HTTP request as for a Bundle entry; nothing here decides it."""
from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.api import access, paths  # noqa: F401  (paths registers the path convertors)
from hub.api.formats import (
    fhir_response,
    read_body,
    render,
    render_text,
    response_format,
    wants_pretty,
)
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.router import handle

router = APIRouter(prefix="/fhir")
_PREFIX = len("/fhir/")


def context(request: Request) -> Context:
    """The caller's context for the core: its access, principal, the settings and the database."""
    state = request.app.state
    return Context(access.of(request), state.settings, state.base_url, state.database,
                   access.principal(request))


async def serve(request: Request, body: str = "none") -> Response:
    """Run the request through the core. `body`: "none" (GET, DELETE), "resource" (a FHIR body
    is required), "form" (a search form whose fields join the query), "optional" (an operation:
    a FHIR body, a form, or nothing)."""
    query = list(request.query_params.multi_items()) if request.scope["query_string"] else []
    resource = None
    if body == "resource":
        resource = await read_body(request, request.app.state.settings.max_body_bytes)
    elif body in ("form", "optional"):
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            query += await _form(request)
        elif body == "form":
            raise FhirError("not-supported", "POST _search takes application/x-www-form-urlencoded",
                            status=415)
        elif _has_body(request):
            resource = await read_body(request, request.app.state.settings.max_body_bytes)
    ctx = context(request)
    fhir_request = FhirRequest(request.method, request.scope["path"][_PREFIX:], query, request.headers,
                               resource)
    outcome = await handle(ctx, fhir_request)
    access.disclosed(request, ctx.touched)
    return respond(request, ctx, outcome)


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in request.headers


async def _form(request: Request) -> list[tuple[str, str]]:
    body = await request.body()
    if len(body) > request.app.state.settings.max_body_bytes:
        raise FhirError("too-long", "the form is too large", status=413)
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise FhirError("structure", "the form is not UTF-8") from None


def respond(request: Request, ctx: Context, outcome: Outcome) -> Response:
    """The outcome as HTTP: the status, its headers, and the body in the client's format, shaped
    for a write by the client's Prefer: return=…"""
    headers = outcome.headers
    version = outcome.version
    if outcome.created and version is not None:
        headers = {**headers, "Location": f"{ctx.base}/{version.res_type}/{version.res_id}"
                                          f"/_history/{version.version}"}
    if outcome.status in (204, 304):
        return Response(status_code=outcome.status, headers=headers)
    fmt = response_format(request)
    if outcome.wrote and version is not None:
        prefer = request.headers.get("prefer", "")
        if "return=minimal" in prefer:
            return Response(status_code=outcome.status, headers=headers)
        if "return=OperationOutcome" in prefer:
            note = operation_outcome([Issue("informational", f"{version.reference} stored as version "
                                            f"{version.version}", severity="information")])
            return fhir_response(render(note, fmt), fmt, status=outcome.status, headers=headers)
    pretty = wants_pretty(request)
    if version is not None:
        text = render_text(version.content, fmt, pretty=pretty)
    elif isinstance(outcome.body, bytes):
        text = render_text(outcome.body, fmt, pretty=pretty)
    else:
        text = render(outcome.body or {}, fmt, pretty=pretty)
    return fhir_response(text, fmt, status=outcome.status, headers=headers)


# --- instance level -------------------------------------------------------------------------


# The read is the hottest route: it is defined (and so matched) first, and its path parameters are
# read by the core from the path instead of being declared, which skips FastAPI's per-parameter
# resolution (~8% of a read here); openapi_extra still documents them.
def _path_parameters(*names: str) -> dict:
    described = {"res_type": "FHIR resource type", "res_id": "logical id", "version_id": "version"}
    return {"parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"},
                            "description": described[n]} for n in names]}


@router.get("/{res_type:fhirtype}/{res_id:fhirid}", openapi_extra=_path_parameters("res_type", "res_id"))
async def read(request: Request) -> Response:
    return await serve(request)


@router.get("/{res_type:fhirtype}/{res_id:fhirid}/_history/{version_id}",
            openapi_extra=_path_parameters("res_type", "res_id", "version_id"))
async def vread(request: Request) -> Response:
    return await serve(request)


@router.get("/{res_type:fhirtype}/{res_id:fhirid}/_history", openapi_extra=_path_parameters("res_type", "res_id"))
async def instance_history(request: Request) -> Response:
    return await serve(request)


@router.get("/{res_type:fhirtype}/_history", openapi_extra=_path_parameters("res_type"))
async def type_history(request: Request) -> Response:
    return await serve(request)


@router.get("/_history")
async def system_history(request: Request) -> Response:
    return await serve(request)


@router.put("/{res_type}/{res_id}", openapi_extra=_path_parameters("res_type", "res_id"))
async def update(request: Request) -> Response:
    return await serve(request, "resource")


@router.delete("/{res_type:fhirtype}/{res_id:fhirid}", openapi_extra=_path_parameters("res_type", "res_id"))
async def delete(request: Request) -> Response:
    return await serve(request)


# --- type level -----------------------------------------------------------------------------


@router.post("/{res_type:fhirtype}", openapi_extra=_path_parameters("res_type"))
async def create(request: Request) -> Response:
    """Create; conditional with If-None-Exist or with search criteria on the URL."""
    return await serve(request, "resource")


@router.put("/{res_type:fhirtype}", openapi_extra=_path_parameters("res_type"))
async def conditional_update(request: Request) -> Response:
    return await serve(request, "resource")


@router.get("/{res_type:fhirtype}", openapi_extra=_path_parameters("res_type"))
async def search_get(request: Request) -> Response:
    return await serve(request)


@router.post("/{res_type:fhirtype}/_search", openapi_extra=_path_parameters("res_type"))
async def search_post(request: Request) -> Response:
    return await serve(request, "form")


# --- system level ---------------------------------------------------------------------------


@router.post("")
@router.post("/")
async def transaction_or_batch(request: Request) -> Response:
    return await serve(request, "resource")
