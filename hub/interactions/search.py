"""search-type (GET, or POST _search with the criteria in the form the HTTP layer reads): one
page of a parsed search as a searchset Bundle, with self/next/previous links, `_summary` and
`_elements` applied to each entry (tagged SUBSETTED), and a warning entry for each parameter
ignored."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from hub.fhir import jsontext
from hub.fhir.errors import Issue, operation_outcome
from hub.fhir.subsetting import is_subsetting, subset
from hub.interactions import bundles
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.search.parse import SearchRequest, parse_search
from hub.store import searching
from hub.store.resources import Version, instant


def parse(ctx: Context, request: FhirRequest, res_type: str, *, strict: bool | None = None) -> SearchRequest:
    """The request's query as a search; Prefer: handling=strict refuses unknown parameters."""
    if strict is None:
        strict = "handling=strict" in (request.headers.get("prefer") or "")
    settings = ctx.settings
    return parse_search(res_type, request.query, default_count=settings.default_page_size,
                        max_count=settings.max_page_size, strict=strict, base_url=ctx.base)


async def search_type(ctx: Context, request: FhirRequest, res_type: str) -> Outcome:
    query = parse(ctx, request, res_type)
    async with ctx.reading() as conn:
        result = await searching.search(conn, query, access=ctx.access)
    ctx.touched += result.matches
    ctx.touched += result.included
    base = ctx.base
    matches, included = result.matches, result.included
    if is_subsetting(query.summary, query.elements):
        matches = [_cut(v, query) for v in matches]
        included = [_cut(v, query) for v in included]
    entries = [bundles.search_entry(base, v, "match") for v in matches]
    entries += [bundles.search_entry(base, v, "include") for v in included]
    if query.ignored:
        warning = operation_outcome([Issue("not-supported", f"search parameter '{name}' is not "
                                           "supported and was ignored", severity="warning")
                                     for name in query.ignored])
        entries.append(bundles.outcome_entry(warning))
    links = search_links(f"{base}/{res_type}", query, result.more)
    body = bundles.bundle_text("searchset", entries, total=result.total, links=links,
                               bundle_id=str(uuid.uuid4()), moment=instant(datetime.now(UTC)))
    return Outcome(200, body=body)


def _cut(version: Version, query: SearchRequest) -> Version:
    cut = subset(jsontext.loads(version.content), query.summary, query.elements)
    return replace(version, content=jsontext.dumps(cut).decode())


def search_links(path: str, query: SearchRequest, more: bool) -> list[tuple[str, str]]:
    links = [("self", f"{path}?{query.to_query(offset=query.offset)}")]
    if more and query.count > 0:  # _count=0 asks for the total alone: no page follows it
        links.append(("next", f"{path}?{query.to_query(offset=query.offset + query.count)}"))
    if query.offset > 0 and query.count > 0:
        links.append(("previous", f"{path}?{query.to_query(offset=max(0, query.offset - query.count))}"))
    return links
