"""The security middleware: who is calling, how often, how much they send, and the headers
every response carries. A pure ASGI middleware (BaseHTTPMiddleware costs a task and a stream
copy per request on the benchmarked read path); work per authorised request is a dict lookup
for the verified token, one for the deny set and one for the rate bucket.

On success the caller's Principal is at `scope["state"]["principal"]` (`request.state.principal`).
Scope enforcement (403) is downstream; this layer only answers 401, 413 and 429.

Every response passes through this layer's `send`, so it also notes in `scope["state"]` the
status answered (`response_status`) and a create's Location (`response_location`): the audit
middleware reads them there instead of wrapping `send` a second time on every request."""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.auth.principal import Principal
from hub.auth.ratelimit import retry_after
from hub.auth.runtime import AuthRuntime
from hub.fhir import jsontext
from hub.fhir.errors import FhirError, operation_outcome
from hub.runtime import logs

# Reachable without a token: the CapabilityStatement, discovery documents, the OAuth endpoints
# (their clients authenticate themselves there) and what orchestrators poll.
OPEN_PATHS = frozenset({"/fhir/metadata", "/fhir/.well-known/smart-configuration", "/auth/token",
                        "/auth/revoke", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs",
                        "/docs/oauth2-redirect", "/docs/assets/swagger-ui-bundle.js",
                        "/docs/assets/swagger-ui.css", "/docs/assets/favicon.png"})
OPEN_PREFIX = "/.well-known/"
# Pages (hub.web): the sign-in pages, the workspace and their stylesheet. No bearer token here:
# a person's browser holds a session cookie instead, which the pages check themselves (and each
# page reaches the record through the FHIR API with that person's access token, so it is
# authorised and audited there).
PAGE_PATHS = frozenset({"/auth/authorize", "/auth/oidc/start", "/auth/oidc/callback", "/auth/person/start",
                        "/auth/person/callback", "/me"})
# `/me/`: the person's own pages (issue 18); never a bare "/me" prefix, which /metrics also starts with.
PAGE_PREFIXES = ("/app", "/static/", "/me/")


def is_page(path: str) -> bool:
    return path in PAGE_PATHS or path.startswith(PAGE_PREFIXES)
# Token and revocation requests are a few hundred bytes; anything near this is not one.
_OAUTH_MAX_BODY = 64 * 1024
_OAUTH_PATHS = frozenset({"/auth/token", "/auth/revoke"})

_API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI at /docs is a page with inline script; its assets are the hub's own (hub/api/docs.py).
_DOCS_CSP = (b"default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
             b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY")]
_API_HEADERS = _COMMON + [(b"content-security-policy", _API_CSP)]
_NO_STORE = [(b"cache-control", b"no-store")]
_HSTS = [(b"strict-transport-security", b"max-age=31536000; includeSubDomains")]
_FHIR_JSON = b"application/fhir+json; charset=utf-8"


class BodyTooLarge(FhirError):
    """Raised from `receive` once a streamed body passes the limit (413 via the app's handler)."""

    def __init__(self, limit: int) -> None:
        super().__init__("too-long", f"the request body is larger than {limit} bytes", status=413)


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, auth: AuthRuntime, max_body_bytes: int) -> None:
        self.app = app
        self.auth = auth
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        send = _with_headers(send, path, scope.get("scheme") == "https", state)
        limit = _OAUTH_MAX_BODY if path in _OAUTH_PATHS else self.max_body
        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            if path in OPEN_PATHS or path.startswith(OPEN_PREFIX) or is_page(path):
                if path in _OAUTH_PATHS or path in PAGE_PATHS:
                    self._throttle(f"addr:{_client_address(scope)}")
            elif self.auth.enabled:
                principal = self.auth.authenticate(_header(scope, b"authorization"))
                state["principal"] = principal
                logs.bind(client_id=principal.client_id)  # on every log line of this request
                # An app used by many people (the workspace) gets a bucket per person.
                self._throttle(principal.user or principal.client_id)
        except FhirError as exc:
            await _refuse(send, exc)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        await self.app(scope, _capped(receive, limit), send)

    def _throttle(self, key: str) -> None:
        limiter = self.auth.limiter
        if not limiter.enabled:
            return
        wait = limiter.take(key)
        if wait:
            raise FhirError("throttled", "too many requests from this client; retry later", status=429,
                            headers={"Retry-After": retry_after(wait)})


def principal_of(scope: Scope) -> Principal | None:
    """The authenticated caller of a request, if any (None on open endpoints or with auth off)."""
    state = scope.get("state")
    return state.get("principal") if state else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise FhirError("structure", "Content-Length is not a number")
    return int(value)


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _with_headers(send: Send, path: str, https: bool, state: dict) -> Send:
    """`send` with the security headers added to the response start, noting its status (and
    Location, on a 201) in the request's `state` (see the module's docstring)."""
    page = is_page(path)
    if page:
        extra = list(_COMMON)  # each page sets its own Content-Security-Policy (hub.web.pages)
    else:
        extra = list(_API_HEADERS) if path != "/docs" else _COMMON + [(b"content-security-policy", _DOCS_CSP)]
    no_store = path.startswith(("/fhir", "/auth/", "/app", "/me/")) or path == "/me"
    if no_store:
        extra += _NO_STORE
    if https:
        extra += _HSTS

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers") or []
            status = state["response_status"] = message["status"]
            if status == 201:
                state["response_location"] = _location(headers)
            if no_store:
                headers = [h for h in headers if h[0].lower() != b"cache-control"]
            message["headers"] = [*headers, *extra]
        await send(message)

    return sending


def _location(headers: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key.lower() == b"location":
            return value.decode("latin-1")
    return None


def _capped(receive: Receive, limit: int) -> Receive:
    """`receive` that refuses a body once more than `limit` bytes have arrived (chunked uploads
    and lying Content-Lengths included)."""
    seen = 0

    async def receiving() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return receiving


async def _refuse(send: Send, error: FhirError) -> None:
    body = jsontext.dumps(operation_outcome(error.issues))
    headers = [(b"content-type", _FHIR_JSON), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
