"""The FHIR REST interactions at /fhir: read, vread, create (and conditional create), update,
delete, history, search, and transaction/batch Bundles. HTTP details live here (status,
ETag, Location, Prefer, If-Match); what each interaction does to the record lives in
hub.store."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from psycopg import AsyncConnection
from starlette.responses import Response

from hub.api import access, bundles, paths  # noqa: F401  (paths registers the path convertors)
from hub.api.formats import (
    fhir_response,
    read_body,
    render,
    render_text,
    response_format,
    wants_pretty,
)
from hub.audit.provenance import client_write
from hub.fhir.errors import FhirError, Issue, not_found, operation_outcome
from hub.fhir.resources import check_structure, require_supported, require_valid_id
from hub.search.definitions import resource_types
from hub.search.parse import SearchRequest, parse_search
from hub.store import repository, transactions
from hub.store.repository import Version, instant, version_from_etag

router = APIRouter(prefix="/fhir")


def _pool(request: Request):
    return request.app.state.pool


def _settings(request: Request):
    return request.app.state.settings


def _base(request: Request) -> str:
    return request.app.state.base_url


@asynccontextmanager
async def _writing(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection inside one database transaction: the interaction commits or rolls back whole.
    (Reads use the pool's autocommit connections directly: one round trip each.)"""
    async with _pool(request).connection() as conn, conn.transaction():
        yield conn


_ACTIVITY = {"POST": "CREATE", "PUT": "UPDATE", "DELETE": "DELETE"}


async def _attribute(request: Request, conn: AsyncConnection, written: list[Version]) -> None:
    """Provenance naming the client, its organisation and partner class for what this request
    wrote, in the write's own transaction (one per kind of write), as the recorder names the feed
    for what a message wrote: so every fact in the record can be traced to whoever said it."""
    principal = getattr(request.state, "principal", None)
    if principal is None or not written:
        return  # only with authentication switched off, to measure what it costs
    by_activity: dict[str, list[str]] = {}
    for v in written:
        if v.method in _ACTIVITY:
            by_activity.setdefault(_ACTIVITY[v.method], []).append(f"{v.res_type}/{v.res_id}/_history/{v.version}")
    for activity, targets in sorted(by_activity.items()):
        proof = client_write(targets, activity, principal)
        await repository.update(conn, "Provenance", proof["id"], proof, skip_unchanged=True)


def version_headers(version: Version) -> dict[str, str]:
    return {
        "ETag": version.etag,
        "Last-Modified": version.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }


def _resource_response(request: Request, version: Version, *, status: int, location: bool) -> Response:
    """The answer to a write, shaped by the client's Prefer: return=…"""
    fmt = response_format(request)
    headers = version_headers(version)
    if location:
        headers["Location"] = (f"{_base(request)}/{version.res_type}/{version.res_id}"
                               f"/_history/{version.version}")
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        return Response(status_code=status, headers=headers)
    if "return=OperationOutcome" in prefer:
        outcome = operation_outcome([Issue("informational", f"{version.reference} stored as version "
                                           f"{version.version}", severity="information")])
        return fhir_response(render(outcome, fmt), fmt, status=status, headers=headers)
    body = render_text(version.content, fmt, pretty=wants_pretty(request))
    return fhir_response(body, fmt, status=status, headers=headers)


# --- instance level -------------------------------------------------------------------------


# The read is the hottest route: it is defined (and so matched) first, and its path parameters are
# taken from the request instead of being declared, which skips FastAPI's per-parameter
# resolution (~8% of a read here); openapi_extra still documents them.
_READ_PARAMETERS = {"parameters": [
    {"name": "res_type", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "FHIR resource type"},
    {"name": "res_id", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "logical id"},
]}


@router.get("/{res_type:fhirtype}/{res_id:fhirid}", openapi_extra=_READ_PARAMETERS)
async def read(request: Request) -> Response:
    res_type = request.path_params["res_type"]
    res_id = request.path_params["res_id"]
    require_supported(res_type)
    viewer = access.require(request, res_type, "r")
    async with _pool(request).connection() as conn:
        version = await repository.read(conn, res_type, res_id, viewer=viewer)
    access.disclosed(request, (version,))
    headers = version_headers(version)
    if request.headers.get("if-none-match") == version.etag:
        return Response(status_code=304, headers=headers)
    fmt = response_format(request)
    return fhir_response(render_text(version.content, fmt, pretty=wants_pretty(request)), fmt,
                         headers=headers)


@router.get("/{res_type:fhirtype}/{res_id:fhirid}/_history/{version_id}")
async def vread(res_type: str, res_id: str, version_id: str, request: Request) -> Response:
    require_supported(res_type)
    if not version_id.isdigit():
        raise FhirError("not-found", f"'{version_id[:40]}' is not a version of {res_type}/{res_id}")
    viewer = access.require(request, res_type, "r")
    async with _pool(request).connection() as conn:
        version = await repository.vread(conn, res_type, res_id, int(version_id), viewer=viewer)
    access.disclosed(request, (version,))
    fmt = response_format(request)
    return fhir_response(render_text(version.content, fmt, pretty=wants_pretty(request)), fmt,
                         headers=version_headers(version))


