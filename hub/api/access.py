"""Access at the API edge: the SMART scope each FHIR interaction needs (403 OperationOutcome
`forbidden` when the token lacks it), the Viewer the store filters every query by (scopes plus
the caller's partner class, organisation and consent defaults), and the audit hand-off (which
patients' data and which resources each request disclosed or wrote).

Scope letters: read, vread and instance history need r; type and system search and `_history`
need s; create c; update u (update-as-create also c); delete d; conditional interactions also
s (their criteria are a search). The guide's conformance resources are readable with any valid
token. With authorisation off (HUB_AUTH_ENABLED=false, only for measuring what security costs)
there is no Viewer and nothing is filtered."""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from starlette.requests import Request

from hub.auth.principal import Principal, grants
from hub.config import Settings
from hub.consent.defaults import parse_defaults
from hub.fhir.errors import FhirError
from hub.search.access import Viewer
from hub.store.repository import Version

_LETTER_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
MAX_AUDIT_ENTITIES = 100


@lru_cache(maxsize=256)
def _scope_table(scopes: frozenset[str]) -> dict[str, frozenset[str]]:
    return grants(scopes)


@lru_cache(maxsize=8)
def _defaults(text: str | None) -> dict[str, tuple[str, ...]]:
    return parse_defaults(text)


def check_settings(settings: Settings) -> None:
    """Refuse, at start-up, consent defaults the hub cannot apply exactly (ConsentConfigError)."""
    _defaults(settings.consent_defaults)


# token id → (its Principal, the consent defaults, the Viewer made from them). The verifier hands
# back the same Principal object for every request with one token, so a hit is one dict lookup
# and two identity checks instead of building a Viewer (and its SQL) per request.
_VIEWERS: dict[str, tuple[Principal, str | None, Viewer]] = {}
_VIEWERS_LIMIT = 4096


def viewer_for(principal: Principal, consent_defaults: str | None) -> Viewer:
    """The store's view of a caller: what its scopes and its class's consent defaults allow."""
    known = _VIEWERS.get(principal.token_id)
    if known is not None and known[0] is principal and known[1] is consent_defaults:
        return known[2]
    found = _make_viewer(principal, consent_defaults)
    if len(_VIEWERS) >= _VIEWERS_LIMIT:
        _VIEWERS.clear()
    _VIEWERS[principal.token_id] = (principal, consent_defaults, found)
    return found


def _make_viewer(principal: Principal, consent_defaults: str | None) -> Viewer:
    return Viewer(
        partner_class=principal.partner_class,
        org_code=principal.organisation,
        org_system=principal.organisation_system or None,
        default_parts=_defaults(consent_defaults).get(principal.partner_class, ()),
        scopes=_scope_table(frozenset(principal.scopes)),
    )


def viewer(request: Request) -> Viewer | None:
    """This request's Viewer (made once per request); None only with authorisation off."""
    state = request.scope.setdefault("state", {})
    if "viewer" in state:
        return state["viewer"]
    principal = state.get("principal")
    settings = request.app.state.settings
    if principal is None:
        if settings.auth_enabled:
            # The security middleware authenticates every FHIR path; reaching here without a
            # caller means a route escaped it, so refuse rather than serve unfiltered.
            raise FhirError("login", "this request carries no verified access token", status=401)
        state["viewer"] = None
        return None
    state["viewer"] = found = viewer_for(principal, settings.consent_defaults)
    return found


def require(request: Request, res_type: str, *letters: str) -> Viewer | None:
    """The Viewer, after checking the token allows every one of `letters` on `res_type`."""
    found = viewer(request)
    if found is None:
        return None
    for letter in letters:
        if not found.permits(res_type, letter):
            raise forbidden(res_type, letter)
    return found


def forbidden(res_type: str, letter: str) -> FhirError:
    return FhirError("forbidden", f"the access token's scopes do not allow {_LETTER_NAMES[letter]} "
                     f"on {res_type} (needs system/{res_type}.{letter})", status=403)


def require_either(request: Request, res_type: str, letters: str) -> Viewer | None:
    """The Viewer, after checking the token allows at least one of `letters` on `res_type`."""
    found = viewer(request)
    if found is None or any(found.permits(res_type, letter) for letter in letters):
        return found
    raise forbidden(res_type, letters[0])


def searchable_types(found: Viewer | None, candidates: Iterable[str]) -> list[str] | None:
    """System-level interactions cover only the types the client may search (None: all)."""
    return None if found is None else found.types_with("s", sorted(candidates))


def readable_types(found: Viewer | None, candidates: Iterable[str]) -> list[str] | None:
    """The candidates the client may read (None: all)."""
    return None if found is None else found.types_with("r", sorted(candidates))


def disclosed(request: Request, versions: Iterable[Version]) -> None:
    """Tell the audit layer whose data this request disclosed or wrote, and which resources:
    `scope["state"]["audit_patients"]` (Patient ids) and `["audit_entities"]` (up to 100
    `Type/id`)."""
    state = request.scope.setdefault("state", {})
    patients: set[str] = state.setdefault("audit_patients", set())
    entities: list[str] = state.setdefault("audit_entities", [])
    for version in versions:
        if version.patient_id:
            patients.add(version.patient_id)
        if len(entities) < MAX_AUDIT_ENTITIES:
            entities.append(version.reference)
