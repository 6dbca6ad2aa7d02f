"""Transaction and batch Bundles: each entry becomes a plain FhirRequest and runs through the
same `handle` as an HTTP request, so every interaction means the same in a Bundle as over REST.

A transaction is all or nothing: every entry runs in one database transaction, any failure
raises and everything rolls back. Before anything runs, every entry's scopes are checked (one
forbidden entry refuses the whole Bundle), `urn:uuid:` fullUrls get their server ids (a
conditional create's fullUrl: the existing resource it finds), and conditional references
(`Patient?identifier=…`) are resolved, so entries may refer to each other in any order; the
reference and delete checks run once the last entry has run. A batch runs each entry in its
own savepoint and reports each entry's outcome."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.references import references, repoint
from hub.fhir.resources import check_structure, require_supported
from hub.interactions import conditional
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.write import run_deferred
from hub.store.resources import Version, instant, new_id

Handle = Callable[[Context, FhirRequest], Awaitable[Outcome]]
Needs = Callable[[FhirRequest], tuple[str | None, str]]

# The order the FHIR specification gives for processing a transaction's entries.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


async def transaction_or_batch(ctx: Context, request: FhirRequest, handle: Handle, needs: Needs) -> Outcome:
    bundle = request.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError("invalid", "POST to the server base takes a Bundle of type transaction or batch",
                        expression="resourceType")
    if ctx.database.bound:
        raise FhirError("not-supported", f"{ctx.where}: a Bundle entry cannot itself be a transaction or batch")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError("invalid", f"Bundle.type must be transaction or batch, not {kind!r}",
                        expression="Bundle.type")
    entries = [e if isinstance(e, dict) else {} for e in bundle.get("entry") or []]
    # The envelope is checked here; each entry's resource is checked as its entry runs, so one
    # bad resource in a batch fails only its own entry.
    check_structure({**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"} for e in entries]},
                    "Bundle")
    async with ctx.writing() as conn:
        if kind == "transaction":
            replies = await _transaction(conn, ctx, entries, handle, needs)
        else:
            replies = await _batch(conn, ctx, entries, handle)
    return Outcome(200, body={"resourceType": "Bundle", "type": f"{kind}-response", "entry": replies},
                   wrote=True)


def _entry_request(entry: dict, index: int, base: str) -> FhirRequest:
    """The entry's `request` as a FhirRequest (url relative to the server base)."""
    request = entry.get("request") or {}
    method, url = request.get("method"), request.get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise FhirError("invalid", f"Bundle.entry[{index}].request needs a method "
                        "(GET, POST, PUT, DELETE) and a url", expression=f"Bundle.entry[{index}].request")
    url = url.lstrip("/")
    if url.startswith(base):
        url = url[len(base):].lstrip("/")
    path, _, criteria = url.partition("?")
    headers = {name: request[key] for key, name in (("ifMatch", "if-match"), ("ifNoneExist", "if-none-exist"),
                                                    ("ifNoneMatch", "if-none-match"))
               if isinstance(request.get(key), str)}
    body = entry.get("resource") if method in ("POST", "PUT") else None
    parts = [p for p in path.split("/") if p]
    if method == "PUT" and len(parts) == 2 and isinstance(body, dict) and body.get("id") is None:
        body = {**body, "id": parts[1]}  # an entry's url names the id; the resource may leave it out
    return FhirRequest(method, path, parse_qsl(criteria, keep_blank_values=True), headers, body)


def _located(error: FhirError, index: int, res_type: str | None) -> FhirError:
    """The error as the Bundle reports it: each issue placed in its entry."""
    where = f"Bundle.entry[{index}]"
    for issue in error.issues:
        if issue.expression and res_type and issue.expression.startswith(f"{res_type}."):
            issue.expression = f"{where}.resource{issue.expression[len(res_type):]}"
        elif not (issue.expression or "").startswith(where):
            issue.expression = where if not issue.expression else f"{where}.{issue.expression}"
        if not issue.diagnostics.startswith(where):
            issue.diagnostics = f"{where}: {issue.diagnostics}"
    return error


async def _transaction(conn: AsyncConnection, ctx: Context, entries: list[dict], handle: Handle,
                       needs: Needs) -> list[dict]:
    requests = [_entry_request(entry, index, ctx.base) for index, entry in enumerate(entries)]
    for index, request in enumerate(requests):
        try:
            res_type, letters = needs(request)
            if res_type is not None:
                ctx.access.require(res_type, letters)
        except FhirError as error:
            raise _located(error, index, None) from None
    _refuse_overlapping_writes(requests)
    ids = await _assign_ids(conn, ctx, entries, requests)
    await _resolve_conditional_references(conn, ctx, requests, ids)
    for request in requests:
        if isinstance(request.body, dict):
            request.body = repoint(request.body, ids)
    deferred: list[Any] = []
    replies: list[dict | None] = [None] * len(entries)
    # One pipeline for every entry: what an entry writes without needing an answer travels with
    # the next statement that needs one (hub.store.resources.unanswered), instead of a round
    # trip of its own per entry. Not when an entry runs an operation ($…), whose work may use
    # COPY or a server-side cursor, which a pipeline cannot carry.
    plain = not any("$" in request.path for request in requests)
    async with conn.pipeline() if plain else nullcontext():
        for index in sorted(range(len(requests)), key=lambda i: _ORDER[requests[i].method]):
            entry_ctx = ctx.bound_to(conn, deferred=deferred, where=f"Bundle.entry[{index}]")
            try:
                replies[index] = _reply(await handle(entry_ctx, requests[index]), ctx.base)
            except FhirError as error:
                raise _located(error, index, _type_of(requests[index])) from None
        await run_deferred(conn, ctx, deferred)
    return replies  # type: ignore[return-value]


