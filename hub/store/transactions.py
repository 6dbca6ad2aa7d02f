"""Transaction and batch Bundles, and the conditional interactions they (and the REST API) use.

A transaction is all or nothing: every entry runs in the caller's database transaction, any
failure raises and the caller rolls everything back. `urn:uuid:` fullUrls are given their
server ids before anything is written, so entries may reference each other in any order.
A batch runs each entry in its own savepoint and reports each entry's outcome."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from psycopg import AsyncConnection

from hub.config import Settings
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.references import references, repoint
from hub.fhir.resources import check_structure, require_supported, require_valid_id
from hub.search.parse import parse_search
from hub.store import repository
from hub.store.repository import Version, instant, version_from_etag

# The order the FHIR specification gives for processing a transaction's entries.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


async def find_one_for_condition(
    conn: AsyncConnection, res_type: str, condition: str
) -> Version | None:
    """The one resource a conditional interaction's criteria select, None if none; 412 if several.

    Takes a transaction-scoped advisory lock on the criteria so two concurrent conditional
    creates with the same criteria cannot both create."""
    criteria = condition.split("?", 1)[1] if "?" in condition else condition
    pairs = parse_qsl(criteria, keep_blank_values=True)
    if not pairs:
        raise FhirError("invalid", "a conditional interaction needs search criteria")
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                       (f"{res_type}?{criteria}",))
    query = parse_search(res_type, pairs + [("_count", "2")], default_count=2, max_count=2,
                         strict=True)
    result = await repository.search(conn, query, with_total=False)
    if len(result.matches) > 1:
        raise FhirError("multiple-matches", f"the criteria {res_type}?{criteria} match more than one "
                        "resource", status=412)
    return result.matches[0] if result.matches else None


async def conditional_update(
    conn: AsyncConnection, res_type: str, condition: str, resource: dict[str, Any]
) -> tuple[Version, bool]:
    existing = await find_one_for_condition(conn, res_type, condition)
    if existing is None:
        res_id = resource.get("id") or repository.new_id()
    else:
        res_id = existing.res_id
        if resource.get("id") not in (None, res_id):
            raise FhirError("invalid", f"the body's id '{resource['id']}' is not the id the criteria "
                            f"select ({res_id})", expression=f"{res_type}.id")
    return await repository.update(conn, res_type, res_id, resource)


async def process(conn: AsyncConnection, bundle: dict[str, Any], settings: Settings, base: str) -> dict[str, Any]:
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError("invalid", f"Bundle.type must be transaction or batch, not {kind!r}",
                        expression="Bundle.type")
    entries = bundle.get("entry") or []
    # The envelope is checked here; each entry's resource is checked as its entry runs, so one
    # bad resource in a batch fails only its own entry.
    check_structure({**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                         for e in entries if isinstance(e, dict)]}, "Bundle")
    if kind == "transaction":
        replies = await _transaction(conn, entries, settings, base)
    else:
        replies = await _batch(conn, entries, settings, base)
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": replies}


async def _transaction(conn: AsyncConnection, entries: list[dict], settings: Settings, base: str) -> list[dict]:
    ids = _assign_ids(entries)
    _refuse_overlapping_writes(entries)
    await _resolve_conditional_references(conn, entries, ids)
    for entry in entries:
        if "resource" in entry:
            entry["resource"] = repoint(entry["resource"], ids)
    replies: list[dict | None] = [None] * len(entries)
    order = sorted(range(len(entries)), key=lambda i: _ORDER.get(_method(entries[i], i), 9))
    for index in order:
        try:
            replies[index] = await _run_entry(conn, entries[index], index, ids, settings, base)
        except FhirError as error:
            for issue in error.issues:
                issue.expression = issue.expression or f"Bundle.entry[{index}]"
                issue.diagnostics = f"Bundle.entry[{index}]: {issue.diagnostics}"
            raise
    return replies  # type: ignore[return-value]


async def _batch(conn: AsyncConnection, entries: list[dict], settings: Settings, base: str) -> list[dict]:
    replies = []
    for index, entry in enumerate(entries):
        try:
            async with conn.transaction():
                replies.append(await _run_entry(conn, entry, index, {}, settings, base))
        except FhirError as error:
            replies.append({"response": {"status": str(error.status),
                                         "outcome": error.outcome()}})
    return replies


def _method(entry: dict, index: int) -> str:
    request = entry.get("request") or {}
    method = request.get("method")
    if method not in _ORDER or not request.get("url"):
        raise FhirError("invalid", f"Bundle.entry[{index}].request needs a method "
                        "(GET, POST, PUT, DELETE) and a url", expression=f"Bundle.entry[{index}].request")
    return method


def _refuse_overlapping_writes(entries: list[dict]) -> None:
    """A transaction may touch each resource once; two writes to one resource are a conflict
    the client must resolve (the specification says the transaction fails)."""
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        request = entry.get("request") or {}
        if request.get("method") not in ("PUT", "DELETE"):
            continue
        target = request["url"].split("?")[0].strip("/")
        if "?" in request["url"] or target.count("/") != 1:
            continue
        if target in seen:
            raise FhirError("conflict", f"Bundle.entry[{seen[target]}] and Bundle.entry[{index}] both "
                            f"write {target}", status=409, expression=f"Bundle.entry[{index}]")
        seen[target] = index


def _assign_ids(entries: list[dict]) -> dict[str, str]:
    """fullUrl → 'Type/id' for every entry whose resource gets an id in this transaction."""
    ids: dict[str, str] = {}
    for index, entry in enumerate(entries):
        method = _method(entry, index)
        full_url = entry.get("fullUrl")
        resource = entry.get("resource")
        if not full_url or not isinstance(resource, dict):
            continue
        res_type = resource.get("resourceType")
        if method == "POST":
            new = f"{res_type}/{repository.new_id()}"
        elif method == "PUT" and "?" not in entry["request"]["url"]:
            new = entry["request"]["url"].split("?")[0].strip("/")
        else:
            continue
        if full_url in ids:
            raise FhirError("invalid", f"fullUrl {full_url} appears twice in the transaction",
                            expression=f"Bundle.entry[{index}].fullUrl")
        ids[full_url] = new
    return ids


async def _resolve_conditional_references(
    conn: AsyncConnection, entries: list[dict], ids: dict[str, str]
) -> None:
    """A reference like 'Patient?identifier=sys|123' becomes the one Patient it selects."""
    for entry in entries:
        for ref in references(entry.get("resource")):
            if "?" in ref and ref not in ids and not ref.startswith(("urn:", "http")):
                res_type, _, criteria = ref.partition("?")
                require_supported(res_type)
                found = await find_one_for_condition(conn, res_type, criteria)
                if found is None:
                    raise FhirError("not-found", f"conditional reference {ref} matches no resource",
                                    status=404)
                ids[ref] = found.reference


def _reply(version: Version, status: str, base: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{version.reference}",
        "response": {
            "status": status,
            "location": f"{version.reference}/_history/{version.version}",
            "etag": version.etag,
            "lastModified": instant(version.last_updated),
        },
    }


async def _run_entry(
    conn: AsyncConnection, entry: dict, index: int, ids: dict[str, str], settings: Settings, base: str
) -> dict[str, Any]:
    method = _method(entry, index)
    request = entry["request"]
    url = request["url"].lstrip("/")
    if url.startswith(base):
        url = url[len(base):].lstrip("/")
    path, _, criteria = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise FhirError("invalid", f"request url '{request['url']}' names no resource type")
    res_type = parts[0]
    require_supported(res_type)

    if method == "GET":
        return await _get_entry(conn, res_type, parts, criteria, settings)

    if method == "DELETE":
        if len(parts) != 2:
            raise FhirError("not-supported", "DELETE in a Bundle needs Type/id")
        deleted = await repository.delete(conn, res_type, parts[1],
                                          if_match=version_from_etag(request.get("ifMatch")))
        return {"response": {"status": "204 No Content",
                             **({"etag": deleted.etag} if deleted else {})}}

    resource = entry.get("resource")
    check_structure(resource, res_type)

    if method == "POST":
        if request.get("ifNoneExist"):
            existing = await find_one_for_condition(conn, res_type, request["ifNoneExist"])
            if existing is not None:
                return _reply(existing, "200 OK", base)
        assigned = ids.get(entry.get("fullUrl", ""), "")
        res_id = assigned.split("/", 1)[1] if assigned.startswith(f"{res_type}/") else None
        version = await repository.create(conn, resource, res_id=res_id)
        return _reply(version, "201 Created", base)

    if method == "PUT":
        if criteria:
            version, created = await conditional_update(conn, res_type, criteria, resource)
        else:
            if len(parts) != 2:
                raise FhirError("invalid", "PUT in a Bundle needs Type/id or Type?criteria")
            require_valid_id(parts[1])
            if resource.get("id") not in (None, parts[1]):
                raise FhirError("invalid", f"the resource's id '{resource['id']}' does not match the "
                                f"request url's id '{parts[1]}'")
            version, created = await repository.update(conn, res_type, parts[1], resource,
                                                       if_match=version_from_etag(request.get("ifMatch")))
        return _reply(version, "201 Created" if created else "200 OK", base)

    raise FhirError("not-supported", f"{method} is not supported in a Bundle", status=405)


async def _get_entry(conn: AsyncConnection, res_type: str, parts: list[str], criteria: str,
                     settings: Settings) -> dict[str, Any]:
    if len(parts) == 2:
        version = await repository.read(conn, res_type, parts[1])
    elif len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit():
        version = await repository.vread(conn, res_type, parts[1], int(parts[3]))
    elif len(parts) == 1:
        query = parse_search(res_type, parse_qsl(criteria, keep_blank_values=True),
                             default_count=settings.default_page_size, max_count=settings.max_page_size)
        result = await repository.search(conn, query)
        bundle = {
            "resourceType": "Bundle", "type": "searchset", "total": result.total,
            "entry": [{"resource": jsontext.loads(v.content), "search": {"mode": "match"}}
                      for v in result.matches],
        }
        return {"resource": bundle, "response": {"status": "200 OK"}}
    else:
        raise FhirError("not-supported", f"GET {'/'.join(parts)} is not supported in a Bundle")
    reply = {"resource": jsontext.loads(version.content),
             "response": {"status": "200 OK", "etag": version.etag,
                          "lastModified": instant(version.last_updated)}}
    return reply
