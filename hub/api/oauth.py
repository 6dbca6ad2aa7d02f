"""OAuth2 and SMART discovery over HTTP: the token and revocation endpoints, the JWKS,
`/.well-known/smart-configuration` (at the server root and at the FHIR base, where SMART App
Launch 2 says clients look) and `/.well-known/openid-configuration`. Answers here are OAuth JSON
(RFC 6749 §5.2), not FHIR. The authorization endpoint is a page (a person signs in there): it
lives with the other pages, in hub.web.signin.

Codes and refresh tokens are single use, enforced here around authlib's decision: the record is
read first (a value already used revokes every token of its family and is refused), and once
authlib has accepted the request the value is claimed atomically (a request that lost a race
for it is refused the same way) in the transaction that stores the new refresh token."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from hub.auth.runtime import AuthRuntime
from hub.auth.roles import ROLE_SCOPES
from hub.auth.scopes import IDENTITY_SCOPES
from hub.auth.server import (
    APP_AUTH_METHODS,
    ASSERTION_ALGORITHMS,
    GRANT_TYPES,
    FormRequest,
    Outcome,
    replayed_assertion,
    requested_client_id,
    revocation_response,
    token_response,
)
from hub.auth.user_grants import Issued, Preloaded
from hub.fhir.resources import SUPPORTED_TYPES
from hub.store import clients, grants, users

router = APIRouter()

_FORM = "application/x-www-form-urlencoded"
_NO_CACHE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _runtime(request: Request) -> AuthRuntime:
    return request.app.state.auth


@router.post("/auth/token", tags=["OAuth2"],
             summary="Access tokens: client credentials (SMART Backend Services), authorization code "
                     "with PKCE and refresh token (SMART App Launch 2)")
async def token(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    form = await _form(request, runtime.token_endpoint)
    if isinstance(form, JSONResponse):
        return form
    fields = dict(form.form)
    preloaded, refused = await _preload(request, fields)
    if refused is not None:
        return refused
    outcome = await _authenticated(request, form, token_response, preloaded)
    if isinstance(outcome, JSONResponse):
        return outcome
    if outcome.issued is not None and not await _store_issued(request, outcome.issued, preloaded):
        return _oauth_error(400, "invalid_grant", "this grant has already been used")
    return _respond(outcome)


@router.post("/auth/revoke", tags=["OAuth2"], summary="Revoke an access or refresh token (RFC 7009)")
async def revoke(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    form = await _form(request, runtime.revocation_endpoint)
    if isinstance(form, JSONResponse):
        return form
    value = dict(form.form).get("token") or ""
    preloaded = Preloaded()
    if value:
        async with request.app.state.pool.connection() as conn:
            record = await grants.get_refresh(conn, value)
        if record is not None:
            preloaded = Preloaded(refresh=record, refresh_value=value)
    outcome = await _authenticated(request, form, revocation_response, preloaded)
    if isinstance(outcome, JSONResponse):
        return outcome
    if outcome.revoked is not None:
        revoked = outcome.revoked
        async with request.app.state.pool.connection() as conn:
            await clients.revoke_token(conn, revoked.token_id, revoked.client_id, revoked.expires_at)
        # This process need not wait for its own notice to come back.
        runtime.deny.revoke_token(revoked.token_id, revoked.expires_at)
    if outcome.revoked_refresh is not None and preloaded.refresh is not None:
        async with request.app.state.pool.connection() as conn:
            await grants.revoke_family(conn, preloaded.refresh.family_id)
    return _respond(outcome)


async def _preload(request: Request, fields: dict[str, str]) -> tuple[Preloaded, JSONResponse | None]:
    """The code or refresh token a grant request names, with its person. One presented after
    its use has leaked: every token of its family is revoked and the request refused."""
    grant_type = fields.get("grant_type")
    async with request.app.state.pool.connection() as conn:
        if grant_type == "authorization_code" and fields.get("code"):
            code = await grants.get_code(conn, fields["code"])
            if code is None:
                return Preloaded(), None
            if code.used:
                await grants.revoke_family(conn, code.family_id)
                return Preloaded(), _oauth_error(400, "invalid_grant", "this authorization code has already "
                                                 "been used; the tokens it gave have been revoked")
            # A proxy for several people opens the record chosen at sign-in (SMART patient
            # selection), while the account may still open it.
            user = await users.in_launch(conn, await users.get_user(conn, code.user_id), code.family_id)
            return Preloaded(code=code, code_value=fields["code"], user=user), None
        if grant_type == "refresh_token" and fields.get("refresh_token"):
            refresh = await grants.get_refresh(conn, fields["refresh_token"])
            if refresh is None:
                return Preloaded(), None
            if refresh.used and not refresh.revoked:
                await grants.revoke_family(conn, refresh.family_id)
                return Preloaded(), _oauth_error(400, "invalid_grant", "this refresh token has already been "
                                                 "used; every token of its sign-in has been revoked")
            user = await users.in_launch(conn, await users.get_user(conn, refresh.user_id), refresh.family_id)
            return Preloaded(refresh=refresh, refresh_value=fields["refresh_token"], user=user), None
    return Preloaded(), None


async def _store_issued(request: Request, issued: Issued, preloaded: Preloaded) -> bool:
    """Claim the code or refresh token that was exchanged and store what replaces it, in one
    transaction; False (and the family revoked) if another request claimed it first."""
    async with request.app.state.pool.connection() as conn:
        async with conn.transaction():
            if preloaded.code_value is not None:
                claimed = await grants.claim_code(conn, preloaded.code_value)
            else:
                claimed = await grants.claim_refresh(conn, preloaded.refresh_value or "")
            if claimed:
                if issued.refresh_token is not None:
                    await grants.insert_refresh(
                        conn, issued.refresh_token, family_id=issued.family_id, client_id=issued.client_id,
                        user_id=issued.user_id, scope=issued.scope, access_jti=issued.access_jti,
                        access_expires_at=issued.access_expires_at, expires_at=issued.refresh_expires_at)
                else:
                    await grants.note_access_token(
                        conn, family_id=issued.family_id, client_id=issued.client_id, user_id=issued.user_id,
                        access_jti=issued.access_jti, access_expires_at=issued.access_expires_at)
        if not claimed:
            await grants.revoke_family(conn, issued.family_id)
    return claimed


@router.get("/.well-known/jwks.json", tags=["OAuth2"], summary="Public keys that sign access tokens")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(_runtime(request).jwks(), headers={"Cache-Control": "public, max-age=300"})


@router.get("/.well-known/smart-configuration", tags=["OAuth2"], summary="SMART App Launch 2 discovery")
@router.get("/fhir/.well-known/smart-configuration", tags=["OAuth2"],
            summary="SMART App Launch 2 discovery, at the FHIR base")
async def smart_configuration(request: Request) -> JSONResponse:
    return JSONResponse(smart_document(_runtime(request)))


@router.get("/.well-known/openid-configuration", tags=["OAuth2"], summary="OpenID Connect discovery")
async def openid_configuration(request: Request) -> JSONResponse:
    return JSONResponse(openid_document(_runtime(request)))


# SMART App Launch 2 capabilities, each true of this server (tests/integration/test_signin_protocol.py
# exercises every one): standalone launch of apps for people, public and confidential apps,
# OpenID Connect sign-in, v2 scopes, user-level access, refresh tokens (offline_access).
CAPABILITIES = ["launch-standalone", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "sso-openid-connect", "permission-v2", "permission-user",
                "permission-offline"]


def scopes_supported() -> list[str]:
    roles = sorted({s for scopes in ROLE_SCOPES.values() for s in scopes})
    return [*IDENTITY_SCOPES, "user/*.cruds", *roles, "system/*.cruds", "system/*.rs",
            *(f"system/{t}.cruds" for t in sorted(SUPPORTED_TYPES))]


def smart_document(runtime: AuthRuntime) -> dict[str, Any]:
    """What a SMART client (a backend service, or an app acting for a person) needs to find and
    use the authorisation server: exactly what works, nothing more."""
    return {
        "issuer": runtime.issuer,
        "jwks_uri": runtime.jwks_uri,
        "authorization_endpoint": runtime.authorization_endpoint,
        "token_endpoint": runtime.token_endpoint,
        "revocation_endpoint": runtime.revocation_endpoint,
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(APP_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": scopes_supported(),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_document(runtime: AuthRuntime) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 for the hub as a provider of id_tokens to apps."""
    return {
        "issuer": runtime.issuer,
        "authorization_endpoint": runtime.authorization_endpoint,
        "token_endpoint": runtime.token_endpoint,
        "revocation_endpoint": runtime.revocation_endpoint,
        "jwks_uri": runtime.jwks_uri,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": list(APP_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": list(IDENTITY_SCOPES),
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser", "name",
                             "preferred_username"],
        "code_challenge_methods_supported": ["S256"],
    }


async def _authenticated(request: Request, form: FormRequest,
                         answer: Callable[..., Outcome], preloaded: Preloaded) -> Outcome | JSONResponse:
    """What both OAuth endpoints do: load the one client the form names, let authlib
    authenticate it and answer (in a thread: scrypt is deliberately slow), and refuse an
    assertion whose jti was used before."""
    runtime = _runtime(request)
    client = await _client(request, form)
    outcome = await run_in_threadpool(answer, runtime, client, form, preloaded)
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