@router.get("/{res_type:fhirtype}/{res_id:fhirid}/_history")
async def instance_history(res_type: str, res_id: str, request: Request) -> Response:
    require_supported(res_type)
    viewer = access.require(request, res_type, "r")
    async with _pool(request).connection() as conn:
        if await repository.current_version(conn, res_type, res_id, viewer=viewer) is None:
            raise not_found(res_type, res_id)
        return await _history(request, conn, viewer, res_type=res_type, res_id=res_id)


@router.get("/{res_type:fhirtype}/_history")
async def type_history(res_type: str, request: Request) -> Response:
    require_supported(res_type)
    viewer = access.require(request, res_type, "s")
    async with _pool(request).connection() as conn:
        return await _history(request, conn, viewer, res_type=res_type)


@router.get("/_history")
async def system_history(request: Request) -> Response:
    viewer = access.viewer(request)
    types = access.searchable_types(viewer, resource_types())
    async with _pool(request).connection() as conn:
        return await _history(request, conn, viewer, types=types)


@router.put("/{res_type}/{res_id}")
async def update(res_type: str, res_id: str, request: Request) -> Response:
    require_supported(res_type)
    require_valid_id(res_id)
    resource = check_structure(await read_body(request, _settings(request).max_body_bytes), res_type)
    if resource.get("id") is None:
        raise FhirError("invalid", f"the body has no id; an update of {res_type}/{res_id} must carry "
                        f"id '{res_id}'", expression=f"{res_type}.id")
    if resource["id"] != res_id:
        raise FhirError("invalid", f"the body's id '{resource['id']}' does not match the URL's id "
                        f"'{res_id}'", expression=f"{res_type}.id")
    if_match = version_from_etag(request.headers.get("if-match"))
    viewer = access.require(request, res_type, "u")
    async with _writing(request) as conn:
        version, created = await repository.update(conn, res_type, res_id, resource, if_match=if_match,
                                                   viewer=viewer)
        _created_needs_c(request, res_type, created)
        await _attribute(request, conn, [version])
    access.disclosed(request, (version,))
    return _resource_response(request, version, status=201 if created else 200, location=created)


def _created_needs_c(request: Request, res_type: str, created: bool) -> None:
    """An update that turned out to create needs the create scope too (raised inside the
    transaction, so nothing is kept)."""
    if created:
        access.require(request, res_type, "c")


@router.delete("/{res_type:fhirtype}/{res_id:fhirid}")
async def delete(res_type: str, res_id: str, request: Request) -> Response:
    require_supported(res_type)
    if_match = version_from_etag(request.headers.get("if-match"))
    viewer = access.require(request, res_type, "d")
    async with _writing(request) as conn:
        deleted = await repository.delete(conn, res_type, res_id, if_match=if_match, viewer=viewer)
        await _attribute(request, conn, [deleted] if deleted else [])
    if deleted:
        access.disclosed(request, (deleted,))
    headers = {"ETag": deleted.etag} if deleted else {}
    return Response(status_code=204, headers=headers)


# --- type level -----------------------------------------------------------------------------


@router.post("/{res_type:fhirtype}")
async def create(res_type: str, request: Request) -> Response:
    require_supported(res_type)
    resource = check_structure(await read_body(request, _settings(request).max_body_bytes), res_type)
    condition = request.headers.get("if-none-exist")
    viewer = access.require(request, res_type, "c", *("s" if condition else ""))
    async with _writing(request) as conn:
        if condition:
            existing = await transactions.find_one_for_condition(conn, res_type, condition, viewer=viewer)
            if existing is not None:
                access.disclosed(request, (existing,))
                return _resource_response(request, existing, status=200, location=False)
        version = await repository.create(conn, resource, viewer=viewer)
        await _attribute(request, conn, [version])
    access.disclosed(request, (version,))
    return _resource_response(request, version, status=201, location=True)


@router.put("/{res_type:fhirtype}")
async def conditional_update(res_type: str, request: Request) -> Response:
    require_supported(res_type)
    criteria = request.url.query
    if not criteria:
        raise FhirError("invalid", f"PUT /{res_type} needs search criteria (conditional update) or "
                        f"an id: PUT /{res_type}/[id]", status=405)
    resource = check_structure(await read_body(request, _settings(request).max_body_bytes), res_type)
    viewer = access.require(request, res_type, "u", "s")
    async with _writing(request) as conn:
        version, created = await transactions.conditional_update(conn, res_type, criteria, resource,
                                                                 viewer=viewer)
        _created_needs_c(request, res_type, created)
        await _attribute(request, conn, [version])
    access.disclosed(request, (version,))
    return _resource_response(request, version, status=201 if created else 200, location=created)


@router.get("/{res_type:fhirtype}")
async def search_get(res_type: str, request: Request) -> Response:
    require_supported(res_type)
    return await _search(request, res_type, list(request.query_params.multi_items()))


