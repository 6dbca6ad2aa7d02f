"""Which scopes a token gets: what the client asked for, cut down to what it is allowed.

The cut is by permission, not by string: a client allowed `system/*.cruds` that asks for
`system/CarePlan.rs` gets `system/CarePlan.rs`; one allowed `system/CarePlan.rs` that asks for
`system/*.read` gets `system/CarePlan.rs`. Granted scopes are always written in v2 syntax.

A scope the hub does not grant in this flow (`launch/patient` or `patient/…` to staff,
`openid` to a backend client, a misspelt one) is left out rather than failing the whole request, as RFC 6749
§3.3 allows: the answer's `scope` says what was granted. Only a request of which nothing can be
granted is refused (invalid_scope)."""
from __future__ import annotations

from collections.abc import Iterable

from hub.auth.principal import ScopeError, parse_scope_in_context

_ORDER = "cruds"
# Resource types whose access a wildcard scope does not give: the scope must name them.
NAMED_ONLY = frozenset({"AuditEvent"})
# OpenID Connect and SMART scopes that carry no resource access: who the user is, and whether a
# refresh token is wanted. Granted to apps acting for a person when their registration allows.
IDENTITY_SCOPES = ("openid", "fhirUser", "profile", "offline_access")
# SMART App Launch: the app asks for a patient context at a standalone launch. Granted to a
# person's own app (the person, or their proxy, signed in): the token response then names the
# Patient (`patient`), and `patient/…` scopes are limited to that person's record.
LAUNCH_PATIENT = "launch/patient"


def grant_scopes(requested: str | None, allowed: Iterable[str], *, context: str = "system") -> list[str]:
    """The v2 resource scopes of `context` (system or user) to issue. No scope requested means
    all the client is allowed in that context. An empty result means nothing asked for is
    allowed (the caller answers invalid_scope)."""
    allowed_grants = _table(allowed, context)
    if requested is None or not requested.strip():
        return _as_scopes(allowed_grants, context)
    wanted = _table(requested.split(), context)
    granted: dict[str, set[str]] = {}
    everywhere = allowed_grants.get("*", frozenset())
    for res_type, letters in wanted.items():
        if res_type == "*":
            for allowed_type, allowed_letters in allowed_grants.items():
                _add(granted, allowed_type, letters & allowed_letters)
        else:
            _add(granted, res_type, letters & (allowed_grants.get(res_type, frozenset()) | everywhere))
    # A type-specific grant already covered by the wildcard grant says nothing more, except for
    # types a wildcard never opens (the audit trail must be named: hub.api.audit).
    star = granted.get("*", set())
    return _as_scopes({t: frozenset(ls) for t, ls in granted.items()
                       if t == "*" or t in NAMED_ONLY or not ls <= star}, context)


def identity_scopes(requested: str | None, allowed: Iterable[str]) -> list[str]:
    """The identity scopes (`openid`, `fhirUser`, …) both asked for and allowed, in a fixed order."""
    asked = set((requested or "").split())
    permitted = set(allowed)
    return [s for s in IDENTITY_SCOPES if s in asked and s in permitted]


def _table(scopes: Iterable[str], context: str) -> dict[str, frozenset[str]]:
    """Resource type → interaction letters over the scopes of `context`, the others left out."""
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        try:
            scope_context, res_type, letters = parse_scope_in_context(scope)
        except ScopeError:
            continue
        if scope_context == context:
            merged.setdefault(res_type, set()).update(letters)
    return {t: frozenset(ls) for t, ls in merged.items()}


def _add(granted: dict[str, set[str]], res_type: str, letters: set[str] | frozenset[str]) -> None:
    if letters:
        granted.setdefault(res_type, set()).update(letters)


def _as_scopes(table: dict[str, frozenset[str]], context: str) -> list[str]:
    ordered = sorted(table, key=lambda t: (t != "*", t))
    return [f"{context}/{t}.{''.join(ch for ch in _ORDER if ch in table[t])}" for t in ordered if table[t]]
