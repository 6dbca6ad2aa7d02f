"""What a person's IPC record-sharing Consent grants, as rows the store keeps beside it.

Only an `ipc-consent` (profile, or the `record-sharing` category) that is `active` grants
anything: other Consents (a UK Core treatment consent, say) never change who sees the record.
The base provision is `deny`; each nested provision permits (or denies) the parts it lists
(`provision.code`, `ipc-record-part`) to one partner class (`actor.role`, `ipc-consent-partner`),
optionally only to one organisation (`actor.reference`).

A grant to an organisation binds to that organisation's identity — an identifier system and
value — recorded in the grant when the Consent is written, never to an Organization resource
that could be edited later: a reference that carries an `identifier` is bound to it; a literal
`Organization/x` is bound to the identifiers that Organization carries at that moment (one row
per identifier); an Organization without an identifier, an identifier without a system, an
absolute or contained reference all grant nothing. A Reference with only a `display` (R4
requires `actor.reference`) names the whole partner class. `lead-charity` names a charity in its
role as that person's lead charity, so it always needs an organisation: without one it grants
nobody anything (a guess would open the record to every charity)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from hub.consent.delegation import is_delegation, write_delegation
from hub.consent.parts import PART_SYSTEM, PARTS, PLAN_CATEGORY_SYSTEM

IPC_CONSENT_PROFILE = "https://ipc-hub.example.org/fhir/StructureDefinition/ipc-consent"
PARTNER_SYSTEM = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-consent-partner"
LEAD_CHARITY = "lead-charity"
ROLES = ("nhs", "local-authority", "lead-charity", "charity", "defence", "education")


@dataclass(frozen=True, slots=True)
class Grant:
    """One (role, organisation, part) a Consent permits or denies for one patient. No
    organisation (both None): the whole partner class."""

    patient_id: str
    role: str
    org_system: str | None
    org_code: str | None
    part: str
    permit: bool


# An Organization's identifiers as (system, value), by the Organization's id: what a literal
# `Organization/x` in a provision is bound to.
Organisations = dict[str, list[tuple[str, str]]]


def is_record_sharing(resource: dict[str, Any]) -> bool:
    """An IPC record-sharing Consent (whatever its status)."""
    if resource.get("resourceType") != "Consent":
        return False
    profiles = [p.split("|")[0] for p in (resource.get("meta") or {}).get("profile") or () if isinstance(p, str)]
    if IPC_CONSENT_PROFILE in profiles:
        return True
    return any(c.get("system") == PLAN_CATEGORY_SYSTEM and c.get("code") == "record-sharing"
               for concept in resource.get("category") or () if isinstance(concept, dict)
               for c in concept.get("coding") or () if isinstance(c, dict))


def decides_access(resource: dict[str, Any]) -> bool:
    """A Consent that decides who sees the record: a record-sharing Consent or a proxy's
    delegation (both recorded only on the authority hub.consent.authority checks)."""
    return is_record_sharing(resource) or is_delegation(resource)


def grants_of(resource: dict[str, Any], patient_id: str | None, organisations: Organisations | None = None) -> list[Grant]:
    """The grants an active IPC record-sharing Consent makes; none for anything else.
    `organisations`: the identifiers of each Organization its provisions name by id."""
    if patient_id is None or resource.get("status") != "active" or not is_record_sharing(resource):
        return []
    root = resource.get("provision")
    if not isinstance(root, dict):
        return []
    found: list[Grant] = []
    for nested in root.get("provision") or ():
        if isinstance(nested, dict) and nested.get("type") in ("permit", "deny"):
            found += _provision_grants(nested, patient_id, organisations or {})
    return list(dict.fromkeys(found))


def organisations_named(resource: dict[str, Any]) -> list[str]:
    """The ids of the Organizations a Consent's provisions name by literal reference."""
    found = []
    root = resource.get("provision")
    for nested in (root.get("provision") or ()) if isinstance(root, dict) else ():
        for actor in (nested.get("actor") or ()) if isinstance(nested, dict) else ():
            reference = actor.get("reference") if isinstance(actor, dict) else None
            text = reference.get("reference") if isinstance(reference, dict) else None
            if isinstance(text, str) and text.startswith("Organization/") and text.count("/") == 1:
                found.append(text.split("/")[1])
    return sorted(set(found))


