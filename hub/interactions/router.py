"""The one entry to every FHIR interaction: a plain request and the caller's context in, an
outcome out. The HTTP routes (hub.api.rest) call `handle` for each request, and a transaction or
batch Bundle calls it for each entry, so scopes, conditional headers, consent and the checks on
writes are implemented once.

`route` reads the path into a Route (which interaction, on what); `letters` says which SMART
scope letters it needs; `handle` checks them and runs the interaction."""
from __future__ import annotations

from dataclasses import dataclass

from hub.fhir.errors import FhirError
from hub.fhir.resources import require_supported, require_valid_id
from hub.interactions import bundle, history, read, search, subscriptions, write
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations import OPERATIONS


@dataclass(slots=True)
class Route:
    interaction: str  # a CapabilityStatement interaction code, or "operation" / "batch"
    res_type: str | None = None
    res_id: str | None = None
    version: str | None = None
    operation: str | None = None  # the name after `$`

    @property
    def level(self) -> str:
        return "instance" if self.res_id else "type" if self.res_type else "system"


def route(method: str, path: str) -> Route:
    """The interaction `method` on `path` (below the FHIR base) asks for; 404 for a path no
    interaction has, 405 for a method the path does not take."""
    parts = [p for p in path.split("/") if p]
    n = len(parts)
    if n and parts[-1].startswith("$"):
        return _operation_route(method, parts)
    if n == 0:
        if method == "POST":
            return Route("batch")
        raise _not_allowed(method, "the server base (POST a transaction or batch Bundle)")
    if parts[0] == "_history":
        if n == 1 and method == "GET":
            return Route("history-system")
        raise _no_path(path)
    res_type = parts[0]
    require_supported(res_type)
    if res_type == "AuditEvent":
        # The audit trail is the hub's own, served by its own routes (hub.api.audit); no Bundle
        # entry reads or writes it here, so no partner can forge or erase who looked.
        raise _not_allowed(method, "/AuditEvent in this interaction (the audit trail has its own routes)")
    if n == 1:
        found = {"GET": "search-type", "POST": "create", "PUT": "update-conditional"}.get(method)
        if found is None:
            raise _not_allowed(method, f"/{res_type} (conditional delete is not supported)")
        return Route(found, res_type)
    if parts[1] == "_search":
        if n == 2 and method in ("GET", "POST"):
            return Route("search-type", res_type)
        raise _no_path(path)
    if parts[1] == "_history":
        if n == 2 and method == "GET":
            return Route("history-type", res_type)
        raise _no_path(path)
    res_id = parts[1]
    if n == 2:
        found = {"GET": "read", "PUT": "update", "DELETE": "delete"}.get(method)
        if found is None:
            raise _not_allowed(method, f"/{res_type}/{res_id[:64]}")
        if method != "PUT":  # an update checks its id itself (400, not 404: it may create)
            _known_id(res_type, res_id)
        return Route(found, res_type, res_id)
    if parts[2] == "_history" and method == "GET" and n in (3, 4):
        _known_id(res_type, res_id)
        if n == 3:
            return Route("history-instance", res_type, res_id)
        if not parts[3].isdigit() or len(parts[3]) > 9:
            raise FhirError("not-found", f"'{parts[3][:40]}' is not a version of {res_type}/{res_id}")
        return Route("vread", res_type, res_id, parts[3])
    raise _no_path(path)


def _operation_route(method: str, parts: list[str]) -> Route:
    name = parts[-1][1:]
    if len(parts) == 1:
        found = Route("operation", operation=name)
    elif len(parts) == 2:
        require_supported(parts[0])
        found = Route("operation", parts[0], operation=name)
    elif len(parts) == 3:
        require_supported(parts[0])
        _known_id(parts[0], parts[1])
        found = Route("operation", parts[0], parts[1], operation=name)
    else:
        raise _no_path("/".join(parts))
    operation = OPERATIONS.get(name)
    if operation is None or not operation.offered(found.level, found.res_type):
        raise FhirError("not-supported", f"operation ${name[:64]} is not supported at {'/'.join(parts[:-1]) or 'the server base'}",
                        status=404)
    if method not in operation.methods:
        raise _not_allowed(method, f"${name} (it takes {' and '.join(operation.methods)})")
    return found


def _known_id(res_type: str, res_id: str) -> None:
    """An id no resource can have names nothing: 404, as for any absent resource."""
    try:
        require_valid_id(res_id)
    except FhirError:
        raise FhirError("not-found", f"{res_type}/{res_id[:64]} is not known to the hub") from None


def _no_path(path: str) -> FhirError:
    return FhirError("not-found", f"no FHIR interaction at /{path[:120]}", status=404)


def _not_allowed(method: str, where: str) -> FhirError:
    return FhirError("not-supported", f"{method} is not allowed on {where}", status=405)


def letters(found: Route, request: FhirRequest) -> str:
    """The SMART scope letters the interaction needs before it runs (update-as-create's extra
    `c` is checked once the update knows it creates; operations check their own)."""
    kind = found.interaction
    if kind in ("read", "vread", "history-instance"):
        return "r"
    if kind in ("search-type", "history-type"):
        return "s"
    if kind == "create":
        return "cs" if write.create_condition(request) else "c"
    if kind == "update":
        return "u"
    if kind == "update-conditional":
        return "us"
    if kind == "delete":
        return "d"
    return ""


def check_request(request: FhirRequest) -> None:
    """400 for what PostgreSQL cannot hold and no FHIR value contains: a NUL character in the
    path, a search parameter or a conditional header (a 500 otherwise, when it reached SQL)."""
    if "\x00" in request.path or (request.query and any("\x00" in k or "\x00" in v for k, v in request.query)):
        raise FhirError("invalid", "the request's path or parameters contain a NUL character", status=400)
    if isinstance(request.headers, dict):  # a Bundle entry's (HTTP itself refuses NUL in headers)
        for name, value in request.headers.items():
            if "\x00" in value:
                raise FhirError("invalid", f"the {name} header contains a NUL character", status=400)


async def handle(ctx: Context, request: FhirRequest) -> Outcome:
    """Run one interaction for the caller in `ctx`."""
    check_request(request)
    found = route(request.method, request.path)
    if found.res_type is not None:
        ctx.access.require(found.res_type, letters(found, request))
    kind = found.interaction
    if found.res_type == subscriptions.TYPE:
        await subscriptions.guard(ctx, kind, found.res_id, request)
    if kind == "read":
        return await read.read(ctx, request, found.res_type, found.res_id)
    if kind == "search-type":
        return await search.search_type(ctx, request, found.res_type)
    if kind == "vread":
        return await read.vread(ctx, request, found.res_type, found.res_id, int(found.version))
    if kind == "create":
        return await write.create(ctx, request, found.res_type)
    if kind == "update":
        return await write.update(ctx, request, found.res_type, found.res_id)
    if kind == "update-conditional":
        return await write.conditional_update(ctx, request, found.res_type)
    if kind == "delete":
        return await write.delete(ctx, request, found.res_type, found.res_id)
    if kind.startswith("history"):
        return await history.history(ctx, request, found.res_type, found.res_id)
    if kind == "operation":
        return await OPERATIONS[found.operation].run(ctx, request, found.res_type, found.res_id)
    return await bundle.transaction_or_batch(ctx, request, handle, needs)


def needs(request: FhirRequest) -> tuple[str | None, str]:
    """(resource type, scope letters) an entry's interaction needs: a transaction checks every
    entry before any runs."""
    check_request(request)
    found = route(request.method, request.path)
    return found.res_type, letters(found, request)
