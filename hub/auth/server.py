"""The OAuth2 authorisation server: the client-credentials grant with `client_secret_basic` or
`private_key_jwt` (SMART Backend Services, RFC 7523), the authorization code and refresh token
grants for apps acting for a signed-in person (hub.auth.user_grants), and token revocation
(RFC 7009), on authlib's server machinery.

authlib's server is synchronous and asks for the client by id (`query_client`) in the middle of
its checks, while the hub's store is asynchronous. So each request runs in two halves: the HTTP
edge reads the client record (and nothing else) from the database first, then runs this module's
synchronous server over that record in a worker thread (scrypt is deliberately slow), then
stores what the server decided (an assertion id seen, a token revoked, a code or tokens issued).
authlib therefore never touches the database, and a request only ever sees the one client it
names.

A failed client authentication reads the same whatever the cause (unknown client, wrong secret,
bad assertion, wrong method), and an unknown client still costs a secret check, so client ids
cannot be probed."""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidClientError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from hub.auth.principal import Principal, ScopeError
from hub.auth.runtime import AuthRuntime
from hub.auth.scopes import grant_scopes
from hub.auth.secrets import hash_secret, verify_secret
from hub.auth.tokens import TokenRequest
from hub.auth.user_grants import (
    CodeGrant,
    Issued,
    NewCode,
    Preloaded,
    RotatingRefreshGrant,
    S256Required,
    user_scope,
    user_token,
)
from hub.fhir.errors import FhirError
from hub.store.clients import ClientRecord
from hub.store.users import UserRecord

BACKEND_GRANT_TYPES = ("client_credentials",)
APP_GRANT_TYPES = ("authorization_code", "refresh_token")
GRANT_TYPES = BACKEND_GRANT_TYPES + APP_GRANT_TYPES
AUTH_METHODS = ("client_secret_basic", "private_key_jwt")
# Apps acting for a person may also be public (no secret: PKCE alone binds the code).
APP_AUTH_METHODS = (*AUTH_METHODS, "none")
_CLIENT_AUTH_FAILED = "client authentication failed"
# An unknown client's secret is checked against this, so it costs what a known one does.
_NOBODY_HASH = hash_secret("no client has this secret")
# Client assertion algorithms (SMART Backend Services requires RS384 and ES384); never "none"
# and never a symmetric one, which would make the public JWKS a signing key.
ASSERTION_ALGORITHMS = ("RS384", "ES384", "RS256", "ES256", "RS512", "ES512", "PS384")
ASSERTION_TYPE = JWTBearerClientAssertion.CLIENT_ASSERTION_TYPE
_LEEWAY_S = 30
# authlib logs issued tokens and client assertions at DEBUG: never let them reach a log.
logging.getLogger("authlib").setLevel(max(logging.getLogger("authlib").level, logging.INFO))


@dataclass(frozen=True)
class FormRequest:
    """An OAuth request as the HTTP edge read it: the form (all values of each field) and headers."""
    method: str
    uri: str
    form: list[tuple[str, str]]
    headers: Mapping[str, str]


@dataclass
class Outcome:
    """What the server answered, and what the edge must now record."""
    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]]
    assertion: tuple[str, str, int] | None = None  # (client id, jti, exp) of a private_key_jwt
    revoked: Principal | None = None
    issued: Issued | None = None  # tokens issued to an app for a person
    new_code: NewCode | None = None  # an authorization code to store
    revoked_refresh: str | None = None  # a refresh token to revoke (with its family)


def requested_client_id(request: FormRequest) -> str | None:
    """The client a request claims to be (unverified): from Basic credentials, a client assertion's
    `sub`, or the form. Only used to know which client record to load."""
    authorization = request.headers.get("authorization") or ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return unquote(user.partition(":")[0]) or None
    form = dict(request.form)
    assertion = form.get("client_assertion")
    if assertion:
        return _unverified_subject(assertion)
    return form.get("client_id") or None


