"""Transaction and batch Bundles, and the conditional interactions they (and the REST API) use.

A transaction is all or nothing: every entry runs in the caller's database transaction, any
failure raises and the caller rolls everything back. `urn:uuid:` fullUrls are given their
server ids before anything is written, so entries may reference each other in any order.
A batch runs each entry in its own savepoint and reports each entry's outcome.

With a Viewer (an authorised client), each entry needs the SMART scope its interaction needs,
and reads, searches and writes see only what the client may see, as over REST. A transaction
with any entry the scopes forbid is refused whole before anything runs; in a batch only that
entry answers 403."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from psycopg import AsyncConnection

from hub.config import Settings
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.references import references, repoint
from hub.fhir.resources import check_structure, require_supported, require_valid_id
from hub.search.access import Viewer
from hub.search.parse import parse_search
from hub.store import repository
from hub.store.repository import Version, instant, version_from_etag

# The order the FHIR specification gives for processing a transaction's entries.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


async def find_one_for_condition(
    conn: AsyncConnection, res_type: str, condition: str, *, viewer: Viewer | None = None
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
    result = await repository.search(conn, query, with_total=False, viewer=viewer)
    if len(result.matches) > 1:
        raise FhirError("multiple-matches", f"the criteria {res_type}?{criteria} match more than one "
                        "resource", status=412)
    return result.matches[0] if result.matches else None


async def conditional_update(
    conn: AsyncConnection, res_type: str, condition: str, resource: dict[str, Any], *,
    viewer: Viewer | None = None,
) -> tuple[Version, bool]:
    existing = await find_one_for_condition(conn, res_type, condition, viewer=viewer)
    if existing is None:
        res_id = resource.get("id") or repository.new_id()
    else:
        res_id = existing.res_id
        if resource.get("id") not in (None, res_id):
            raise FhirError("invalid", f"the body's id '{resource['id']}' is not the id the criteria "
                            f"select ({res_id})", expression=f"{res_type}.id")
    return await repository.update(conn, res_type, res_id, resource, viewer=viewer)


class _Run:
    """What every entry of one Bundle shares: the caller, and what the entries disclosed or
    wrote (for audit)."""

    def __init__(self, viewer: Viewer | None) -> None:
        self.viewer = viewer
        self.touched: list[Version] = []
        self.written: list[Version] = []

    def wrote(self, version: Version) -> None:
        self.touched.append(version)
        self.written.append(version)


async def process(conn: AsyncConnection, bundle: dict[str, Any], settings: Settings, base: str, *,
                  viewer: Viewer | None = None) -> tuple[dict[str, Any], list[Version], list[Version]]:
    """The response Bundle, every version the entries read or wrote, and those they wrote."""
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError("invalid", f"Bundle.type must be transaction or batch, not {kind!r}",
                        expression="Bundle.type")
    entries = bundle.get("entry") or []
    # The envelope is checked here; each entry's resource is checked as its entry runs, so one
    # bad resource in a batch fails only its own entry.
    check_structure({**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                         for e in entries if isinstance(e, dict)]}, "Bundle")
    run = _Run(viewer)
    if kind == "transaction":
        replies = await _transaction(conn, entries, settings, base, run)
    else:
        replies = await _batch(conn, entries, settings, base, run)
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": replies}, run.touched, run.written


def _check_scopes(entry: dict, index: int, viewer: Viewer | None, base: str) -> None:
    """403 unless the token allows this entry's interaction (update-as-create's extra `c` is
    checked once the entry knows it created)."""
    if viewer is None:
        return
    method = _method(entry, index)
    parts, criteria = _target(entry["request"]["url"], base)
    if not parts:
        return  # _run_entry reports the bad url
    res_type = parts[0]
    if method == "GET":
        letters = "s" if len(parts) % 2 == 1 else "r"
    elif method == "POST":
        letters = "cs" if entry["request"].get("ifNoneExist") else "c"
    elif method == "PUT":
        letters = "us" if criteria else "u"
    else:
        letters = "ds" if criteria else "d"
    for letter in letters:
        if not viewer.permits(res_type, letter):
            raise FhirError("forbidden", f"Bundle.entry[{index}]: the access token's scopes do not allow "
                            f"'{letter}' on {res_type}", status=403, expression=f"Bundle.entry[{index}]")


async def _transaction(conn: AsyncConnection, entries: list[dict], settings: Settings, base: str,
                       run: _Run) -> list[dict]:
    for index, entry in enumerate(entries):
        _check_scopes(entry, index, run.viewer, base)
    ids = _assign_ids(entries)
    _refuse_overlapping_writes(entries)
    await _resolve_conditional_references(conn, entries, ids, run.viewer)
    for entry in entries:
        if "resource" in entry:
            entry["resource"] = repoint(entry["resource"], ids)
    replies: list[dict | None] = [None] * len(entries)
    order = sorted(range(len(entries)), key=lambda i: _ORDER.get(_method(entries[i], i), 9))
    for index in order:
        try:
            replies[index] = await _run_entry(conn, entries[index], index, ids, settings, base, run)
        except FhirError as error:
            for issue in error.issues:
                issue.expression = issue.expression or f"Bundle.entry[{index}]"
                issue.diagnostics = f"Bundle.entry[{index}]: {issue.diagnostics}"
            raise
    return replies  # type: ignore[return-value]


async def _batch(conn: AsyncConnection, entries: list[dict], settings: Settings, base: str,
                 run: _Run) -> list[dict]:
    replies = []
    for index, entry in enumerate(entries):
        try:
            _check_scopes(entry, index, run.viewer, base)
            async with conn.transaction():
                replies.append(await _run_entry(conn, entry, index, {}, settings, base, run))
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
    conn: AsyncConnection, entries: list[dict], ids: dict[str, str], viewer: Viewer | None
) -> None:
    """A reference like 'Patient?identifier=sys|123' becomes the one Patient it selects."""
    for entry in entries:
        for ref in references(entry.get("resource")):
            if "?" in ref and ref not in ids and not ref.startswith(("urn:", "http")):
                res_type, _, criteria = ref.partition("?")
                require_supported(res_type)
                if viewer is not None and not viewer.permits(res_type, "s"):
                    raise FhirError("forbidden", f"conditional reference {ref} is a search the access "
                                    f"token's scopes do not allow on {res_type}", status=403)
                found = await find_one_for_condition(conn, res_type, criteria, viewer=viewer)
                if found is None:
                    raise FhirError("not-found", f"conditional reference {ref} matches no resource",
                                    status=404)
                ids[ref] = found.reference


def _target(url: str, base: str) -> tuple[list[str], str]:
    """An entry's request url as path segments (relative to the server base) and criteria."""
    url = url.lstrip("/")
    if url.startswith(base):
        url = url[len(base):].lstrip("/")
    path, _, criteria = url.partition("?")
    return [p for p in path.split("/") if p], criteria


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
    conn: AsyncConnection, entry: dict, index: int, ids: dict[str, str], settings: Settings, base: str,
    run: _Run,
) -> dict[str, Any]:
    method = _method(entry, index)
    request = entry["request"]
    parts, criteria = _target(request["url"], base)
    if not parts:
        raise FhirError("invalid", f"request url '{request['url']}' names no resource type")
    res_type = parts[0]
    require_supported(res_type)

    viewer = run.viewer
    if method == "GET":
        return await _get_entry(conn, res_type, parts, criteria, settings, run)

    if method == "DELETE":
        if len(parts) != 2:
            raise FhirError("not-supported", "DELETE in a Bundle needs Type/id")
        deleted = await repository.delete(conn, res_type, parts[1],
                                          if_match=version_from_etag(request.get("ifMatch")), viewer=viewer)
        if deleted:
            run.wrote(deleted)
        return {"response": {"status": "204 No Content",
                             **({"etag": deleted.etag} if deleted else {})}}

    resource = entry.get("resource")
    check_structure(resource, res_type)

    if method == "POST":
        if request.get("ifNoneExist"):
            existing = await find_one_for_condition(conn, res_type, request["ifNoneExist"], viewer=viewer)
            if existing is not None:
                run.touched.append(existing)
                return _reply(existing, "200 OK", base)
        assigned = ids.get(entry.get("fullUrl", ""), "")
        res_id = assigned.split("/", 1)[1] if assigned.startswith(f"{res_type}/") else None
        version = await repository.create(conn, resource, res_id=res_id, viewer=viewer)
        run.wrote(version)
        return _reply(version, "201 Created", base)

    if method == "PUT":
        if criteria:
            version, created = await conditional_update(conn, res_type, criteria, resource, viewer=viewer)
        else:
            if len(parts) != 2:
                raise FhirError("invalid", "PUT in a Bundle needs Type/id or Type?criteria")
            require_valid_id(parts[1])
            if resource.get("id") not in (None, parts[1]):
                raise FhirError("invalid", f"the resource's id '{resource['id']}' does not match the "
                                f"request url's id '{parts[1]}'")
            version, created = await repository.update(conn, res_type, parts[1], resource,
                                                       if_match=version_from_etag(request.get("ifMatch")),
                                                       viewer=viewer)
        if created and viewer is not None and not viewer.permits(res_type, "c"):
            raise FhirError("forbidden", f"Bundle.entry[{index}] would create {res_type}/{version.res_id}; "
                            f"the access token's scopes do not allow create on {res_type}", status=403)
        run.wrote(version)
        return _reply(version, "201 Created" if created else "200 OK", base)

    raise FhirError("not-supported", f"{method} is not supported in a Bundle", status=405)


