"""What a person's IPC record-sharing Consent grants, as rows the store keeps beside it.

Only an `ipc-consent` (profile, or the `record-sharing` category) that is `active` grants
anything: other Consents (a UK Core treatment consent, say) never change who sees the record.
The base provision is `deny`; each nested provision permits (or denies) the parts it lists
(`provision.code`, `ipc-record-part`) to one partner class (`actor.role`, `ipc-consent-partner`),
optionally only to one organisation (`actor.reference`: an Organization reference, matched on
the Organization's identifier when a client asks; or a logical reference by identifier). R4
requires `actor.reference`; one with only a `display` names the whole partner class.
`lead-charity` names a charity in its role as that person's lead charity, so it always needs an
organisation: without one it grants nobody anything (a guess would open the record to every
charity)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from hub.consent.parts import PART_SYSTEM, PARTS, PLAN_CATEGORY_SYSTEM

IPC_CONSENT_PROFILE = "https://ipc-hub.example.org/fhir/StructureDefinition/ipc-consent"
PARTNER_SYSTEM = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-consent-partner"
LEAD_CHARITY = "lead-charity"
ROLES = ("nhs", "local-authority", "lead-charity", "charity", "defence", "education")
# The organisation of a grant whose actor reference the hub cannot resolve: no Organization can
# have this id ('#' is not allowed in FHIR ids), so the grant matches nobody.
UNRESOLVABLE = "#unresolvable"


@dataclass(frozen=True, slots=True)
class Grant:
    """One (role, organisation, part) a Consent permits or denies for one patient."""

    patient_id: str
    role: str
    org_id: str | None  # an Organization's logical id (matched through its identifier)
    org_code: str | None  # an organisation identifier value given directly
    part: str
    permit: bool


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


def grants_of(resource: dict[str, Any], patient_id: str | None) -> list[Grant]:
    """The grants an active IPC record-sharing Consent makes; none for anything else."""
    if patient_id is None or resource.get("status") != "active" or not is_record_sharing(resource):
        return []
    root = resource.get("provision")
    if not isinstance(root, dict):
        return []
    found: list[Grant] = []
    for nested in root.get("provision") or ():
        if isinstance(nested, dict) and nested.get("type") in ("permit", "deny"):
            found += _provision_grants(nested, patient_id)
    return list(dict.fromkeys(found))


_DELETE_GRANTS = "DELETE FROM consent_grant WHERE consent_id = %s"
_INSERT_GRANT = ("INSERT INTO consent_grant (consent_id, patient_id, role, org_id, org_code, part, permit) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s)")


async def write_grants(conn: AsyncConnection, consent_id: str, resource: dict[str, Any] | None,
                       patient_id: str | None) -> None:
    """Replace a Consent's grants (None: it was deleted), in the Consent's own transaction —
    every write path of the store calls this with the Consent it writes — so a withdrawal takes
    effect on the very next request."""
    await conn.execute(_DELETE_GRANTS, (consent_id,))
    found = grants_of(resource, patient_id) if resource is not None else []
    if found:
        async with conn.cursor() as cur:
            await cur.executemany(_INSERT_GRANT, [(consent_id, g.patient_id, g.role, g.org_id, g.org_code,
                                                   g.part, g.permit) for g in found])


def _provision_grants(provision: dict[str, Any], patient_id: str) -> list[Grant]:
    parts = _parts(provision.get("code"))
    permit = provision["type"] == "permit"
    found = []
    for actor in provision.get("actor") or ():
        if not isinstance(actor, dict):
            continue
        for role in _roles(actor.get("role")):
            org_id, org_code = _organisation(actor.get("reference"))
            if role == LEAD_CHARITY and org_id is None and org_code is None:
                continue
            found += [Grant(patient_id, role, org_id, org_code, part, permit) for part in parts]
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


def _organisation(reference: Any) -> tuple[str | None, str | None]:
    if not isinstance(reference, dict):
        return None, None
    text = reference.get("reference")
    if isinstance(text, str) and text.startswith("Organization/"):
        return text.split("/")[1], None
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        return None, identifier["value"]
    if isinstance(text, str):
        # A reference the hub cannot tie to an organisation (absolute URL, contained) must not
        # widen the grant to the whole partner class.
        return UNRESOLVABLE, None
    return None, None