def _unverified_header(assertion: str) -> dict[str, Any]:
    head = assertion.split(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return header if isinstance(header, dict) else {}


def _unverified_subject(assertion: str) -> str | None:
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject if isinstance(subject, str) else None


class HubClient(ClientMixin):
    """A registered client as authlib sees it. A client with redirect URIs is an app acting for
    people (code and refresh grants, `user/` scopes); one without is a backend service
    (client credentials, `system/` scopes)."""

    def __init__(self, record: ClientRecord) -> None:
        self.record = record

    @property
    def is_app(self) -> bool:
        return bool(self.record.redirect_uris)

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # an app must always name its redirect URI

    def get_allowed_scope(self, scope: str) -> str:
        if self.is_app:
            return user_scope(scope, self.record.scopes, None)
        return " ".join(grant_scopes(scope, self.record.scopes))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return self.is_app and redirect_uri in self.record.redirect_uris  # exact string match

    def check_client_secret(self, client_secret: str) -> bool:
        return verify_secret(self.record.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return self.record.active and method == self.record.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return self.is_app and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in (APP_GRANT_TYPES if self.is_app else BACKEND_GRANT_TYPES)


class _UnknownClient(HubClient):
    """Stands in for a client id nobody registered, at the token and revocation endpoints: every
    authentication fails, after the same work as a wrong secret."""

    def __init__(self, client_id: str) -> None:
        super().__init__(ClientRecord(client_id=client_id, name="", organisation="", organisation_system="",
                                      partner_class="nhs", scopes=(), auth_method="client_secret_basic",
                                      secret_hash=_NOBODY_HASH))

    def check_client_secret(self, client_secret: str) -> bool:
        verify_secret(self.record.secret_hash, client_secret)
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method != "none"


class _Payload(OAuth2Payload):
    def __init__(self, form: list[tuple[str, str]]) -> None:
        self._pairs = form

    @property
    def data(self) -> dict[str, str]:
        return dict(self._pairs)

    @property
    def datalist(self) -> defaultdict[str, list]:
        values: defaultdict[str, list] = defaultdict(list)
        for key, value in self._pairs:
            values[key].append(value)
        return values


class _Request(OAuth2Request):
    def __init__(self, request: FormRequest) -> None:
        super().__init__(request.method, request.uri, headers=request.headers)
        self.payload = _Payload(request.form)
        self._form = dict(request.form)

    @property
    def args(self) -> dict[str, str]:
        return self._form if self.method == "GET" else {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _ClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    def validate_requested_scope(self) -> None:
        try:
            granted = grant_scopes(self.request.payload.scope, self.client.record.scopes)
        except ScopeError as exc:
            raise InvalidScopeError(description=str(exc)) from None
        if not granted:
            raise InvalidScopeError(description="none of the requested scopes is allowed for this client")


class _PrivateKeyJwt(JWTBearerClientAssertion):
    """RFC 7523 client assertions as SMART Backend Services profiles them: signed with a key from
    the client's registered JWKS, `aud` the token endpoint, `exp` at most 5 minutes ahead, a
    `jti` never seen before (the edge records it; here it is only collected)."""
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, token_endpoint: str, max_lifetime_s: int, clock=time.time) -> None:
        super().__init__(validate_jti=True, leeway=_LEEWAY_S)
        self._token_endpoint = token_endpoint
        self._max_lifetime = max_lifetime_s
        self._clock = clock
        self.seen: tuple[str, str, int] | None = None

    def get_audiences(self) -> list[str]:
        return [self._token_endpoint]

    def resolve_client_public_key(self, client: HubClient) -> KeySet:
        if not client.record.jwks:
            raise InvalidClientError(description=_CLIENT_AUTH_FAILED)
        return KeySet.import_key_set(client.record.jwks)

    def process_assertion_claims(self, assertion: str, resolve_key) -> dict[str, Any]:
        header = _unverified_header(assertion)
        if not header.get("kid"):
            # SMART Backend Services: the assertion's header names the key that signed it.
            raise InvalidClientError(description="the client assertion's JWT header has no kid: SMART "
                                     "Backend Services requires the id of the signing key")
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ASSERTION_ALGORITHMS))
        except (JoseError, ValueError, TypeError):
            raise InvalidClientError(description="the client assertion is not signed by a key "
                                     "registered for this client with an accepted algorithm") from None
        claims = token.claims
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp - self._clock() > self._max_lifetime + _LEEWAY_S:
            raise InvalidClientError(description=f"the client assertion must expire within "
                                     f"{self._max_lifetime} seconds")
        self.verify_claims(claims)
        return claims

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        if not isinstance(jti, str) or not jti:
            return False
        self.seen = (str(claims["sub"]), jti, int(claims["exp"]))
        return True


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = list(APP_AUTH_METHODS)
    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")

    def __init__(self, server: _Server) -> None:
        super().__init__(server)
        self.revoked: Principal | None = None
        self.revoked_refresh: str | None = None

    def query_token(self, token_string: str, token_type_hint: str | None) -> _IssuedToken | None:
        # RFC 7009 §2.2: a token that is invalid, expired or already revoked needs no action.
        # A refresh token is opaque: the edge loaded its record if it was one of ours.
        refresh = self.server.preloaded.refresh
        if refresh is not None and self.server.preloaded.refresh_value == token_string:
            return _IssuedToken(None, token_string, refresh.client_id)
        try:
            principal = self.server.runtime.verifier.verify(token_string)
        except FhirError:
            return None
        return _IssuedToken(principal, None, principal.client_id)

    def revoke_token(self, token: _IssuedToken, request: OAuth2Request) -> None:
        self.revoked = token.principal
        self.revoked_refresh = token.refresh


@dataclass
class _IssuedToken:
    principal: Principal | None
    refresh: str | None
    client_id: str

    def check_client(self, client: HubClient) -> bool:
        return self.client_id == client.get_client_id()


