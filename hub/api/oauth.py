"""OAuth2 and SMART discovery over HTTP: the token and revocation endpoints, the JWKS and
`/.well-known/smart-configuration`. Answers here are OAuth JSON (RFC 6749 §5.2), not FHIR."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from hub.auth.runtime import AuthRuntime
from hub.auth.server import (
    ASSERTION_ALGORITHMS,
    AUTH_METHODS,
    GRANT_TYPES,
    FormRequest,
    Outcome,
    replayed_assertion,
    requested_client_id,
    revocation_response,
    token_response,
)
from hub.fhir.resources import SUPPORTED_TYPES
from hub.store import clients

router = APIRouter()

_FORM = "application/x-www-form-urlencoded"
_NO_CACHE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _runtime(request: Request) -> AuthRuntime:
    return request.app.state.auth


@router.post("/auth/token", tags=["OAuth2"], summary="Client-credentials access token (SMART Backend Services)")
async def token(request: Request) -> JSONResponse:
    outcome = await _authenticated(request, _runtime(request).token_endpoint, token_response)
    return outcome if isinstance(outcome, JSONResponse) else _respond(outcome)


@router.post("/auth/revoke", tags=["OAuth2"], summary="Revoke an access token (RFC 7009)")
async def revoke(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    outcome = await _authenticated(request, runtime.revocation_endpoint, revocation_response)
    if isinstance(outcome, JSONResponse):
        return outcome
    if outcome.revoked is not None:
        revoked = outcome.revoked
        async with request.app.state.pool.connection() as conn:
            await clients.revoke_token(conn, revoked.token_id, revoked.client_id, revoked.expires_at)
        # This process need not wait for its own notice to come back.
        runtime.deny.revoke_token(revoked.token_id, revoked.expires_at)
    return _respond(outcome)


@router.get("/.well-known/jwks.json", tags=["OAuth2"], summary="Public keys that sign access tokens")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(_runtime(request).jwks(), headers={"Cache-Control": "public, max-age=300"})


@router.get("/.well-known/smart-configuration", tags=["OAuth2"], summary="SMART App Launch 2 discovery")
async def smart_configuration(request: Request) -> JSONResponse:
    return JSONResponse(smart_document(_runtime(request)))


def smart_document(runtime: AuthRuntime) -> dict[str, Any]:
    """What a SMART Backend Services client needs to find and use the authorisation server."""
    return {
        "issuer": runtime.issuer,
        "jwks_uri": runtime.jwks_uri,
        "token_endpoint": runtime.token_endpoint,
        "revocation_endpoint": runtime.revocation_endpoint,
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": ["system/*.cruds", "system/*.rs",
                             *(f"system/{t}.cruds" for t in sorted(SUPPORTED_TYPES))],
        "response_types_supported": ["token"],
        "capabilities": ["permission-v2", "client-confidential-symmetric",
                         "client-confidential-asymmetric"],
    }


async def _authenticated(request: Request, endpoint: str,
                         answer: Callable[[AuthRuntime, clients.ClientRecord | None, FormRequest], Outcome],
                         ) -> Outcome | JSONResponse:
    """What both OAuth endpoints do first: read the form, load the one client it names, let
    authlib authenticate it and answer (in a thread: scrypt is deliberately slow), and refuse an
    assertion whose jti was used before."""
    runtime = _runtime(request)
    form = await _form(request, endpoint)
    if isinstance(form, JSONResponse):
        return form
    client = await _client(request, form)
    outcome = await run_in_threadpool(answer, runtime, client, form)
    if not await _assertion_fresh(request, outcome):
        return replayed_assertion()
    return outcome


async def _form(request: Request, endpoint: str) -> FormRequest | JSONResponse:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != _FORM:
        return _oauth_error(400, "invalid_request", f"send the request as {_FORM}")
    form = await request.form()
    pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    return FormRequest(request.method, endpoint, pairs, request.headers)


async def _client(request: Request, form: FormRequest) -> clients.ClientRecord | None:
    client_id = requested_client_id(form)
    if not client_id:
        return None
    async with request.app.state.pool.connection() as conn:
        return await clients.get_client(conn, client_id)


async def _assertion_fresh(request: Request, outcome: Outcome) -> bool:
    """Record a private_key_jwt assertion's jti; False if it was used before (a replay)."""
    if outcome.assertion is None:
        return True
    client_id, jti, exp = outcome.assertion
    async with request.app.state.pool.connection() as conn:
        return await clients.record_assertion(conn, client_id, jti, exp)


def _respond(outcome: Outcome) -> JSONResponse:
    headers = dict(outcome.headers)
    headers.update(_NO_CACHE)
    headers.pop("Content-Type", None)
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers=_NO_CACHE)
