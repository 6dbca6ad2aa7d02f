"""The OAuth2 authorisation server: the client-credentials grant with `client_secret_basic` or
`private_key_jwt` (SMART Backend Services, RFC 7523), and token revocation (RFC 7009), on
authlib's server machinery.

authlib's server is synchronous and asks for the client by id (`query_client`) in the middle of
its checks, while the hub's store is asynchronous. So each request runs in two halves: the HTTP
edge reads the client record (and nothing else) from the database first, then runs this module's
synchronous server over that record in a worker thread (scrypt is deliberately slow), then
stores what the server decided (an assertion id seen, a token revoked). authlib therefore never
touches the database, and a request only ever sees the one client it names."""
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
from hub.auth.secrets import verify_secret
from hub.auth.tokens import TokenRequest
from hub.fhir.errors import FhirError
from hub.store.clients import ClientRecord

GRANT_TYPES = ("client_credentials",)
AUTH_METHODS = ("client_secret_basic", "private_key_jwt")
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
    """A registered client as authlib sees it."""

    def __init__(self, record: ClientRecord) -> None:
        self.record = record

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(grant_scopes(scope, self.record.scopes))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return verify_secret(self.record.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return self.record.active and method == self.record.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES


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
        return {}

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
            raise InvalidClientError(description="the client has no registered keys")
        return KeySet.import_key_set(client.record.jwks)

    def process_assertion_claims(self, assertion: str, resolve_key) -> dict[str, Any]:
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
    CLIENT_AUTH_METHODS = list(AUTH_METHODS)
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def __init__(self, server: _Server) -> None:
        super().__init__(server)
        self.revoked: Principal | None = None

    def query_token(self, token_string: str, token_type_hint: str | None) -> _IssuedToken | None:
        # RFC 7009 §2.2: a token that is invalid, expired or already revoked needs no action.
        try:
            return _IssuedToken(self.server.runtime.verifier.verify(token_string))
        except FhirError:
            return None

    def revoke_token(self, token: _IssuedToken, request: OAuth2Request) -> None:
        self.revoked = token.principal


@dataclass
class _IssuedToken:
    principal: Principal

    def check_client(self, client: HubClient) -> bool:
        return self.principal.client_id == client.get_client_id()


class _Server(AuthorizationServer):
    def __init__(self, runtime: AuthRuntime, client: ClientRecord | None) -> None:
        super().__init__(scopes_supported=None)
        self.runtime = runtime
        self.client = client
        self.register_grant(_ClientCredentials)
        self.assertions = _PrivateKeyJwt(self.runtime.token_endpoint, self.runtime.assertion_max_lifetime_s)
        self.register_client_auth_method(_PrivateKeyJwt.CLIENT_AUTH_METHOD, self.assertions)
        self.register_token_generator("default", self._token)

    def query_client(self, client_id: str) -> HubClient | None:
        record = self.client
        if record is None or record.client_id != client_id or not record.active:
            return None
        return HubClient(record)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Access tokens are self-contained JWTs: nothing to store (revocation stores the jti)."""

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: FormRequest) -> OAuth2Request:
        return _Request(request)

    def handle_response(self, status: int, body: Any, headers: Any) -> Outcome:
        return Outcome(status, dict(body or {}), list(headers or []))

    def _token(self, grant_type: str, client: HubClient, user=None, scope: str | None = None,
               expires_in: int | None = None, include_refresh_token: bool = False) -> dict[str, Any]:
        record = client.record
        granted = grant_scopes(scope, record.scopes)
        token, claims = self.runtime.issue(TokenRequest(
            client_id=record.client_id, organisation=record.organisation,
            organisation_system=record.organisation_system, partner_class=record.partner_class,
            scopes=tuple(granted)))
        return {"access_token": token, "token_type": "Bearer",
                "expires_in": claims["exp"] - claims["iat"], "scope": " ".join(granted)}


def token_response(runtime: AuthRuntime, client: ClientRecord | None, request: FormRequest) -> Outcome:
    """Answer a token request (synchronous: run it off the event loop)."""
    server = _Server(runtime, client)
    outcome = server.create_token_response(request)
    if outcome.status == 200:
        outcome.assertion = server.assertions.seen
    return outcome


def revocation_response(runtime: AuthRuntime, client: ClientRecord | None, request: FormRequest) -> Outcome:
    """Answer a revocation request (synchronous: run it off the event loop)."""
    server = _Server(runtime, client)
    endpoint = _Revocation(server)
    server.register_endpoint(endpoint)
    outcome = server.create_endpoint_response(_Revocation.ENDPOINT_NAME, request)
    if outcome.status == 200:
        outcome.assertion = server.assertions.seen
        outcome.revoked = endpoint.revoked
    return outcome


def replayed_assertion() -> Outcome:
    return Outcome(400, {"error": "invalid_client",
                         "error_description": "this client assertion (jti) has been used before"}, [])