@router.post("/{res_type:fhirtype}/_search")
async def search_post(res_type: str, request: Request) -> Response:
    require_supported(res_type)
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise FhirError("not-supported", "POST _search takes application/x-www-form-urlencoded",
                        status=415)
    body = await request.body()
    if len(body) > _settings(request).max_body_bytes:
        raise FhirError("too-long", "the search form is too large", status=413)
    try:
        form = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise FhirError("structure", "the search form is not UTF-8") from None
    pairs = list(request.query_params.multi_items()) + form
    return await _search(request, res_type, pairs)


# --- system level ---------------------------------------------------------------------------


@router.post("")
@router.post("/")
async def transaction_or_batch(request: Request) -> Response:
    bundle = await read_body(request, _settings(request).max_body_bytes)
    if bundle.get("resourceType") != "Bundle":
        raise FhirError("invalid", "POST to the server base takes a Bundle of type transaction or batch",
                        expression="resourceType")
    viewer = access.viewer(request)
    async with _writing(request) as conn:
        reply, touched, written = await transactions.process(conn, bundle, _settings(request), _base(request),
                                                             viewer=viewer)
        await _attribute(request, conn, written)
    access.disclosed(request, touched)
    fmt = response_format(request)
    return fhir_response(render(reply, fmt, pretty=wants_pretty(request)), fmt)


# --- shared ---------------------------------------------------------------------------------


def page_window(request: Request) -> tuple[int, int]:
    settings = _settings(request)
    count, offset = settings.default_page_size, 0
    raw_count = request.query_params.get("_count")
    raw_offset = request.query_params.get("_offset")
    # ASCII digits only, at most 18 of them: what a SQL bigint LIMIT / OFFSET can take.
    if raw_count is not None:
        if not (raw_count.isascii() and raw_count.isdigit()) or len(raw_count) > 18:
            raise FhirError("invalid", f"_count '{raw_count[:20]}' is not a whole number")
        count = min(int(raw_count), settings.max_page_size)
    if raw_offset is not None:
        if not (raw_offset.isascii() and raw_offset.isdigit()) or len(raw_offset) > 18:
            raise FhirError("invalid", f"_offset '{raw_offset[:20]}' is not a whole number of 18 digits "
                            "or fewer")
        offset = int(raw_offset)
    return count, offset


def _parse_since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError("invalid", f"_since '{raw[:40]}' is not a FHIR instant") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _history(request: Request, conn, viewer, *, res_type: str | None = None, res_id: str | None = None,
                   types: list[str] | None = None) -> Response:
    count, offset = page_window(request)
    since = _parse_since(request.query_params.get("_since"))
    versions, total = await repository.history(conn, res_type=res_type, res_id=res_id, since=since,
                                               count=count, offset=offset, viewer=viewer, types=types)
    access.disclosed(request, versions)
    base = _base(request)
    path = "/".join(p for p in (base, res_type, res_id, "_history") if p)
    keep = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"]
    links = bundles.page_links(path, keep, offset, count, total)
    body = bundles.bundle_text(
        "history", (bundles.history_entry(base, v) for v in versions), total=total, links=links,
        bundle_id=str(uuid.uuid4()), moment=instant(datetime.now(UTC)),
    )
    fmt = response_format(request)
    return fhir_response(render_text(body, fmt, pretty=wants_pretty(request)), fmt)


async def _search(request: Request, res_type: str, pairs: list[tuple[str, str]]) -> Response:
    settings = _settings(request)
    strict = "handling=strict" in request.headers.get("prefer", "")
    viewer = access.require(request, res_type, "s")
    query = parse_search(res_type, pairs, default_count=settings.default_page_size,
                         max_count=settings.max_page_size, strict=strict, base_url=_base(request))
    async with _pool(request).connection() as conn:
        result = await repository.search(conn, query, viewer=viewer)
    access.disclosed(request, result.matches)
    access.disclosed(request, result.included)
    base = _base(request)
    entries = [bundles.search_entry(base, v, "match") for v in result.matches]
    entries += [bundles.search_entry(base, v, "include") for v in result.included]
    if query.ignored:
        warning = operation_outcome([Issue("not-supported", f"search parameter '{name}' is not "
                                           "supported and was ignored", severity="warning")
                                     for name in query.ignored])
        entries.append(bundles.outcome_entry(warning))
    links = _search_links(f"{base}/{res_type}", query, result.more)
    body = bundles.bundle_text("searchset", entries, total=result.total, links=links,
                               bundle_id=str(uuid.uuid4()), moment=instant(datetime.now(UTC)))
    fmt = response_format(request)
    return fhir_response(render_text(body, fmt, pretty=wants_pretty(request)), fmt)


def _search_links(path: str, query: SearchRequest, more: bool) -> list[tuple[str, str]]:
    links = [("self", f"{path}?{query.to_query(offset=query.offset)}")]
    if more:
        links.append(("next", f"{path}?{query.to_query(offset=query.offset + query.count)}"))
    if query.offset > 0:
        links.append(("previous", f"{path}?{query.to_query(offset=max(0, query.offset - query.count))}"))
    return links
