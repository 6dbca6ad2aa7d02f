"""Access tokens: signed JWTs the hub issues and any hub process (API, connectors) can verify.

Tokens are RS256 JWTs (RSA verification is the cheapest asymmetric check, ~30 µs here) with the
public keys served as a JWKS, so a connector process can verify a token without a database or a
call back to the hub. The claims carry everything a Principal needs — client, organisation,
partner class, scopes — so an access decision never needs a lookup per request; revocation is a
deny list of token ids checked by the caller (`is_revoked`).

Claims beyond RFC 9068: `ipc_org`, `ipc_org_system`, `ipc_partner_class`, `ipc_purpose`; for a
token an app holds for a signed-in person, `sub` is the person, `fhirUser` (SMART) their
Practitioner's URL, and `ipc_user`, `ipc_user_name`, `ipc_user_role` what audit and Provenance
name; for a person's own app (a citizen signed in), `fhirUser` is their Patient or RelatedPerson
and `ipc_patient` the Patient whose record the token opens."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from hub.auth.principal import Principal, ScopeError
from hub.fhir.errors import FhirError

ALGORITHM = "RS256"
# Verified tokens are remembered until they expire, so a busy client costs one dict lookup per
# request instead of a signature check; the bound keeps a flood of distinct tokens from growing it.
_CACHE_LIMIT = 10_000


def generate_signing_key(kid: str | None = None) -> RSAKey:
    """A new 2048-bit RSA private key for signing access tokens."""
    return RSAKey.generate_key(2048, private=True, parameters={
        "kid": kid or uuid.uuid4().hex, "use": "sig", "alg": ALGORITHM})


def public_jwks(keys: list[RSAKey]) -> dict[str, Any]:
    """The JWKS document for these keys: public parts only."""
    return {"keys": [key.as_dict(private=False) for key in keys]}


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What an issued token says about its client (the authorisation server fills it in)."""
    client_id: str
    organisation: str
    organisation_system: str
    partner_class: str
    scopes: tuple[str, ...]
    purpose_of_use: str = "TREAT"
    # Set when an app acts for a signed-in person (the authorization code grant).
    user: str | None = None  # Practitioner/<id>
    user_id: str | None = None
    user_name: str | None = None
    user_role: str | None = None
    fhir_user: str | None = None
    # A person's own app: the Patient whose record the token opens (SMART launch context).
    patient: str | None = None


def issue_access_token(key: RSAKey, request: TokenRequest, *, issuer: str, audience: str,
                       lifetime_s: int, now: int | None = None) -> tuple[str, dict[str, Any]]:
    """(compact JWT, its claims) for a client that has authenticated."""
    issued = int(time.time()) if now is None else now
    claims = {
        "iss": issuer, "aud": audience, "sub": request.client_id, "client_id": request.client_id,
        "iat": issued, "nbf": issued, "exp": issued + lifetime_s, "jti": uuid.uuid4().hex,
        "scope": " ".join(request.scopes),
        "ipc_org": request.organisation, "ipc_org_system": request.organisation_system,
        "ipc_partner_class": request.partner_class, "ipc_purpose": request.purpose_of_use,
    }
    if request.user:
        claims.update({"sub": request.user_id, "fhirUser": request.fhir_user, "ipc_user": request.user,
                       "ipc_user_name": request.user_name, "ipc_user_role": request.user_role})
    if request.patient:
        claims["ipc_patient"] = request.patient
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": "at+jwt"}
    return jwt.encode(header, claims, key), claims


_CHALLENGE = 'Bearer realm="ipc-hub"'


def unauthorised(reason: str, *, token_sent: bool = True) -> FhirError:
    """401 with the Bearer challenge RFC 6750 asks for (an error code only when a token was sent,
    §3.1); the reason is safe to show the client."""
    challenge = f'{_CHALLENGE}, error="invalid_token"' if token_sent else _CHALLENGE
    return FhirError("login", reason, status=401, headers={"WWW-Authenticate": challenge})


class TokenVerifier:
    """Checks bearer tokens against a JWKS, the issuer and the audience, and makes a Principal."""

    def __init__(self, jwks: dict[str, Any], *, issuer: str, audience: str,
                 is_revoked: Callable[[str], bool] | None = None, leeway_s: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        self._keys = KeySet.import_key_set(jwks)
        self._issuer = issuer
        self._audience = audience
        self._is_revoked = is_revoked or (lambda jti: False)
        self._leeway = leeway_s
        self._clock = clock
        self._cache: dict[str, Principal] = {}

    def verify(self, token: str) -> Principal:
        """The Principal for a valid, unexpired, unrevoked token; else a 401 FhirError."""
        now = self._clock()
        principal = self._cache.get(token)
        if principal is None:
            principal = self._decode(token, now)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = principal
        if principal.expires_at + self._leeway < now:
            self._cache.pop(token, None)
            raise unauthorised("the access token has expired")
        if self._is_revoked(principal.token_id):
            raise unauthorised("the access token has been revoked")
        return principal

    def _decode(self, token: str, now: float) -> Principal:
        try:
            decoded = jwt.decode(token, self._keys, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            raise unauthorised("the access token is not a valid token from this hub") from None
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=int(now), leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            exp={"essential": True}, jti={"essential": True}, sub={"essential": True})
        try:
            registry.validate(claims)
        except JoseError as exc:
            if "exp" in str(exc) or "expired" in str(exc).lower():
                raise unauthorised("the access token has expired") from None
            raise unauthorised("the access token was not issued for this hub") from None
        missing = [name for name in ("ipc_org", "ipc_org_system", "ipc_partner_class") if not claims.get(name)]
        if missing:
            raise unauthorised("the access token does not name its organisation and partner class")
        try:
            user = claims.get("ipc_user")
            return Principal(
                client_id=str(claims.get("client_id") or claims["sub"]), organisation=str(claims["ipc_org"]),
                organisation_system=str(claims["ipc_org_system"]),
                partner_class=str(claims["ipc_partner_class"]),
                scopes=frozenset(str(claims.get("scope", "")).split()), token_id=str(claims["jti"]),
                expires_at=int(claims["exp"]), purpose_of_use=str(claims.get("ipc_purpose") or "TREAT"),
                user=str(user) if user else None,
                user_name=str(claims.get("ipc_user_name") or "") or None if user else None,
                user_role=str(claims.get("ipc_user_role") or "") or None if user else None,
                patient=str(claims["ipc_patient"]) if user and claims.get("ipc_patient") else None)
        except (ScopeError, ValueError, TypeError):
            # Signed by us but not by this hub's rules (a key shared with another issuer, an
            # older release): refused as invalid, never a 500.
            raise unauthorised("the access token carries claims this hub does not accept") from None


def bearer_token(authorization: str | None) -> str:
    """The token from an `Authorization: Bearer …` header, or a 401 saying what is wrong."""
    if not authorization:
        raise unauthorised("this endpoint needs an access token: send Authorization: Bearer <token>",
                           token_sent=False)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorised("the Authorization header must be 'Bearer <token>'")
    return token.strip()