_DELETE_GRANTS = "DELETE FROM consent_grant WHERE consent_id = %s"
_INSERT_GRANT = ("INSERT INTO consent_grant (consent_id, patient_id, role, org_system, org_code, part, permit) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s)")
_ORGANISATIONS = ("SELECT t.res_id, t.system, t.code FROM idx_token t JOIN resource r ON r.res_type = t.res_type "
                  "AND r.res_id = t.res_id AND NOT r.deleted WHERE t.res_type = 'Organization' "
                  "AND t.param = 'identifier' AND t.res_id = ANY(%s) AND t.system IS NOT NULL AND t.code IS NOT NULL")


async def write_grants(conn: AsyncConnection, consent_id: str, resource: dict[str, Any] | None,
                       patient_id: str | None) -> list[Grant]:
    """Replace a Consent's grants (None: it was deleted), in the Consent's own transaction —
    every write path of the store calls this with the Consent it writes — so a withdrawal takes
    effect on the very next request. Organizations named by id are bound to the identifiers they
    carry now."""
    await conn.execute(_DELETE_GRANTS, (consent_id,))
    await write_delegation(conn, consent_id, resource, patient_id)  # a proxy's delegation, if it is one
    if resource is None:
        return []
    named = organisations_named(resource)
    organisations: Organisations = {}
    if named:
        cur = await conn.execute(_ORGANISATIONS, (named,))
        for org_id, system, code in await cur.fetchall():
            organisations.setdefault(org_id, []).append((system, code))
    found = grants_of(resource, patient_id, organisations)
    if found:
        async with conn.cursor() as cur:
            await cur.executemany(_INSERT_GRANT, [(consent_id, g.patient_id, g.role, g.org_system, g.org_code,
                                                   g.part, g.permit) for g in found])
    return found


def _provision_grants(provision: dict[str, Any], patient_id: str, organisations: Organisations) -> list[Grant]:
    parts = _parts(provision.get("code"))
    permit = provision["type"] == "permit"
    found = []
    for actor in provision.get("actor") or ():
        if not isinstance(actor, dict):
            continue
        for role in _roles(actor.get("role")):
            bound = _organisation(actor.get("reference"), organisations)
            if bound is None or (role == LEAD_CHARITY and bound == [_WHOLE_CLASS]):
                continue  # names an organisation the hub cannot bind to: grants nobody
            found += [Grant(patient_id, role, system, code, part, permit)
                      for system, code in bound for part in parts]
    return found


def _parts(codes: Any) -> list[str]:
    parts = []
    for concept in codes or ():
        for coding in (concept.get("coding") or ()) if isinstance(concept, dict) else ():
            if isinstance(coding, dict) and coding.get("system") == PART_SYSTEM and coding.get("code") in PARTS:
                parts.append(coding["code"])
    return parts


def _roles(role: Any) -> list[str]:
    codings = role.get("coding") or () if isinstance(role, dict) else ()
    return [c["code"] for c in codings if isinstance(c, dict) and c.get("system") == PARTNER_SYSTEM
            and c.get("code") in ROLES]


_WHOLE_CLASS = (None, None)


def _organisation(reference: Any, organisations: Organisations) -> list[tuple[str | None, str | None]] | None:
    """The organisation identities a provision's actor binds to: [(system, value), ...];
    [_WHOLE_CLASS] for a display-only reference; None when it names an organisation the hub
    cannot bind to (which must never widen the grant to the whole partner class)."""
    if not isinstance(reference, dict):
        return [_WHOLE_CLASS]
    identifier = reference.get("identifier")
    if isinstance(identifier, dict):
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(system, str) and system and isinstance(value, str) and value:
            return [(system, value)]
        return None
    text = reference.get("reference")
    if text is None:
        return [_WHOLE_CLASS]
    if isinstance(text, str) and text.startswith("Organization/") and text.count("/") == 1:
        bound = organisations.get(text.split("/")[1])
        return sorted(set(bound)) if bound else None  # an Organization with no identifier: nobody
    return None  # absolute, contained or of another type: nobody
