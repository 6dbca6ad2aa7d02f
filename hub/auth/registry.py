"""Registering OAuth2 clients: checking what an operator asks for and making the stored record
(with a fresh secret, or a public JWKS for private_key_jwt). The store keeps the record; the
secret is shown once and never kept."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from hub.auth.organisations import default_system, organisation_system
from hub.auth.principal import PARTNER_CLASSES, ScopeError, parse_scope_in_context
from hub.auth.scopes import IDENTITY_SCOPES, LAUNCH_PATIENT
from hub.auth.secrets import hash_secret, new_secret
from hub.store.clients import ClientRecord


class RegistrationError(ValueError):
    """A client that cannot be registered as asked (said to the operator as is)."""


@dataclass(frozen=True)
class NewClient:
    record: ClientRecord
    secret: str | None  # shown once; None for private_key_jwt clients


def register(*, name: str, partner_class: str, organisation: str, scopes: str,
             organisation_system_name: str | None = None, jwks: dict[str, Any] | None = None,
             client_id: str | None = None, redirect_uris: tuple[str, ...] = (), public: bool = False) -> NewClient:
    """A client record ready to insert, and its secret (None when it authenticates by JWKS or is
    a public app). With redirect URIs it is an app used by people (SMART App Launch: the
    authorization code grant, `user/` scopes); without, a backend service (client credentials)."""
    if partner_class not in PARTNER_CLASSES:
        raise RegistrationError(f"partner class must be one of {', '.join(PARTNER_CLASSES)}")
    if not organisation.strip():
        raise RegistrationError("the organisation code must not be empty")
    record = ClientRecord(
        client_id=client_id or f"{partner_class}-{uuid.uuid4().hex[:12]}", name=name,
        organisation=organisation.strip(),
        organisation_system=organisation_system(organisation_system_name) if organisation_system_name
        else default_system(partner_class),
        partner_class=partner_class, scopes=check_scopes(scopes, app=bool(redirect_uris)),
        auth_method="private_key_jwt" if jwks is not None else "client_secret_basic",
        redirect_uris=check_redirect_uris(redirect_uris))
    if public:
        if not redirect_uris:
            raise RegistrationError("a public client is an app used by people: give its --redirect-uri")
        return NewClient(replace(record, auth_method="none"), None)
    return with_new_credentials(record, jwks)


def check_redirect_uris(uris: tuple[str, ...]) -> tuple[str, ...]:
    """Absolute https URIs (http only on a loopback address, for native and test apps), without
    fragments, compared later as exact strings (OAuth 2.0 Security BCP §4.1)."""
    for uri in uris:
        parts = urlsplit(uri)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme not in ("https", "http") or not parts.netloc or (parts.scheme == "http" and not loopback):
            raise RegistrationError(f"a redirect URI must be https (http only on a loopback address): {uri}")
        if parts.fragment:
            raise RegistrationError(f"a redirect URI must not have a fragment: {uri}")
    return tuple(dict.fromkeys(uris))


def with_new_credentials(record: ClientRecord, jwks: dict[str, Any] | None = None) -> NewClient:
    """The record with a new secret (printed once), or with a new public JWKS."""
    if jwks is not None:
        return NewClient(replace(record, jwks=check_jwks(jwks), secret_hash=None,
                                 auth_method="private_key_jwt"), None)
    secret = new_secret()
    return NewClient(replace(record, secret_hash=hash_secret(secret), jwks=None,
                             auth_method="client_secret_basic"), secret)


def check_scopes(scopes: str, *, app: bool = False) -> tuple[str, ...]:
    """Allowed scopes as given, each a valid SMART v2 (or v1) scope. `patient/…` and
    `launch/patient` only for an app used by people (a patient's own app): a backend service acts
    for an organisation, never for one person."""
    found = tuple(dict.fromkeys(scopes.split()))
    if not found:
        raise RegistrationError("give the client at least one scope, e.g. 'system/CarePlan.rs'")
    for scope in found:
        if scope in IDENTITY_SCOPES or (app and scope == LAUNCH_PATIENT):
            continue
        try:
            context, _, _ = parse_scope_in_context(scope)
        except ScopeError as exc:
            raise RegistrationError(str(exc)) from None
        if context == "patient" and not app:
            raise RegistrationError(f"{scope}: patient/ scopes are for apps used by people (give --redirect-uri); "
                                    "a backend client gets system/ scopes")
    return found


def check_jwks(jwks: dict[str, Any]) -> dict[str, Any]:
    """A JWKS of public keys with key ids (a private key here would be a leaked secret)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise RegistrationError("the JWKS must be an object with a non-empty 'keys' list")
    try:
        key_set = KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise RegistrationError(f"the JWKS is not valid ({type(exc).__name__})") from None
    for key in key_set.keys:
        if key.is_private:
            raise RegistrationError("the JWKS holds a private key: register only the public keys")
        if not key.kid:
            raise RegistrationError("every key in the JWKS needs a 'kid'")
    return {"keys": [key.as_dict(private=False) for key in key_set.keys]}