async def _batch(conn: AsyncConnection, ctx: Context, entries: list[dict], handle: Handle) -> list[dict]:
    replies = []
    for index, entry in enumerate(entries):
        try:
            request = _entry_request(entry, index, ctx.base)
            async with conn.transaction():
                outcome = await handle(ctx.bound_to(conn, where=f"Bundle.entry[{index}]"), request)
            replies.append(_reply(outcome, ctx.base))
        except FhirError as error:
            replies.append({"response": {"status": str(error.status), "outcome": error.outcome()}})
    return replies


def _type_of(request: FhirRequest) -> str | None:
    parts = [p for p in request.path.split("/") if p]
    return parts[0] if parts and not parts[0].startswith(("$", "_")) else None


def _refuse_overlapping_writes(requests: list[FhirRequest]) -> None:
    """A transaction may touch each resource once; two writes to one resource are a conflict
    the client must resolve (the specification says the transaction fails)."""
    seen: dict[str, int] = {}
    for index, request in enumerate(requests):
        if request.method not in ("PUT", "DELETE") or request.query:
            continue
        target = request.path.strip("/")
        if target.count("/") != 1:
            continue
        if target in seen:
            raise FhirError("conflict", f"Bundle.entry[{seen[target]}] and Bundle.entry[{index}] both "
                            f"write {target}", status=409, expression=f"Bundle.entry[{index}]")
        seen[target] = index


async def _assign_ids(conn: AsyncConnection, ctx: Context, entries: list[dict],
                      requests: list[FhirRequest]) -> dict[str, str]:
    """fullUrl → 'Type/id' for every entry whose resource gets an id in this transaction: a new
    id for a create, the url's for an update, and for a conditional create that finds its
    resource, that resource (so references to the fullUrl lead to what the entry answers)."""
    ids: dict[str, str] = {}
    for index, (entry, request) in enumerate(zip(entries, requests, strict=True)):
        full_url = entry.get("fullUrl")
        resource = request.body
        if not full_url or not isinstance(resource, dict):
            continue
        res_type = resource.get("resourceType")
        if request.method == "POST":
            existing = None
            condition = request.headers.get("if-none-exist")
            if condition and isinstance(res_type, str):
                require_supported(res_type)
                existing = await conditional.find_one(conn, res_type, condition, access=ctx.access)
            if existing is not None:
                new = existing.reference
            else:
                request.assigned_id = new_id()
                new = f"{res_type}/{request.assigned_id}"
        elif request.method == "PUT" and not request.query:
            new = request.path.strip("/")
        else:
            continue
        if full_url in ids:
            raise FhirError("invalid", f"fullUrl {full_url} appears twice in the transaction",
                            expression=f"Bundle.entry[{index}].fullUrl")
        ids[full_url] = new
    return ids


async def _resolve_conditional_references(conn: AsyncConnection, ctx: Context, requests: list[FhirRequest],
                                          ids: dict[str, str]) -> None:
    """A reference like 'Patient?identifier=sys|123' becomes the one Patient it selects."""
    for request in requests:
        for ref in references(request.body):
            if "?" in ref and ref not in ids and not ref.startswith(("urn:", "http")):
                res_type, _, criteria = ref.partition("?")
                require_supported(res_type)
                if not ctx.access.permits(res_type, "s"):
                    raise FhirError("forbidden", f"conditional reference {ref} is a search the access "
                                    f"token's scopes do not allow on {res_type}", status=403)
                found = await conditional.find_one(conn, res_type, criteria, access=ctx.access)
                if found is None:
                    raise FhirError("not-found", f"conditional reference {ref} matches no resource",
                                    status=404)
                ids[ref] = found.reference


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _reply(outcome: Outcome, base: str) -> dict[str, Any]:
    """An entry's response: status, and for a resource its location, ETag and last update; the
    resource itself (or Bundle) for reads and searches."""
    response: dict[str, Any] = {"status": _status(outcome.status)}
    reply: dict[str, Any] = {}
    version: Version | None = outcome.version
    if version is not None:
        reply["fullUrl"] = f"{base}/{version.reference}"
        if outcome.wrote:
            response["location"] = f"{version.reference}/_history/{version.version}"
        response["etag"] = version.etag
        response["lastModified"] = instant(version.last_updated)
        if not outcome.wrote:
            reply["resource"] = jsontext.loads(version.content)
    else:
        if "ETag" in outcome.headers:
            response["etag"] = outcome.headers["ETag"]
        if isinstance(outcome.body, bytes):
            reply["resource"] = jsontext.loads(outcome.body)
        elif isinstance(outcome.body, dict):
            reply["resource"] = outcome.body
    reply["response"] = response
    return reply
