"""The FastAPI application: routers, the database pool, and the one place where errors become
HTTP responses (an OperationOutcome in the client's format, never a stack trace)."""
from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.api import access, audit, capability, docs, exports, health, oauth, openapi, operations, rest
from hub.api.metrics import RequestMetrics
from hub.api.formats import JSON, fhir_response, render, response_format
from hub import web
from hub.api.security import SecurityMiddleware
from hub.auth.runtime import auth_runtime, revocations_followed
from hub.config import Settings
from hub.fhir import ids
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.fhir.resources import prepare as prepare_validation
from hub.fhir.validation import load_guide
from hub.interactions.context import Database
from hub.plans.reviews import parse_intervals
from hub.runtime.process import settle_heap
from hub.store import idkeys, index
from hub.store.conformance import load_conformance

log = logging.getLogger(__name__)


def create_app(settings: Settings, database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = AsyncConnectionPool(database_url, min_size=settings.db_pool_min,
                                   max_size=settings.db_pool_max, open=False,
                                   kwargs={"autocommit": True})
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        app.state.database = Database(pool)
        async with pool.connection() as conn:  # the IPC guide, served at /fhir/StructureDefinition…
            await idkeys.ensure(conn)  # the id key this record's ids were made with (hub/fhir/ids.py)
            guide = load_guide()
            await load_conformance(conn, [*guide.conformance_resources(), capability.implementation_guide(guide)])
            await index.backfill(conn)  # index rows whose meaning changed since they were written
        stop_exports = _start_export_runner(settings, database_url)
        try:
            async with revocations_followed(app.state.auth, database_url):
                yield
        finally:
            stop_exports()
            await pool.close()

    app = FastAPI(
        title="IPC Hub",
        summary="FHIR R4 shared record for Integrated Personal Commissioning",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by hub.api.docs, without a CDN
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    access.check_settings(settings)  # a bad HUB_CONSENT_DEFAULTS stops start-up, not a request
    ids.load_key(settings.data_dir, settings.id_key_file)  # derived ids are keyed: the key, or stop now
    parse_intervals(settings.review_intervals)  # so does a bad HUB_REVIEW_INTERVALS
    prepare_validation()             # the validation rules, compiled now rather than on the first write
    app.state.auth = auth_runtime(settings)
    app.state.base_url = f"{settings.public_base_url()}/fhir"
    # The FHIR REST routes first: the read is the hottest, and hub.api.paths keeps paths unambiguous.
    # operations before rest: /fhir/{type}/$validate must not be taken for anything else.
    for module in (audit, operations, exports, rest, capability, health, oauth, docs):
        _add_routes(app, module.router)
    _install_error_handlers(app)
    web.install(app)  # the sign-in pages and the workspace (after the FHIR routes: they match first)
    openapi.describe(app)
    # Middlewares, innermost first: each wraps those listed before it (an audit layer goes after
    # security, so it sees every request and the Principal security put in scope["state"]).
    middlewares = [Middleware(ContainedErrors),
                   Middleware(SecurityMiddleware, auth=app.state.auth, max_body_bytes=settings.max_body_bytes)]
    if settings.audit_enabled:
        middlewares.append(Middleware(audit.AuditMiddleware, settings=settings, database_url=database_url))
    middlewares.append(Middleware(RequestMetrics))  # outermost: every request, refusals too
    for middleware in middlewares:
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    return app


def _start_export_runner(settings: Settings, database_url: str) -> Callable[[], None]:
    """Each API process runs Bulk Data exports in a thread of its own unless HUB_EXPORT_IN_API is
    false (then `ipc-hub worker exporter` processes do): jobs are shared through the database, so
    any runner may take any job. Returns what stops it."""
    if not settings.export_in_api:
        return lambda: None
    from hub.exports.runner import ExportRunner

    runner = ExportRunner(database_url, settings.exports_folder(), file_resources=settings.export_file_resources,
                          retention_s=settings.export_retention_s, niceness=settings.export_niceness)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), name="ipc-exporter", daemon=True)
    thread.start()

    def stopping() -> None:
        stop.set()
        thread.join(10)

    return stopping


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Put a router's routes straight on the app. `include_router` nests them behind a matching
    layer that cost ~35 µs per request here (a quarter of a read); the routes already carry
    their full paths, so nothing is lost."""
    app.router.routes.extend(router.routes)


def _outcome_response(request: Request, status: int, issues: list[Issue],
                      headers: dict[str, str] | None = None) -> Response:
    try:
        fmt = response_format(request)
    except FhirError:
        fmt = JSON
    return fhir_response(render(operation_outcome(issues), fmt), fmt, status=status, headers=headers)


_FAILED = [Issue("exception", "the server failed to process the request; it has been logged")]


def _log_failure(exc: BaseException, method: str, path: str) -> None:
    # The kind and place of the failure, never its text or the request's data: either may identify
    # a person (a database error repeats the values it refused). At DEBUG, where in the code too.
    log.error("unhandled %s in %s %s", type(exc).__name__, method, path)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("where: %s", "".join(traceback.format_tb(exc.__traceback__)))


class ContainedErrors:
    """Answers an unhandled exception with the 500 OperationOutcome inside the middleware stack.
    Starlette's outermost layer would answer it too, but then re-raise it to the server, and
    uvicorn logs the whole traceback and the exception's text, which may carry a person's data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            # No FHIR value holds a NUL and PostgreSQL cannot store one: refused here for every
            # route (the core refuses it again in a Bundle entry's url).
            issue = Issue("invalid", "the request's path or query contains a NUL character")
            await _outcome_response(Request(scope), 400, [issue])(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - the edge where any failure becomes a 500
            _log_failure(exc, scope.get("method", ""), scope.get("path", ""))
            try:
                await _outcome_response(Request(scope), 500, _FAILED)(scope, receive, send)
            except RuntimeError:
                pass  # the response had started: the client sees it cut short, as it must


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        return _outcome_response(request, exc.status, exc.issues, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            issue = Issue("not-found", f"no such endpoint: {request.method} {request.url.path}")
        elif exc.status_code == 405:
            issue = Issue("not-supported", f"{request.method} is not allowed on {request.url.path}")
        else:
            issue = Issue("processing", str(exc.detail))
        return _outcome_response(request, exc.status_code, [issue], dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _outcome_response(request, 400, [Issue("invalid", "the request is not well formed")])

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        _log_failure(exc, request.method, request.url.path)
        return _outcome_response(request, 500, _FAILED)


def app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes: each builds its app from HUB_* settings."""
    from hub.config import load_settings

    settings = load_settings()
    if not settings.database_url:
        raise RuntimeError("HUB_DATABASE_URL must be set for multi-process serving")
    app = create_app(settings, settings.database_url)
    settle_heap()
    return app
