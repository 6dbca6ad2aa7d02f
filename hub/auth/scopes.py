"""Which scopes a token gets: what the client asked for, cut down to what it is allowed.

The cut is by permission, not by string: a client allowed `system/*.cruds` that asks for
`system/CarePlan.rs` gets `system/CarePlan.rs`; one allowed `system/CarePlan.rs` that asks for
`system/*.read` gets `system/CarePlan.rs`. Granted scopes are always written in v2 syntax."""
from __future__ import annotations

from collections.abc import Iterable

from hub.auth.principal import ScopeError, grants, parse_scope

_ORDER = "cruds"


def grant_scopes(requested: str | None, allowed: Iterable[str]) -> list[str]:
    """The v2 scopes to issue; every requested scope must be well formed (else ScopeError).
    No scope requested means all the client is allowed. An empty result means nothing asked
    for is allowed (the caller answers invalid_scope)."""
    allowed_grants = grants(list(allowed))
    if requested is None or not requested.strip():
        return _as_scopes(allowed_grants)
    wanted: dict[str, set[str]] = {}
    for scope in requested.split():
        if "/" not in scope:
            raise ScopeError(f"not a SMART system scope: {scope!r}")
        res_type, letters = parse_scope(scope)
        wanted.setdefault(res_type, set()).update(letters)
    granted: dict[str, set[str]] = {}
    everywhere = allowed_grants.get("*", frozenset())
    for res_type, letters in wanted.items():
        if res_type == "*":
            for allowed_type, allowed_letters in allowed_grants.items():
                _add(granted, allowed_type, letters & allowed_letters)
        else:
            _add(granted, res_type, letters & (allowed_grants.get(res_type, frozenset()) | everywhere))
    # A type-specific grant already covered by the wildcard grant says nothing more.
    star = granted.get("*", set())
    return _as_scopes({t: frozenset(ls) for t, ls in granted.items() if t == "*" or not ls <= star})


def _add(granted: dict[str, set[str]], res_type: str, letters: set[str] | frozenset[str]) -> None:
    if letters:
        granted.setdefault(res_type, set()).update(letters)


def _as_scopes(table: dict[str, frozenset[str]]) -> list[str]:
    ordered = sorted(table, key=lambda t: (t != "*", t))
    return [f"system/{t}.{''.join(ch for ch in _ORDER if ch in table[t])}" for t in ordered if table[t]]