async def _get_entry(conn: AsyncConnection, res_type: str, parts: list[str], criteria: str,
                     settings: Settings, run: _Run) -> dict[str, Any]:
    viewer = run.viewer
    if len(parts) == 2:
        version = await repository.read(conn, res_type, parts[1], viewer=viewer)
    elif len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit():
        version = await repository.vread(conn, res_type, parts[1], int(parts[3]), viewer=viewer)
    elif len(parts) == 1:
        query = parse_search(res_type, parse_qsl(criteria, keep_blank_values=True),
                             default_count=settings.default_page_size, max_count=settings.max_page_size)
        result = await repository.search(conn, query, viewer=viewer)
        run.touched += result.matches
        bundle = {
            "resourceType": "Bundle", "type": "searchset", "total": result.total,
            "entry": [{"resource": jsontext.loads(v.content), "search": {"mode": "match"}}
                      for v in result.matches],
        }
        return {"resource": bundle, "response": {"status": "200 OK"}}
    else:
        raise FhirError("not-supported", f"GET {'/'.join(parts)} is not supported in a Bundle")
    run.touched.append(version)
    reply = {"resource": jsontext.loads(version.content),
             "response": {"status": "200 OK", "etag": version.etag,
                          "lastModified": instant(version.last_updated)}}
    return reply
