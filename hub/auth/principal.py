"""The caller of an authorised request, and what SMART v2 scopes let it do.

A Principal is made once per request from a verified access token and travels with the request
(`request.state.principal`, ASGI `scope["state"]["principal"]`); access decisions elsewhere read
it and never look at the token again. Scopes follow SMART App Launch v2 (`system/CarePlan.rs`,
`system/*.cruds`); the v1 forms `.read`, `.write` and `.*` are read as their v2 equivalents so
partners on older SMART libraries are not refused for spelling."""
from __future__ import annotations

import re
from dataclasses import dataclass

# Partner classes: the `ipc-consent-partner` codes a client can belong to. Consent provisions
# name these (plus `lead-charity`, a role a charity holds for one person, not a class of client).
PARTNER_CLASSES = ("nhs", "local-authority", "defence", "charity", "education")

# SMART v2 interaction letters, in their canonical order.
CREATE, READ, UPDATE, DELETE, SEARCH = "c", "r", "u", "d", "s"
_ORDER = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)$")


class ScopeError(ValueError):
    """A scope string this hub does not understand (refused at token issue, never guessed)."""


# Contexts the hub grants: `system/` to backend clients, `user/` to apps acting for a signed-in
# member of staff, `patient/` to apps acting for a person (or their proxy) signed in themselves,
# limited to that person's record (the launch context `patient`; hub/search/access.py).
CONTEXTS = ("system", "user", "patient")


def parse_scope(scope: str) -> tuple[str, str]:
    """(resource type or "*", interaction letters) for one `system/`, `user/` or `patient/` scope."""
    return parse_scope_in_context(scope)[1:]


def parse_scope_in_context(scope: str) -> tuple[str, str, str]:
    """(context, resource type or "*", interaction letters) for one SMART v2 resource scope."""
    match = _SCOPE.match(scope)
    if not match:
        raise ScopeError(f"not a SMART scope: {scope!r}")
    context, res_type, access = match.groups()
    if context not in CONTEXTS:
        raise ScopeError(f"only system/, user/ and patient/ scopes are offered: {scope!r}")
    letters = _V1.get(access, access)
    if not letters or any(ch not in _ORDER for ch in letters) or \
            "".join(sorted(set(letters), key=_ORDER.index)) != letters:
        raise ScopeError(f"interactions must be a subset of 'cruds' in that order: {scope!r}")
    return context, res_type, letters


def grants(scopes: frozenset[str] | set[str] | list[str]) -> dict[str, frozenset[str]]:
    """Resource type (or "*") → interaction letters granted, merged over every scope."""
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        if "/" not in scope or scope.startswith("launch/"):  # launch context, openid: no resource access
            continue
        res_type, letters = parse_scope(scope)
        merged.setdefault(res_type, set()).update(letters)
    return {res_type: frozenset(letters) for res_type, letters in merged.items()}


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: str
    # The organisation the client acts for: an ODS code or a charity number, with its system.
    organisation: str
    organisation_system: str
    partner_class: str  # one of PARTNER_CLASSES
    scopes: frozenset[str]
    token_id: str  # the access token's jti, for audit and revocation
    expires_at: int  # epoch seconds
    # Why the client is asking (a v3 PurposeOfUse code such as TREAT or HOPERAT), for audit.
    purpose_of_use: str = "TREAT"
    # The signed-in person an app acts for (`Practitioner/<id>`, the token's fhirUser) and their
    # name and role; None for backend clients acting for their organisation alone.
    user: str | None = None
    user_name: str | None = None
    user_role: str | None = None
    # A person's own app (SMART patient launch): the Patient whose record the token opens (the
    # launch context `patient`); `user` is then that Patient, or the RelatedPerson acting for them.
    patient: str | None = None
    # Filled from `scopes` in __post_init__; decisions use this, never the strings.
    _grants: dict[str, frozenset[str]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_grants", grants(self.scopes))

    def permits(self, res_type: str, interaction: str) -> bool:
        """Whether the token's scopes allow `interaction` (one of c r u d s) on `res_type`."""
        table = self._grants or {}
        return interaction in table.get(res_type, ()) or interaction in table.get("*", ())

    def readable_types(self, candidates: list[str] | tuple[str, ...]) -> list[str]:
        """The candidates this client may read (for `_include`, `$everything`, system search)."""
        return [t for t in candidates if self.permits(t, READ)]
