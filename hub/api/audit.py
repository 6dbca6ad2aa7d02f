"""Audit at the API edge: the middleware that records every FHIR read, search and write (refused
ones too) without slowing the answer, and the AuditEvent routes through which a person can be
told who looked at their record.

The middleware is plain ASGI and sits outside the authentication middleware: it sees the 401s,
and after the inner app has run it reads what the inner layers left in `scope["state"]` (the
`principal`, the `response_status` and `response_location` the security middleware noted as
the answer went out, the `audit_patients` disclosed or written, the `audit_entities` touched). It hands
a compact record, as its table row, to `hub.audit.writer`, whose queue it starts and drains with the app's lifespan,
so the writer lives exactly as long as the app that feeds it."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.formats import fhir_response, render, render_text, response_format, wants_pretty
from hub.api import access as api_access
from hub.audit.events import audit_event
from hub.audit.record import MAX_QUERY_CHARS, AuditRecord, build_record, is_audited
from hub.audit.spill import Spill, spill_dir
from hub.audit.writer import AuditWriter
from hub.auth.principal import READ, SEARCH, grants
from hub.config import Settings
from hub.search.access import Access
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.interactions import bundles
from hub.store import audit as audit_store
from hub.store.resources import instant

router = APIRouter(prefix="/fhir/AuditEvent", tags=["AuditEvent"])


# --- recording ------------------------------------------------------------------------------


class AuditMiddleware:
    """Records each audited request once its answer has been sent."""

    def __init__(self, app: ASGIApp, *, settings: Settings, database_url: str) -> None:
        self.app = app
        self.store = audit_store.AuditStore(database_url)
        self.spill = Spill(spill_dir(settings.audit_spill_dir, settings.data_dir))
        self.shutdown_s = settings.audit_shutdown_s
        self.writer = AuditWriter(self._flush, queue_size=settings.audit_queue_size,
                                  batch_size=settings.audit_batch_size, linger_s=settings.audit_linger_s,
                                  retry_max_delay_s=settings.retry_max_delay_s,
                                  rejects=audit_store.refused, set_aside=self.spill)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http" or not is_audited(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        form = None
        if scope["method"] == "POST" and scope["path"].endswith("/_search"):
            form = bytearray()
            receive = _keeping_form(receive, form)  # a POSTed search's criteria are in its body
        failed = False
        try:
            await self.app(scope, receive, send)
        except Exception:
            failed = True  # the outer error handler answers 500
            raise  # (a cancelled request keeps status 0: no answer was sent, outcome 12)
        finally:
            # The security middleware, inside this one, noted what was answered.
            status = state.get("response_status", 0) or (500 if failed else 0)
            # Queued as the table row: a tuple of plain values, which the collector stops
            # tracking at its next pass, where a record would be walked until it is written.
            row = _row(_record(scope, state, status, state.get("response_location"),
                               bytes(form) if form else b""))
            if not self.writer.offer(row):
                await self.writer.submit(row)  # the queue is full: wait for room, lose nothing

    def _lifespan_send(self, send: Send) -> Send:
        """Start the writer when the app has started; drain it before the app reports stopped."""
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.writer.start()
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.writer.close(self.shutdown_s)
                await self.store.close()
            await send(message)
        return lifespan_send

    async def _flush(self, rows: list[tuple], retry: bool) -> None:
        await self.store.write(rows, retry=retry)


def _keeping_form(receive: Receive, form: bytearray) -> Receive:
    """`receive` that also keeps the start of the body (up to what a record keeps of a query)."""
    async def receiving() -> Message:
        message = await receive()
        if message["type"] == "http.request" and len(form) < MAX_QUERY_CHARS:
            form.extend(message.get("body", b"")[:MAX_QUERY_CHARS - len(form)])
        return message
    return receiving


def _record(scope: Scope, state: dict, status: int, location: str | None, form: bytes) -> AuditRecord:
    client = scope.get("client")
    query = scope.get("query_string", b"")
    if form:
        query = query + b"&" + form if query else form
    return build_record(
        method=scope["method"], path=scope["path"],
        query=query.decode("latin-1"), status=status,
        recorded=datetime.now(UTC), state=state, address=client[0] if client else None,
        location=location,
    )


def _row(record: AuditRecord) -> tuple:
    """The audit table's row for a record (hub.store.audit.COLUMNS), arrays as literals, with
    any NUL character written `%00` (PostgreSQL text cannot hold it; build_record already does
    this for the path and query, the only fields a caller writes freely)."""
    row = (record.id, record.recorded, record.interaction, record.action, record.outcome,
            record.status, record.method, record.path, record.query, record.client_id,
            record.organisation, record.organisation_system, record.partner_class,
            record.purpose_of_use, record.token_id, record.address,
            audit_store.text_array(record.patients), audit_store.text_array(record.entities), record.user_ref,
            record.kind, record.policy)
    if any(type(v) is str and "\x00" in v for v in row):
        row = tuple(v.replace("\x00", "%00") if type(v) is str else v for v in row)
    return row


def _from_row(row: tuple) -> AuditRecord:
    return AuditRecord(*row[:16], patients=list(row[16]), entities=list(row[17]), user_ref=row[18], kind=row[19],
                       policy=row[20])


# --- what a reader may see (issue 20) ------------------------------------------------------
# An audit record names people, resources and the query a caller sent (an NHS number searched
# for, say). A reader from another organisation sees of it only what points at what it may see:
# the patients and resources whose current rows its access admits, and another organisation's
# query text or path (which can name anything, found or not) only when the record names someone
# and everything it names is visible to the reader. The organisation that made the request (and
# the hub's own trusted access) sees its own records whole. A search by a patient or resource the
# reader may not see matches only its own organisation's records (`_search`), so a count cannot
# tell it that someone else looked at a hidden person either.


def _own(access: Access, record: AuditRecord) -> bool:
    """Whether `record` is of a request `access`'s organisation made (or `access` is the hub)."""
    return access.trusted or (record.organisation is not None and record.organisation == access.org_code
                              and (record.organisation_system or None) == (access.org_system or None))


