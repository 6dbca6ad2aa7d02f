"""Patient/[id]/$everything: the person's whole shared record in one searchset Bundle.

Needs read on Patient; returns only resources of types the client may read and that the
person's consent (or the class default) lets it see, counted the same way in the total."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.api import access, bundles
from hub.api.formats import fhir_response, render_text, response_format, wants_pretty
from hub.api.rest import page_window
from hub.fhir.resources import require_supported
from hub.search.definitions import resource_types
from hub.store import repository
from hub.store.repository import instant

router = APIRouter(prefix="/fhir")


@router.get("/Patient/{patient_id}/$everything")
async def patient_everything(patient_id: str, request: Request) -> Response:
    count, offset = page_window(request)
    raw_types = request.query_params.get("_type")
    types = [t.strip() for t in raw_types.split(",") if t.strip()] if raw_types else None
    for res_type in types or []:
        require_supported(res_type)
    viewer = access.require(request, "Patient", "r")
    readable = access.readable_types(viewer, resource_types())
    if readable is not None:
        types = [t for t in (types or readable) if t in readable]
    async with request.app.state.pool.connection() as conn:
        versions, total = await repository.everything(conn, patient_id, types=types, count=count,
                                                      offset=offset, viewer=viewer)
    access.disclosed(request, versions)
    base = request.app.state.base_url
    keep = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"]
    path = f"{base}/Patient/{patient_id}/$everything"
    links = bundles.page_links(path, keep, offset, count, total)
    body = bundles.bundle_text(
        "searchset", (bundles.search_entry(base, v, "match") for v in versions), total=total,
        links=links, bundle_id=str(uuid.uuid4()), moment=instant(datetime.now(UTC)),
    )
    fmt = response_format(request)
    return fhir_response(render_text(body, fmt, pretty=wants_pretty(request)), fmt)
