"""Signing in and out.

The authorisation server's page (`/auth/authorize`, SMART App Launch 2 standalone launch): an
app sends a person here; the request is checked (client, exact redirect URI, PKCE S256, `aud`,
scopes) before anything is shown; the person signs in with a local account (password, optional
TOTP code, lockout) or through the external OpenID Connect provider; a code goes back to the app
with its `state`. Someone already signed in (the `hub_signin` session) is not asked again.

The workspace is itself one such app (`ipc-hub-workspace`, public, PKCE): `/app/sign-in` sends
the browser through `/auth/authorize`, `/app/callback` exchanges the code at the hub's own token
endpoint, and the workspace session keeps the tokens. `/app/sign-out` revokes them and ends both
sessions.

The external provider (`HUB_OIDC_ISSUER`): the hub is an ordinary OpenID Connect relying party
(discovery, authorization code with PKCE and nonce, id_token checked against the provider's
keys); the configured claim's value names the hub account (`ipc-hub users add
--external-subject`). A person the hub has no active account for is refused: the provider says
who someone is, the hub's accounts say what they may do."""
from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from hub.auth.accounts import SignInPolicy, check_local_sign_in
from hub.auth.scopes import LAUNCH_PATIENT
from hub.auth.server import AuthorizationCheck, FormRequest, authorize, check_authorization
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.store import clients, grants, resources, users
from hub.store.clients import ClientRecord
from hub.store.users import UserRecord
from hub.web import session as web
from hub.web.errors import PageError
from hub.web.pages import page_csp, person_name, render
from hub.web.record import oauth_post

router = APIRouter(include_in_schema=False)

WORKSPACE_CLIENT = web.WORKSPACE_CLIENT
WORKSPACE_SCOPES = web.WORKSPACE_SCOPES
_FAILED = ("The user name, password or security code is not right, or the account is locked. "
           "After {n} wrong attempts in a row an account is locked for {m} minutes.")


# --- the authorization endpoint ---------------------------------------------------------------

def _query_form(request: Request) -> FormRequest:
    return FormRequest("GET", str(request.url), list(request.query_params.multi_items()), request.headers)


async def _client(request: Request, client_id: str | None) -> ClientRecord | None:
    if not client_id:
        return None
    async with request.app.state.pool.connection() as conn:
        return await clients.get_client(conn, client_id)


async def checked_request(request: Request) -> tuple[FormRequest, ClientRecord | None, AuthorizationCheck]:
    form = _query_form(request)
    client = await _client(request, request.query_params.get("client_id"))
    return form, client, check_authorization(request.app.state.auth, client, form)


def answer_check(check: AuthorizationCheck) -> Response | None:
    if check.error_page is not None:
        return render("error", status=400, title="This sign-in link is not valid",
                      message=f"The app that sent you here made a request the hub cannot accept: "
                              f"{check.error_page}. Go back to the app and try again.")
    if check.redirect is not None:
        return RedirectResponse(check.redirect, status_code=302)
    return None


@router.get("/auth/authorize")
async def authorization_page(request: Request) -> Response:
    form, client, check = await checked_request(request)
    answer = answer_check(check)
    if answer is not None:
        return answer
    signed_in = await web.current_session(request, "sign-in")
    if signed_in is not None and request.query_params.get("prompt") != "login":
        return await _launch(request, form, client, signed_in.user, signed_in.record.auth_time)
    return _sign_in_page(request, client, check)


