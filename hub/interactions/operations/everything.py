"""Patient/[id]/$everything: the person's whole shared record in one searchset Bundle.

Needs read on Patient; returns only resources of types the client may read and that the
person's consent (or the class default) lets it see, counted the same way in the total.
Parameters `_type` and `_count` (and `_offset` in its paging links), by GET or POST."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from hub.fhir.resources import require_supported
from hub.interactions import bundles
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.history import page_window
from hub.interactions.operations.operation import Operation, first, parameters
from hub.search.definitions import resource_types
from hub.store import searching
from hub.store.resources import instant


async def run(ctx: Context, request: FhirRequest, res_type: str | None, patient_id: str | None) -> Outcome:
    assert patient_id is not None
    ctx.access.require("Patient", "r")
    pairs, _ = parameters(request)
    paging = replace(request, query=pairs)
    count, offset = page_window(ctx, paging)
    raw_types = first(pairs, "_type")
    types = [t.strip() for t in raw_types.split(",") if t.strip()] if raw_types else None
    for name in types or []:
        require_supported(name)
    readable = ctx.access.types_with("r", sorted(resource_types()))
    if readable is not None:
        types = [t for t in (types or readable) if t in readable]
    async with ctx.reading() as conn:
        versions, total = await searching.everything(conn, patient_id, types=types, count=count,
                                                     offset=offset, access=ctx.access)
    ctx.touched += versions
    base = ctx.base
    keep = [(k, v) for k, v in pairs if k != "_offset"]
    links = bundles.page_links(f"{base}/Patient/{patient_id}/$everything", keep, offset, count, total)
    body = bundles.bundle_text(
        "searchset", (bundles.search_entry(base, v, "match") for v in versions), total=total,
        links=links, bundle_id=str(uuid.uuid4()), moment=instant(datetime.now(UTC)),
    )
    return Outcome(200, body=body)


OPERATION = Operation(
    name="everything",
    definition="http://hl7.org/fhir/OperationDefinition/Patient-everything",
    levels=frozenset({"instance"}),
    types=frozenset({"Patient"}),
    run=run,
    documentation="The person's whole record: the Patient, what refers to them and what they refer to, "
                  "as far as consent and scopes allow; `_type`, `_count`.",
)
