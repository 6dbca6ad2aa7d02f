"""Access at the API edge: the `Access` each request carries into the core (hub.interactions)
and the store — the caller's SMART scopes, partner class, organisation and consent defaults,
made once per access token — and the audit hand-off (which patients' data and which resources
each request disclosed or wrote).

The scope each interaction needs is checked by the core, the same for a Bundle entry as for an
HTTP request (hub/consent/README.md lists them). With authorisation off
(HUB_AUTH_ENABLED=false, only for measuring what security costs) the request runs as
`Access.system()`: nothing filtered, as the setting says."""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from starlette.requests import Request

from hub.auth.principal import Principal, grants
from hub.config import Settings
from hub.consent.authority import parse_recorders
from hub.consent.defaults import parse_defaults
from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.store.audit import withheld_purposes
from hub.store.resources import Version

MAX_AUDIT_ENTITIES = 100


@lru_cache(maxsize=256)
def _scope_table(scopes: frozenset[str]) -> dict[str, frozenset[str]]:
    return grants(scopes)


@lru_cache(maxsize=8)
def _defaults(text: str | None) -> dict[str, tuple[str, ...]]:
    return parse_defaults(text)


@lru_cache(maxsize=8)
def _recorders(text: str | None) -> frozenset[tuple[str, str]]:
    return parse_recorders(text)


def check_settings(settings: Settings) -> None:
    """Refuse, at start-up, consent settings the hub cannot apply exactly (ConsentConfigError)."""
    _defaults(settings.consent_defaults)
    _recorders(settings.consent_recorders)
    withheld_purposes(settings.person_trail_withheld_purposes)


# token id → (its Principal, the consent settings, the Access made from them). The verifier hands
# back the same Principal object for every request with one token, so a hit is one dict lookup
# and two identity checks instead of building an Access (and its SQL) per request.
_ACCESS: dict[str, tuple[Principal, tuple[str | None, str | None, int], Access]] = {}
_ACCESS_LIMIT = 4096


def access_for(principal: Principal, consent_defaults: str | None, consent_recorders: str | None = None,
               proxy_passes_at_age: int = 16) -> Access:
    """A caller's access: what its scopes and its class's consent defaults allow, and whether it
    may record consent (a staff role HUB_CONSENT_RECORDERS names, for its partner class); for a
    person's own app, their record (hub/search/access.py)."""
    settings = (consent_defaults, consent_recorders, proxy_passes_at_age)
    known = _ACCESS.get(principal.token_id)
    if known is not None and known[0] is principal and known[1] == settings:
        return known[2]
    found = _make_access(principal, consent_defaults, consent_recorders, proxy_passes_at_age)
    if len(_ACCESS) >= _ACCESS_LIMIT:
        _ACCESS.clear()
    _ACCESS[principal.token_id] = (principal, settings, found)
    return found


def _make_access(principal: Principal, consent_defaults: str | None, consent_recorders: str | None,
                 proxy_passes_at_age: int) -> Access:
    if principal.patient is not None:
        # A person's own app: their record, not a partner's view of it (no defaults, no grants).
        kind, _, user_id = (principal.user or "").partition("/")
        return Access(
            partner_class=principal.partner_class, org_code=principal.organisation,
            org_system=principal.organisation_system or None, default_parts=(),
            scopes=_scope_table(frozenset(principal.scopes)), client_id=principal.client_id,
            user=principal.user, user_role=principal.user_role, patient=principal.patient,
            proxy=user_id if kind == "RelatedPerson" else None, proxy_until_age=proxy_passes_at_age)
    return Access(
        partner_class=principal.partner_class,
        org_code=principal.organisation,
        org_system=principal.organisation_system or None,
        default_parts=_defaults(consent_defaults).get(principal.partner_class, ()),
        scopes=_scope_table(frozenset(principal.scopes)),
        client_id=principal.client_id,
        user=principal.user,
        user_role=principal.user_role,
        records_consent=(principal.partner_class, principal.user_role or "") in _recorders(consent_recorders),
    )


def of(request: Request) -> Access:
    """This request's Access (made once per request)."""
    state = request.scope.setdefault("state", {})
    found = state.get("access")
    if found is not None:
        return found
    principal = state.get("principal")
    settings = request.app.state.settings
    if principal is None:
        if settings.auth_enabled:
            # The security middleware authenticates every FHIR path; reaching here without a
            # caller means a route escaped it, so refuse rather than serve unfiltered.
            raise FhirError("login", "this request carries no verified access token", status=401)
        found = Access.system()  # authorisation switched off: measuring what security costs
    else:
        found = access_for(principal, settings.consent_defaults, settings.consent_recorders,
                           settings.proxy_passes_at_age)
    state["access"] = found
    return found


def principal(request: Request) -> Principal | None:
    """The verified caller (None only with authorisation off)."""
    return request.scope.get("state", {}).get("principal")


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
