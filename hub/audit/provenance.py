"""Provenance: where each version in the shared record came from. The recorder names the feed
and the envelope (hub.pipeline.provenance); the API names the client, its organisation and
partner class from the access token, so a charity's action on a plan is traced to that charity
as a GP's registration is traced to the GP's feed. One builder, so both read alike."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub.audit.events import CLIENT_ID_SYSTEM, PARTNER_CLASS_SYSTEM
from hub.auth.principal import Principal
from hub.fhir.ids import derived_id

_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"


def build(targets: list[str], activity: str, agents: list[dict[str, Any]]) -> dict[str, Any]:
    """A Provenance for these `Type/id/_history/n` targets; its id derives from them, so writing
    it again (a replay, a retried request) lands on the same one."""
    ordered = sorted(targets)
    return {
        "resourceType": "Provenance",
        "id": derived_id("provenance", *ordered),
        "target": [{"reference": t} for t in ordered],
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "activity": {"coding": [{"system": _DATA_OPERATION, "code": activity}]},
        "agent": agents,
    }


def agent(role: str, who: dict[str, Any], on_behalf_of: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"type": {"coding": [{"system": _PARTICIPANT_TYPE, "code": role}]}, "who": who}
    if on_behalf_of:
        out["onBehalfOf"] = on_behalf_of
    return out


def client_write(targets: list[str], activity: str, principal: Principal) -> dict[str, Any]:
    """Provenance for what one API request wrote: the client as author, on behalf of its
    organisation, with its partner class as the agent's role. When the client is an app acting
    for a signed-in person, that person (their Practitioner) is the author and the app the
    enterer: the fact is traced to who said it and to what they used."""
    organisation = {"identifier": {"system": principal.organisation_system, "value": principal.organisation}}
    role = [{"coding": [{"system": PARTNER_CLASS_SYSTEM, "code": principal.partner_class}]}]
    app = {"identifier": {"system": CLIENT_ID_SYSTEM, "value": principal.client_id},
           "display": principal.client_id}
    if principal.user:
        person = agent("author", {"reference": principal.user, "display": principal.user_name or principal.user},
                       organisation)
        person["role"] = role
        return build(targets, activity, [person, agent("enterer", app)])
    author = agent("author", app, organisation)
    author["role"] = role
    return build(targets, activity, [author])