def _references(record: AuditRecord) -> set[str]:
    return {f"Patient/{p}" for p in record.patients} | set(record.entities)


def _as_seen(access: Access, record: AuditRecord, seen: set[str]) -> AuditRecord:
    """`record` as `access` may see it, `seen` being the references it may see. The query and
    path are kept only when the record names at least one person and the reader may see every
    person and resource it names: a search that found nobody (an NHS number looked for, say)
    or found something hidden keeps what was asked to the organisation that asked."""
    if _own(access, record):
        return record
    patients = [p for p in record.patients if f"Patient/{p}" in seen]
    entities = [e for e in record.entities if e in seen]
    whole = bool(record.patients) and len(patients) == len(record.patients) and len(entities) == len(record.entities)
    if whole:
        return record
    return replace(record, patients=patients, entities=entities, path="", query="")


# --- reading --------------------------------------------------------------------------------


def _require(request: Request, interaction: str) -> None:
    """Only clients granted AuditEvent access by name read the audit trail
    (`system/AuditEvent.rs`): it shows who looked at whom across every partner, so a wildcard
    such as `system/*.rs`, granted for the record, does not open it."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        raise FhirError("login", "an access token is required to read AuditEvents", status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="ipc-hub"'})
    if interaction not in grants(principal.scopes).get("AuditEvent", ()):
        scope = "system/AuditEvent.rs"
        raise FhirError("forbidden", f"this client's scopes do not allow AuditEvent "
                        f"{'search' if interaction == SEARCH else 'read'} (needs {scope})")


def _note_disclosed(request: Request, records: list[AuditRecord]) -> None:
    """Reading the audit trail is itself audited: the people whose trail was shown, the events."""
    state = request.scope.setdefault("state", {})
    patients = state.setdefault("audit_patients", set())
    for record in records:
        patients.update(record.patients)
    entities = state.setdefault("audit_entities", [])
    entities += [f"AuditEvent/{r.id}" for r in records[:100 - len(entities)]]


def _person_trail(request: Request, access: Access) -> tuple[str, list]:
    settings: Settings = request.app.state.settings
    return audit_store.person_trail(access, audit_store.withheld_purposes(settings.person_trail_withheld_purposes))


def _site(request: Request) -> str:
    return request.app.state.base_url


@router.get("")
async def search_audit_events(request: Request) -> Response:
    """Search the audit trail: `patient`, `entity`, `agent` (client id or organisation code),
    `date`, `outcome`, `action`, `subtype`, `_count`, `_offset`, `_summary=count`; newest first."""
    return await _search(request, list(request.query_params.multi_items()))


@router.post("/_search")
async def search_audit_events_post(request: Request) -> Response:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise FhirError("not-supported", "POST _search takes application/x-www-form-urlencoded",
                        status=415)
    body = await request.body()
    try:
        form = parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise FhirError("structure", "the search form is not UTF-8") from None
    return await _search(request, list(request.query_params.multi_items()) + form)


@router.get("/{event_id}")
async def read_audit_event(event_id: str, request: Request) -> Response:
    _require(request, READ)
    access = api_access.of(request)
    async with request.app.state.pool.connection() as conn:
        row = await audit_store.read(conn, event_id, only=_person_trail(request, access)
                                     if access.patient is not None else None)
        if row is None:
            raise FhirError("not-found", f"AuditEvent/{event_id[:64]} is not known")
        record = _from_row(row)
        record = _as_seen(access, record, await audit_store.visible_references(conn, access, _references(record)))
    _note_disclosed(request, [record])
    fmt = response_format(request)
    return fhir_response(render(audit_event(record, site=_site(request)), fmt,
                                pretty=wants_pretty(request)), fmt)


@router.api_route("", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/{rest:path}", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def refuse_write(request: Request) -> Response:
    raise FhirError("not-supported", "AuditEvents are written by the hub only; they cannot be "
                    "created, changed or deleted through the API", status=405)


async def _search(request: Request, pairs: list[tuple[str, str]]) -> Response:
    _require(request, SEARCH)
    settings: Settings = request.app.state.settings
    strict = "handling=strict" in request.headers.get("prefer", "")
    query = audit_store.parse_audit_query(pairs, default_count=settings.default_page_size,
                                          max_count=settings.max_page_size, strict=strict)
    access = api_access.of(request)
    async with request.app.state.pool.connection() as conn:
        if access.patient is not None:
            # A person's own app: the trail of their record alone, less what is withheld.
            condition, params = _person_trail(request, access)
            query.conditions.append(condition)
            query.params += params
        named = set(query.named)
        if named and not access.trusted and await audit_store.visible_references(conn, access, named) != named:
            # A person or resource this reader may not see: only its own organisation's records.
            condition, params = audit_store.own_organisation(access)
            query.conditions.append(condition)
            query.params += params
        if query.snapshot is None:
            query.snapshot = await audit_store.last_written(conn)
        rows, total = await audit_store.search(conn, query)
        records = [_from_row(row) for row in rows]
        seen = await audit_store.visible_references(conn, access, {ref for r in records if not _own(access, r)
                                                                   for ref in _references(r)})
    records = [_as_seen(access, r, seen) for r in records]
    _note_disclosed(request, records)
    site = _site(request)
    entries = [orjson.dumps({"fullUrl": f"{site}/AuditEvent/{r.id}",
                             "resource": audit_event(r, site=site),
                             "search": {"mode": "match"}}).decode() for r in records]
    if query.ignored:
        entries.append(bundles.outcome_entry(operation_outcome([
            Issue("not-supported", f"search parameter '{name}' is not supported and was ignored",
                  severity="warning") for name in query.ignored])))
    kept = query.kept + [("_count", str(query.count)), ("_snapshot", str(query.snapshot))]
    links = bundles.page_links(f"{site}/AuditEvent", kept, query.offset, query.count, total)
    body = bundles.bundle_text("searchset", entries, total=total, links=links,
                               bundle_id=str(uuid.uuid4()), moment=instant(datetime.now(UTC)))
    fmt = response_format(request)
    return fhir_response(render_text(body, fmt, pretty=wants_pretty(request)), fmt)
