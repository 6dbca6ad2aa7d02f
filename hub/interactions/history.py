"""history at instance, type and system level: versions newest first, `_since`, `_count` and
offset paging links. System history covers only the types the caller may search."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hub.fhir.errors import FhirError, not_found
from hub.interactions import bundles
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.search.definitions import resource_types
from hub.store import resources, searching
from hub.store.resources import instant


def page_window(ctx: Context, request: FhirRequest) -> tuple[int, int]:
    """(_count, _offset) of a paged answer: the default page size, capped at the maximum."""
    settings = ctx.settings
    count, offset = settings.default_page_size, 0
    raw_count = request.param("_count")
    raw_offset = request.param("_offset")
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


async def history(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    count, offset = page_window(ctx, request)
    since = _parse_since(request.param("_since"))
    types = ctx.access.types_with("s", sorted(resource_types())) if res_type is None else None
    if res_type is None and not ctx.access.trusted:
        # Subscriptions are each their owner's alone (hub.interactions.subscriptions).
        types = [t for t in (types if types is not None else sorted(resource_types())) if t != "Subscription"]
    async with ctx.reading() as conn:
        if res_id is not None and await resources.current_version(conn, res_type, res_id,
                                                                  access=ctx.access) is None:
            raise not_found(res_type, res_id)
        versions, total = await searching.history(conn, res_type=res_type, res_id=res_id, since=since,
                                                  count=count, offset=offset, access=ctx.access, types=types)
    ctx.touched += versions
    base = ctx.base
    path = "/".join(p for p in (base, res_type, res_id, "_history") if p)
    keep = [(k, v) for k, v in request.query if k != "_offset"]
    links = bundles.page_links(path, keep, offset, count, total)
    body = bundles.bundle_text(
        "history", (bundles.history_entry(base, v) for v in versions), total=total, links=links,
        bundle_id=str(uuid.uuid4()), moment=instant(datetime.now(UTC)),
    )
    return Outcome(200, body=body)
