"""Bundles the API sends back (searchset, history), assembled as JSON text around each
resource's stored text so that a page of results is never parsed and re-serialised."""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

import orjson

from hub.store.resources import Version, instant


def _entry_text(base: str, version: Version, extra: dict) -> str:
    head = orjson.dumps({"fullUrl": f"{base}/{version.res_type}/{version.res_id}"}).decode()[:-1]
    tail = orjson.dumps(extra).decode()[1:]
    if version.content is None:
        return f"{head},{tail}"
    return f'{head},"resource":{version.content},{tail}'


def bundle_text(
    bundle_type: str,
    entries: Iterable[str],
    *,
    total: int | None,
    links: list[tuple[str, str]],
    bundle_id: str,
    moment: str,
) -> bytes:
    head = {
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {"lastUpdated": moment},
        "type": bundle_type,
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    text = orjson.dumps(head).decode()
    joined = ",".join(entries)
    if not joined:
        return text.encode()  # FHIR JSON has no empty arrays: no matches, no `entry`
    return f'{text[:-1]},"entry":[{joined}]}}'.encode()


def search_entry(base: str, version: Version, mode: str) -> str:
    return _entry_text(base, version, {"search": {"mode": mode}})


def outcome_entry(outcome: dict) -> str:
    return orjson.dumps({"resource": outcome, "search": {"mode": "outcome"}}).decode()


def history_entry(base: str, version: Version) -> str:
    url = f"{version.res_type}/{version.res_id}"
    if version.method == "POST":
        request = {"method": "POST", "url": version.res_type}
        status = "201 Created"
    elif version.method == "DELETE":
        request = {"method": "DELETE", "url": url}
        status = "204 No Content"
    else:
        request = {"method": "PUT", "url": url}
        status = "201 Created" if version.version == 1 else "200 OK"
    response = {"status": status, "etag": version.etag, "lastModified": instant(version.last_updated)}
    return _entry_text(base, version, {"request": request, "response": response})


def page_links(path: str, params: list[tuple[str, str]], offset: int, count: int, total: int) -> list[tuple[str, str]]:
    """self / next / previous links for an offset-paged Bundle; `params` without _offset."""
    def at(start: int) -> str:
        return f"{path}?{urlencode(params + [('_offset', str(start))])}"

    links = [("self", at(offset))]
    if count > 0 and offset + count < total:  # _count=0 asks for the total alone: no next page
        links.append(("next", at(offset + count)))
    if offset > 0:
        links.append(("previous", at(max(0, offset - count))))
    return links
