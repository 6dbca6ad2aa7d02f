"""read and vread, with the conditional read (If-None-Match → 304) and `_summary`/`_elements`."""
from __future__ import annotations

from dataclasses import replace

from hub.fhir import jsontext
from hub.fhir.subsetting import check_summary, is_subsetting, parse_elements, subset
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.store import resources
from hub.store.resources import Version


def version_headers(version: Version) -> dict[str, str]:
    return {
        "ETag": version.etag,
        "Last-Modified": version.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }


def _matches(if_none_match: str, version: int) -> bool:
    """Whether an If-None-Match names this version: `*`, or any of its ETags in the weak
    (`W/"3"`) or strong (`"3"`) form — the hub's ETags are version numbers either way."""
    for tag in if_none_match.split(","):
        text = tag.strip()
        if text == "*":
            return True
        if text.removeprefix("W/").strip('"') == str(version):
            return True
    return False


def shaped(request: FhirRequest, version: Version) -> Version:
    """The version as `_summary` / `_elements` ask (unchanged when they do not)."""
    if not request.query:
        return version
    summary = check_summary(request.param("_summary"))
    elements = parse_elements(request.param("_elements"))
    if not is_subsetting(summary, elements) or version.content is None:
        return version
    cut = subset(jsontext.loads(version.content), summary, elements)
    return replace(version, content=jsontext.dumps(cut).decode())


async def read(ctx: Context, request: FhirRequest, res_type: str, res_id: str) -> Outcome:
    async with ctx.reading() as conn:
        version = await resources.read(conn, res_type, res_id, access=ctx.access)
    ctx.touched.append(version)
    headers = version_headers(version)
    condition = request.headers.get("if-none-match")
    if condition is not None and _matches(condition, version.version):
        return Outcome(304, headers=headers)
    return Outcome(200, shaped(request, version), headers=headers)


async def vread(ctx: Context, request: FhirRequest, res_type: str, res_id: str, number: int) -> Outcome:
    async with ctx.reading() as conn:
        version = await resources.vread(conn, res_type, res_id, number, access=ctx.access)
    ctx.touched.append(version)
    return Outcome(200, shaped(request, version), headers=version_headers(version))
