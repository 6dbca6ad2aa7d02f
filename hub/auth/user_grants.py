"""SMART App Launch 2 for people: the authorization code grant with PKCE (S256 only, always
required), standalone launch, `openid fhirUser profile` with an id_token, and refresh tokens
rotated at each use, on authlib's grant classes.

As for client credentials (hub.auth.server), authlib runs synchronously over records the HTTP
edge read first: the client, and the one code or refresh token the request names (with its
user). What the grant decides is handed back (`Issued`, `NewCode`) for the edge to store, and
single use is enforced there, atomically (hub.store.grants).

Scopes: a staff member's app asks for `user/…` scopes and identity scopes. It gets those its
registration allows, cut down to what the person's role allows (hub.auth.roles); anything else
asked for (`launch/patient`, `patient/…`) is left out, not refused. A person's own app (issue 18:
SMART standalone patient launch) asks for `patient/…` scopes and `launch/patient`; signed in as
a citizen (the person, or a proxy acting for them) it gets those, cut to the citizen roles',
and the token response names the Patient whose record opens (`patient`), with `fhirUser` the
Patient or RelatedPerson who signed in. A citizen never gets `user/…` scopes, nor staff
`patient/…` ones."""
from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc import jwt

from hub.auth.roles import CITIZEN_ROLES, ROLE_SCOPES
from hub.auth.scopes import LAUNCH_PATIENT, grant_scopes, identity_scopes
from hub.auth.tokens import TokenRequest
from hub.store.grants import CodeRecord, RefreshRecord
from hub.store.users import UserRecord

CODE_LIFETIME_S = 120
# SMART's online_access (a refresh token that ends with the sign-in session) is not offered: a
# refresh token here lives HUB_AUTH_REFRESH_LIFETIME_S, rotated, until used, revoked or its
# person disabled.
REFRESH_SCOPES = ("offline_access",)
USER_AUTH_METHODS = ("client_secret_basic", "private_key_jwt", "none")


def user_scope(requested: str | None, client_allowed: tuple[str, ...] | list[str], role: str | None) -> str:
    """The scope an app acting for a person gets: its `user/` scopes (`patient/` for a citizen)
    cut to its registration and then to the role (no role yet, before sign-in: the registration
    alone, in both contexts), `launch/patient` for a citizen when asked for and registered, and
    the identity scopes both asked for and registered."""
    contexts = ("user", "patient") if role is None else (("patient",) if role in CITIZEN_ROLES else ("user",))
    resources: list[str] = []
    for context in contexts:
        found = grant_scopes(requested, client_allowed, context=context)
        if role is not None and found:
            found = grant_scopes(" ".join(found), ROLE_SCOPES.get(role, ()), context=context)
        resources += found
    launch = [LAUNCH_PATIENT] if "patient" in contexts and LAUNCH_PATIENT in (requested or "").split() \
        and LAUNCH_PATIENT in client_allowed else []
    return " ".join([*resources, *launch, *identity_scopes(requested, client_allowed)])


def has_resource_scope(scope: str) -> bool:
    return any("/" in s and s != LAUNCH_PATIENT for s in scope.split())


@dataclass(frozen=True)
class Preloaded:
    """What the edge read for this request."""
    code: CodeRecord | None = None
    code_value: str | None = None
    refresh: RefreshRecord | None = None
    refresh_value: str | None = None
    user: UserRecord | None = None


@dataclass(frozen=True)
class Issued:
    """Tokens an app was just given for a person: what the edge must store."""
    user_id: str
    client_id: str
    family_id: str
    scope: str
    access_jti: str
    access_expires_at: int
    refresh_token: str | None
    refresh_expires_at: int | None


@dataclass(frozen=True)
class NewCode:
    code: str
    record: CodeRecord


class _Code:
    """A stored code as authlib's grant reads it."""

    def __init__(self, record: CodeRecord) -> None:
        self.record = record

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.scope

    def is_expired(self) -> bool:
        return self.record.expires_at < time.time()


class _Refresh:
    def __init__(self, record: RefreshRecord) -> None:
        self.record = record

    def get_scope(self) -> str:
        return self.record.scope

    def check_client(self, client) -> bool:
        return self.record.client_id == client.get_client_id()

    def is_expired(self) -> bool:
        return self.record.expires_at < time.time()

    def is_revoked(self) -> bool:
        return self.record.revoked or self.record.used


class S256Required(CodeChallenge):
    """PKCE on every authorization request, S256 only (SMART App Launch 2 forbids `plain`)."""
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256",
                                      redirect_uri=redirect_uri)
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256", redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: _Code) -> str:
        return authorization_code.record.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: _Code) -> str:
        return authorization_code.record.challenge_method


class CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(USER_AUTH_METHODS)

    def validate_authorization_request(self) -> str:
        redirect_uri = super().validate_authorization_request()
        data = self.request.payload.data
        audience = self.server.runtime.audience
        # SMART App Launch 2: `aud` names the FHIR server the app means to reach, so a token
        # is never handed to an app that was talking to another server.
        if data.get("aud", "").rstrip("/") != audience:
            raise InvalidRequestError(f"aud must be this server's FHIR base, {audience}",
                                      redirect_uri=redirect_uri)
        if not has_resource_scope(self.request.scope or "") and "openid" not in (self.request.scope or "").split():
            raise InvalidScopeError(description="none of the requested scopes can be granted to this app",
                                    redirect_uri=redirect_uri)
        return redirect_uri

    def create_authorization_response(self, redirect_uri: str, grant_user: UserRecord | None):
        if grant_user is not None:
            scope = user_scope(self.request.payload.scope, self.request.client.record.scopes, grant_user.role)
            if (not has_resource_scope(scope) and "openid" not in scope.split()) or \
                    (grant_user.is_citizen and not has_resource_scope(scope)):
                raise InvalidScopeError(description="this person's role allows none of the requested scopes",
                                        redirect_uri=redirect_uri)
            self.request.scope = scope
        return super().create_authorization_response(redirect_uri, grant_user)

    def save_authorization_code(self, code: str, request) -> None:
        data = request.payload.data
        user: UserRecord = request.user
        self.server.new_code = NewCode(code, CodeRecord(
            client_id=request.client.get_client_id(), user_id=user.user_id,
            redirect_uri=request.payload.redirect_uri, scope=request.scope,
            code_challenge=data["code_challenge"], challenge_method="S256", nonce=data.get("nonce"),
            auth_time=self.server.auth_time or int(time.time()), family_id=uuid.uuid4().hex,
            expires_at=int(time.time()) + CODE_LIFETIME_S, used=False))

    def query_authorization_code(self, code: str, client) -> _Code | None:
        loaded = self.server.preloaded
        record = loaded.code
        if record is None or loaded.code_value != code or record.used:
            return None
        if record.client_id != client.get_client_id():
            return None
        found = _Code(record)
        return None if found.is_expired() else found

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        """Single use is enforced by the edge's atomic claim (hub.store.grants.claim_code)."""

    def authenticate_user(self, authorization_code: _Code) -> UserRecord | None:
        user = self.server.preloaded.user
        if user is None or not user.active or user.user_id != authorization_code.record.user_id:
            return None
        return user


class RotatingRefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(USER_AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> _Refresh | None:
        loaded = self.server.preloaded
        if loaded.refresh is None or loaded.refresh_value != refresh_token:
            return None
        if loaded.user is None or not loaded.user.active:
            return None  # a disabled person's tokens are ended: invalid_grant
        found = _Refresh(loaded.refresh)
        return None if found.is_expired() or found.is_revoked() else found

    def authenticate_user(self, refresh_token: _Refresh) -> UserRecord | None:
        user = self.server.preloaded.user
        if user is None or not user.active or user.user_id != refresh_token.record.user_id:
            return None
        return user

    def revoke_old_credential(self, refresh_token: _Refresh) -> None:
        """Rotation: the edge marks the old token used when it stores the new one."""


def user_token(server, client, user: UserRecord, scope: str, grant_type: str) -> dict[str, Any]:
    """The token response for a person's app: an access token naming the person and their
    organisation, a refresh token when offline_access was granted, and an
    id_token when openid was (the code grant only)."""
    runtime = server.runtime
    granted = scope.split()
    token, claims = runtime.issue(TokenRequest(
        client_id=client.get_client_id(), organisation=user.organisation,
        organisation_system=user.organisation_system, partner_class=user.partner_class,
        scopes=tuple(granted), user=user.practitioner, user_id=user.user_id, user_name=user.display_name,
        user_role=user.role, fhir_user=f"{runtime.audience}/{user.practitioner}",
        patient=user.patient_id if user.is_citizen else None))
    body: dict[str, Any] = {"access_token": token, "token_type": "Bearer",
                            "expires_in": claims["exp"] - claims["iat"], "scope": scope}
    if user.is_citizen:
        body["patient"] = user.patient_id  # SMART launch context: whose record this token opens
    loaded: Preloaded = server.preloaded
    family = loaded.code.family_id if grant_type == "authorization_code" else loaded.refresh.family_id
    refresh = refresh_exp = None
    if any(s in granted for s in REFRESH_SCOPES):
        refresh = secrets.token_urlsafe(32)
        refresh_exp = claims["iat"] + runtime.refresh_lifetime_s
        body["refresh_token"] = refresh
    if grant_type == "authorization_code" and "openid" in granted:
        body["id_token"] = id_token(runtime, client.get_client_id(), user, loaded.code, granted)
    server.issued = Issued(user_id=user.user_id, client_id=client.get_client_id(), family_id=family, scope=scope,
                           access_jti=claims["jti"], access_expires_at=claims["exp"], refresh_token=refresh,
                           refresh_expires_at=refresh_exp)
    return body


def id_token(runtime, client_id: str, user: UserRecord, code: CodeRecord, granted: list[str]) -> str:
    """OpenID Connect Core §2 ID token: who signed in, for this app, when; `fhirUser` (SMART)
    when asked for, the name with `profile`."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": runtime.issuer, "sub": user.user_id, "aud": client_id, "iat": now,
                              "exp": now + runtime.token_lifetime_s, "auth_time": code.auth_time}
    if code.nonce:
        claims["nonce"] = code.nonce
    if "fhirUser" in granted:
        claims["fhirUser"] = f"{runtime.audience}/{user.practitioner}"
    if "profile" in granted:
        claims["name"] = user.display_name
        claims["preferred_username"] = user.username
    key = runtime.keys.signing
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)