@router.post("/auth/authorize")
async def sign_in(request: Request) -> Response:
    form, client, check = await checked_request(request)
    answer = answer_check(check)
    if answer is not None:
        return answer
    fields = await request.form()
    if not web.same(str(fields.get("csrf_token") or ""), request.cookies.get(web.LOGIN_COOKIE)):
        raise PageError(403, "Sign-in form expired", web.csrf_refused().issues[0].diagnostics)
    if "launch_patient" in fields:  # the choice of whose record to open, by someone signed in already
        signed_in = await web.current_session(request, "sign-in")
        if signed_in is None:
            return _sign_in_page(request, client, check)
        return await _launch(request, form, client, signed_in.user, signed_in.record.auth_time,
                             chosen=str(fields.get("launch_patient") or ""))
    settings = request.app.state.settings
    policy = SignInPolicy(settings.signin_max_failures, settings.signin_lockout_s)
    async with request.app.state.pool.connection() as conn:
        user = await check_local_sign_in(conn, str(fields.get("username") or ""), str(fields.get("password") or ""),
                                         str(fields.get("code") or ""), policy, web.sealer(request))
    if user is None:
        return _sign_in_page(request, client, check, status=401, username=str(fields.get("username") or ""),
                             error=_FAILED.format(n=policy.max_failures, m=max(1, policy.lockout_s // 60)))
    auth_time = int(time.time())
    response = await _launch(request, form, client, user, auth_time)
    await web.start_session(request, response, kind="sign-in", user=user, auth_time=auth_time)
    return response


def _sign_in_page(request: Request, client: ClientRecord | None, check: AuthorizationCheck, *,
                  status: int = 200, username: str = "", error: str | None = None) -> Response:
    token, new = web.login_token(request)
    settings = request.app.state.settings
    redirect_uri = request.query_params.get("redirect_uri", "")
    response = render(
        "signin", status=status, csp=page_csp(redirect_uri),
        app_name=client.name if client else "", query=request.url.query, csrf=token, username=username,
        error=error, external=settings.oidc_display_name if settings.oidc_issuer else None,
        person_external=settings.person_oidc_display_name if settings.person_oidc_issuer else None)
    if new:
        web.set_cookie(request, response, web.LOGIN_COOKIE, token, max_age=web.FLOW_LIFETIME_S)
    return response


async def _launch(request: Request, form: FormRequest, client: ClientRecord | None, user: UserRecord,
                  auth_time: int, *, chosen: str | None = None) -> Response:
    """The code for the app; but first, for someone acting for several people whose app asked for
    a patient launch (`launch/patient`), the choice of whose record to open (SMART App Launch 2's
    patient selection at launch, made here by the authorization server). The choice must be one of
    the account's records; what the proxy sees there is still that person's delegation."""
    if user.is_citizen and LAUNCH_PATIENT in (request.query_params.get("scope") or "").split():
        async with request.app.state.pool.connection() as conn:
            links = await users.links_of(conn, user)
            if len(links) > 1:
                link = next((found for found in links if found.patient_id == chosen), None)
                if link is None:
                    return await _pick_patient(request, conn, client, links, refused=chosen is not None)
                return await _issue_code(request, form, client, user, auth_time, launch=link)
    return await _issue_code(request, form, client, user, auth_time)


async def _pick_patient(request: Request, conn: Any, client: ClientRecord | None, links: list[users.CitizenLink],
                        *, refused: bool) -> Response:
    people = []
    for link in links:
        try:
            found = jsontext.loads((await resources.read(conn, "Patient", link.patient_id,
                                                         access=Access.system())).content)
        except FhirError:
            continue  # a record that has gone (deleted, merged) is not offered
        people.append({"id": link.patient_id, "name": person_name(found),
                       "born": found.get("birthDate", "")})
    token, new = web.login_token(request)
    response = render("choose_patient", status=400 if refused else 200,
                      csp=page_csp(request.query_params.get("redirect_uri", "")), people=people,
                      app_name=client.name if client else "", query=request.url.query, csrf=token, refused=refused)
    if new:
        web.set_cookie(request, response, web.LOGIN_COOKIE, token, max_age=web.FLOW_LIFETIME_S)
    return response


async def _issue_code(request: Request, form: FormRequest, client: ClientRecord | None, user: UserRecord,
                      auth_time: int, *, launch: users.CitizenLink | None = None) -> Response:
    outcome = authorize(request.app.state.auth, client, form, user, auth_time)
    if isinstance(outcome, AuthorizationCheck):
        return answer_check(outcome) or render("error", status=400, title="Sign-in failed", message="")
    if outcome.new_code is not None:
        async with request.app.state.pool.connection() as conn:
            await grants.insert_code(conn, outcome.new_code.code, outcome.new_code.record)
            if launch is not None:
                await users.set_launch(conn, outcome.new_code.record.family_id, user.user_id, launch)
    location = dict(outcome.headers).get("Location", "")
    return RedirectResponse(location, status_code=302)


# --- the external OpenID Connect provider --------------------------------------------------------

async def provider_document(request: Request, issuer: str) -> dict[str, Any]:
    """An external provider's discovery document and keys, fetched once per process and issuer
    (staff's provider, and the people's: hub.web.person_signin)."""
    cache = request.app.state.__dict__.setdefault("oidc_providers", {})
    issuer = issuer.rstrip("/")
    if issuer in cache:
        return cache[issuer]
    async with httpx.AsyncClient(timeout=10) as client:
        meta = (await client.get(f"{issuer}/.well-known/openid-configuration")).raise_for_status().json()
        if meta.get("issuer", "").rstrip("/") != issuer:
            raise PageError(502, "Sign-in is not available", "the sign-in provider's discovery document names "
                            "another issuer")
        keys = (await client.get(meta["jwks_uri"])).raise_for_status().json()
    cache[issuer] = found = {"meta": meta, "keys": keys}
    return found



def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def _callback_uri(request: Request) -> str:
    return f"{request.app.state.auth.issuer}/auth/oidc/callback"


@router.get("/auth/oidc/start")
async def external_sign_in(request: Request) -> Response:
    settings = request.app.state.settings
    if not settings.oidc_issuer:
        raise PageError(404, "Page not found", "sign-in through an external provider is not set up here")
    _, _, check = await checked_request(request)
    answer = answer_check(check)
    if answer is not None:
        return answer
    return await start_external(request, ExternalProvider(
        settings.oidc_issuer, settings.oidc_client_id, settings.oidc_client_secret, settings.oidc_scopes,
        _callback_uri(request), "oidc"))


@dataclass(frozen=True)
class ExternalProvider:
    """An external OpenID Connect provider the hub signs people in through, as a relying party:
    staff's (HUB_OIDC_*) or the people's, set up as NHS login is (HUB_PERSON_OIDC_*)."""
    issuer: str
    client_id: str | None
    client_secret: str | None
    scopes: str
    callback: str  # this hub's redirect URI registered at the provider
    purpose: str  # seals the flow cookie for this provider only


async def start_external(request: Request, provider: ExternalProvider) -> Response:
    """Send the browser to the provider (authorization code, PKCE S256, state and nonce), keeping
    the SMART authorization request to resume afterwards in a sealed cookie."""
    try:
        document = await provider_document(request, provider.issuer)
    except (httpx.HTTPError, ValueError, KeyError):
        raise PageError(502, "Sign-in is not available", "the sign-in provider cannot be reached; try again "
                        "later or use a hub account") from None
    verifier, challenge = _pkce()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    flow = {"state": state, "nonce": nonce, "verifier": verifier, "authorize": request.url.query,
            "exp": int(time.time()) + web.FLOW_LIFETIME_S}
    target = document["meta"]["authorization_endpoint"] + "?" + urlencode({
        "response_type": "code", "client_id": provider.client_id, "redirect_uri": provider.callback,
        "scope": provider.scopes, "state": state, "nonce": nonce, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    response = RedirectResponse(target, status_code=302)
    web.set_cookie(request, response, web.FLOW_COOKIE, web.sealer(request).seal(flow, provider.purpose),
                   max_age=web.FLOW_LIFETIME_S)
    return response


async def finish_external(request: Request, provider: ExternalProvider) -> tuple[dict[str, Any], dict[str, Any]]:
    """Back from the provider: the code exchanged (PKCE) and the id_token checked (signature,
    issuer, audience, expiry, nonce); (its claims, the flow kept at the start)."""
    flow = web.sealer(request).unseal(request.cookies.get(web.FLOW_COOKIE), provider.purpose)
    if not flow or flow.get("exp", 0) < time.time() or not web.same(request.query_params.get("state"),
                                                                    flow.get("state")):
        raise PageError(400, "Sign-in did not complete", "this sign-in has expired or did not start here; "
                        "go back to the app and sign in again")
    if request.query_params.get("error") or not request.query_params.get("code"):
        raise PageError(401, "Sign-in did not complete", "the sign-in provider did not sign you in")
    document = await provider_document(request, provider.issuer)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(document["meta"]["token_endpoint"], data={
                "grant_type": "authorization_code", "code": request.query_params["code"],
                "redirect_uri": provider.callback, "code_verifier": flow["verifier"]},
                auth=(provider.client_id or "", provider.client_secret or ""))
        answer.raise_for_status()
        claims = _verified_id_token(answer.json().get("id_token", ""), document, provider.client_id, flow["nonce"])
    except (httpx.HTTPError, ValueError, JoseError, KeyError):
        raise PageError(401, "Sign-in did not complete", "the sign-in provider's answer could not be "
                        "checked; try again") from None
    return claims, flow


@router.get("/auth/oidc/callback")
async def external_callback(request: Request) -> Response:
    settings = request.app.state.settings
    if not settings.oidc_issuer:
        raise PageError(400, "Sign-in did not complete", "this sign-in has expired or did not start here; "
                        "go back to the app and sign in again")
    claims, flow = await finish_external(request, ExternalProvider(
        settings.oidc_issuer, settings.oidc_client_id, settings.oidc_client_secret, settings.oidc_scopes,
        _callback_uri(request), "oidc"))
    subject = claims.get(settings.oidc_user_claim)
    async with request.app.state.pool.connection() as conn:
        user = await users.user_by_external_subject(conn, str(subject)) if subject else None
    if user is None or not user.active or user.is_citizen:
        raise PageError(403, "No hub account", "you signed in, but this hub has no active account for you. "
                        "Ask an operator to add one (ipc-hub users add --external-subject).")
    auth_time = int(claims.get("auth_time") or time.time())
    response = RedirectResponse(f"/auth/authorize?{flow['authorize']}", status_code=302)
    web.clear_cookie(request, response, web.FLOW_COOKIE)
    await web.start_session(request, response, kind="sign-in", user=user, auth_time=auth_time)
    return response


def _verified_id_token(token: str, provider: dict[str, Any], audience: str | None, nonce: str) -> dict[str, Any]:
    """OpenID Connect Core §3.1.3.7: signed by the provider, for this client, not expired, with
    the nonce this sign-in sent."""
    decoded = jwt.decode(token, KeySet.import_key_set(provider["keys"]),
                         algorithms=provider["meta"].get("id_token_signing_alg_values_supported") or ["RS256"])
    registry = jwt.JWTClaimsRegistry(
        leeway=30, iss={"essential": True, "value": provider["meta"]["issuer"]},
        aud={"essential": True, "value": audience}, exp={"essential": True}, sub={"essential": True},
        nonce={"essential": True, "value": nonce})
    registry.validate(decoded.claims)
    return decoded.claims


# --- the hub's own apps: the workspace, and the person's pages --------------------------------------

@dataclass(frozen=True)
class OwnApp:
    """One of the hub's own apps, a public SMART app of this hub (PKCE): the workspace
    (`ipc-hub-workspace`, staff, `user/` scopes) or the person's pages (`ipc-hub-me`, a standalone
    patient launch with `patient/` scopes, issue 18). Each keeps its tokens in its own session."""
    client_id: str
    name: str
    scopes: tuple[str, ...]
    home: str  # where its pages live: /app or /me
    kind: str  # its session kind


WORKSPACE_APP = OwnApp(WORKSPACE_CLIENT, "IPC Hub workspace", WORKSPACE_SCOPES, "/app", "workspace")
PERSON_APP = OwnApp(web.PERSON_CLIENT, "Your record (IPC Hub)", web.PERSON_SCOPES, "/me", "person")


def app_redirect(request: Request, app: OwnApp) -> str:
    return f"{request.app.state.settings.public_base_url()}{app.home}/callback"


def workspace_redirect(request: Request) -> str:
    return app_redirect(request, WORKSPACE_APP)


async def ensure_app_client(request: Request, app: OwnApp) -> None:
    """Register the app as a public app of this hub at every sign-in start: one upsert, cheap
    beside the sign-in itself, and right even when the database was emptied or restored under a
    running hub (a cache per process was not). An operator's revocation stays: the upsert keeps
    the row's status."""
    record = ClientRecord(client_id=app.client_id, name=app.name, organisation="ipc-hub",
                          organisation_system="https://ipc-hub.example.org/fhir/Id/client-id",
                          partner_class="nhs", scopes=app.scopes, auth_method="none",
                          redirect_uris=(app_redirect(request, app),))
    async with request.app.state.pool.connection() as conn:
        await clients.save_app_client(conn, record)


def safe_next(value: str | None, home: str = "/app") -> str:
    """Where to go after sign-in: a path of the app's own (never another site)."""
    if value and value.startswith(home) and not value.startswith("//") and "\\" not in value:
        return value
    return home


async def app_sign_in(request: Request, app: OwnApp) -> Response:
    await ensure_app_client(request, app)
    verifier, challenge = _pkce()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    flow = {"state": state, "nonce": nonce, "verifier": verifier,
            "next": safe_next(request.query_params.get("next"), app.home), "exp": int(time.time()) + web.FLOW_LIFETIME_S}
    query = urlencode({"response_type": "code", "client_id": app.client_id,
                       "redirect_uri": app_redirect(request, app), "scope": " ".join(app.scopes),
                       "state": state, "nonce": nonce, "code_challenge": challenge,
                       "code_challenge_method": "S256", "aud": request.app.state.auth.audience})
    response = RedirectResponse(f"/auth/authorize?{query}", status_code=302)
    web.set_cookie(request, response, web.FLOW_COOKIE, web.sealer(request).seal(flow, app.kind),
                   max_age=web.FLOW_LIFETIME_S)
    return response


async def app_callback(request: Request, app: OwnApp) -> Response:
    flow = web.sealer(request).unseal(request.cookies.get(web.FLOW_COOKIE), app.kind)
    if not flow or flow.get("exp", 0) < time.time() or not web.same(request.query_params.get("state"),
                                                                    flow.get("state")):
        return RedirectResponse(f"{app.home}/sign-in", status_code=302)
    code = request.query_params.get("code")
    if not code:
        raise PageError(401, "Sign-in did not complete", request.query_params.get("error_description")
                        or "the hub did not sign you in")
    status, body = await oauth_post(request, "/auth/token", {
        "grant_type": "authorization_code", "code": code, "redirect_uri": app_redirect(request, app),
        "client_id": app.client_id, "code_verifier": flow["verifier"]})
    if status != 200:
        raise PageError(401, "Sign-in did not complete", body.get("error_description") or "the code was refused")
    claims = await run_in_threadpool(_own_id_token, request, body.get("id_token", ""), flow["nonce"], app.client_id)
    async with request.app.state.pool.connection() as conn:
        user = await users.get_user(conn, str(claims.get("sub")))
    if user is None:
        raise PageError(401, "Sign-in did not complete", "the account was not found")
    response = RedirectResponse(flow["next"], status_code=302)
    web.clear_cookie(request, response, web.FLOW_COOKIE)
    await web.start_session(request, response, kind=app.kind, user=user, auth_time=int(claims["auth_time"]),
                            access_token=body["access_token"], refresh_token=body.get("refresh_token"),
                            access_expires_at=int(time.time()) + int(body.get("expires_in", 0)))
    return response


@router.get("/app/sign-in")
async def workspace_sign_in(request: Request) -> Response:
    return await app_sign_in(request, WORKSPACE_APP)


@router.get("/app/callback")
async def workspace_callback(request: Request) -> Response:
    return await app_callback(request, WORKSPACE_APP)


def _own_id_token(request: Request, token: str, nonce: str, client_id: str) -> dict[str, Any]:
    runtime = request.app.state.auth
    try:
        decoded = jwt.decode(token, KeySet.import_key_set(runtime.jwks()), algorithms=["RS256"])
        jwt.JWTClaimsRegistry(iss={"essential": True, "value": runtime.issuer},
                              aud={"essential": True, "value": client_id},
                              nonce={"essential": True, "value": nonce},
                              exp={"essential": True}).validate(decoded.claims)
    except (JoseError, ValueError):
        raise PageError(401, "Sign-in did not complete", "the sign-in could not be checked") from None
    return decoded.claims


@router.post("/app/sign-out")
async def sign_out(request: Request) -> Response:
    return await app_sign_out(request, WORKSPACE_APP)


async def app_sign_out(request: Request, app: OwnApp) -> Response:
    """End the app's session and the sign-in session, revoking the app's tokens."""
    current = await web.current_session(request, app.kind)
    fields = await request.form()
    cookie = web.cookie_of(app.kind)
    if current is not None:
        if not web.same(str(fields.get("csrf_token") or ""), current.csrf):
            raise PageError(403, "Sign-out form expired", web.csrf_refused().issues[0].diagnostics)
        access, refresh = web.tokens(request, current)
        for token, hint in ((refresh, "refresh_token"), (access, "access_token")):
            if token:
                await oauth_post(request, "/auth/revoke", {"token": token, "token_type_hint": hint,
                                                           "client_id": app.client_id})
        await web.end_session(request, cookie)
        await web.end_session(request, web.SIGNIN_COOKIE)
    response = render("signed_out", home=app.home)
    for name in (cookie, web.SIGNIN_COOKIE, web.FLOW_COOKIE):
        web.clear_cookie(request, response, name)
    return response