class _Server(AuthorizationServer):
    def __init__(self, runtime: AuthRuntime, client: ClientRecord | None,
                 preloaded: Preloaded | None = None, *, token_endpoint: bool = True,
                 auth_time: int | None = None) -> None:
        super().__init__(scopes_supported=None)
        self.runtime = runtime
        self.client = client
        self.preloaded = preloaded or Preloaded()
        self.token_endpoint = token_endpoint
        self.auth_time = auth_time
        self.issued: Issued | None = None
        self.new_code: NewCode | None = None
        self.register_grant(_ClientCredentials)
        self.register_grant(CodeGrant, [S256Required(required=True)])
        self.register_grant(RotatingRefreshGrant)
        self.assertions = _PrivateKeyJwt(self.runtime.token_endpoint, self.runtime.assertion_max_lifetime_s)
        self.register_client_auth_method(_PrivateKeyJwt.CLIENT_AUTH_METHOD, self.assertions)
        self.register_token_generator("default", self._token)

    def query_client(self, client_id: str) -> HubClient | None:
        record = self.client
        if record is None or record.client_id != client_id or not record.active:
            # At the token and revocation endpoints an unknown client fails like a wrong secret.
            return _UnknownClient(client_id) if self.token_endpoint else None
        return HubClient(record)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Access tokens are self-contained JWTs: nothing to store (revocation stores the jti)."""

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: FormRequest) -> OAuth2Request:
        return _Request(request)

    def handle_response(self, status: int, body: Any, headers: Any) -> Outcome:
        body = dict(body) if isinstance(body, dict) else {}
        if body.get("error") == "invalid_client" and self.token_endpoint and \
                "kid" not in str(body.get("error_description", "")):
            body["error_description"] = _CLIENT_AUTH_FAILED
        return Outcome(status, body, list(headers or []))

    def _token(self, grant_type: str, client: HubClient, user: UserRecord | None = None, scope: str | None = None,
               expires_in: int | None = None, include_refresh_token: bool = False) -> dict[str, Any]:
        if grant_type in APP_GRANT_TYPES:
            return user_token(self, client, user, scope or "", grant_type)
        record = client.record
        granted = grant_scopes(scope, record.scopes)
        token, claims = self.runtime.issue(TokenRequest(
            client_id=record.client_id, organisation=record.organisation,
            organisation_system=record.organisation_system, partner_class=record.partner_class,
            scopes=tuple(granted)))
        return {"access_token": token, "token_type": "Bearer",
                "expires_in": claims["exp"] - claims["iat"], "scope": " ".join(granted)}


def token_response(runtime: AuthRuntime, client: ClientRecord | None, request: FormRequest,
                   preloaded: Preloaded | None = None) -> Outcome:
    """Answer a token request (synchronous: run it off the event loop)."""
    server = _Server(runtime, client, preloaded)
    outcome = server.create_token_response(request)
    if outcome.status == 200:
        outcome.assertion = server.assertions.seen
        outcome.issued = server.issued
    return outcome


def revocation_response(runtime: AuthRuntime, client: ClientRecord | None, request: FormRequest,
                        preloaded: Preloaded | None = None) -> Outcome:
    """Answer a revocation request (synchronous: run it off the event loop)."""
    server = _Server(runtime, client, preloaded)
    endpoint = _Revocation(server)
    server.register_endpoint(endpoint)
    outcome = server.create_endpoint_response(_Revocation.ENDPOINT_NAME, request)
    if outcome.status == 200:
        outcome.assertion = server.assertions.seen
        outcome.revoked = endpoint.revoked
        outcome.revoked_refresh = endpoint.revoked_refresh
    return outcome


@dataclass
class AuthorizationCheck:
    """An authorization request checked: either an error to show (never redirected, as the
    client or redirect URI could not be trusted), an error to send back to the app, or a valid
    request that waits for the person to sign in."""
    error_page: str | None = None
    redirect: str | None = None
    client_name: str | None = None
    scope: str | None = None


def check_authorization(runtime: AuthRuntime, client: ClientRecord | None, request: FormRequest) -> AuthorizationCheck:
    """Validate a SMART authorization request before anyone signs in."""
    server = _Server(runtime, client, token_endpoint=False)
    try:
        grant = server.get_consent_grant(request)
    except OAuth2Error as error:
        return _authorization_error(error)
    return AuthorizationCheck(client_name=client.name if client else None, scope=grant.request.scope)


def authorize(runtime: AuthRuntime, client: ClientRecord | None, request: FormRequest, user: UserRecord,
              auth_time: int) -> Outcome | AuthorizationCheck:
    """Issue a code for a signed-in person: the redirect (Outcome, with the code to store), or
    the check's error."""
    server = _Server(runtime, client, token_endpoint=False, auth_time=auth_time)
    try:
        grant = server.get_consent_grant(request)
    except OAuth2Error as error:
        return _authorization_error(error)
    outcome = server.create_authorization_response(request, grant_user=user, grant=grant)
    outcome.new_code = server.new_code
    return outcome


def _authorization_error(error: OAuth2Error) -> AuthorizationCheck:
    if error.redirect_uri:
        status, body, headers = error()
        return AuthorizationCheck(redirect=dict(headers).get("Location"))
    return AuthorizationCheck(error_page=error.description or error.error)


def replayed_assertion() -> Outcome:
    return Outcome(400, {"error": "invalid_client",
                         "error_description": "this client assertion (jti) has been used before"}, [])
