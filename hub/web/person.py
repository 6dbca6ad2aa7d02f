"""A person's shared record (`/app/people/{id}`): who they are and their identifiers, Armed
Forces service, carers, care team, conditions, encounters and admissions on a timeline,
documents, and their plans; beside every fact, where it came from and when (its Provenance:
the MOD feed, a GP's HL7 v2 feed, a council extract, a partner's app, a signed-in person).

Everything comes from `Patient/$everything` as this person's app may see it: what the person
did not share with the viewer's organisation is simply not there."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.web import facts
from hub.web.access import signed_in
from hub.web.context import page_context
from hub.web.errors import PageError
from hub.web.pages import concept_text, person_name, render
from hub.web.record import Record

router = APIRouter(include_in_schema=False)

_PROVENANCE_BATCH = 40


@router.get("/app/people/{patient_id}")
async def person(patient_id: str, request: Request) -> Response:
    workspace = await signed_in(request)
    record = workspace.record
    patient = await record.read("Patient", patient_id)
    if patient is None:
        raise PageError(404, "Person not found", "There is no such person, or they have not shared their "
                        "record with your organisation.")
    everything = await record.everything(patient_id)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in everything.matches + list(everything.included.values()):
        by_type.setdefault(resource["resourceType"], []).append(resource)
    sources = await provenance_of(record, [patient, *everything.matches])
    plans = [p for p in by_type.get("CarePlan", []) if facts.has_category(p, "care-support-plan")]
    budgets = [p for p in by_type.get("CarePlan", []) if facts.has_category(p, "budget-statement")]
    timeline = sorted(
        [{"when": _started(e), "what": facts_text(e), "kind": "Encounter", "ref": f"Encounter/{e['id']}"}
         for e in by_type.get("Encounter", [])] +
        [{"when": c.get("onsetDateTime") or c.get("recordedDate"), "what": facts_text(c), "kind": "Condition",
          "ref": f"Condition/{c['id']}"} for c in by_type.get("Condition", [])],
        key=lambda item: item["when"] or "", reverse=True)
    return render("person", **page_context(
        workspace, "caseload", facts_name(patient), patient=patient, identifiers=facts.identifiers(patient),
        service=_service(patient), carers=by_type.get("RelatedPerson", []), teams=by_type.get("CareTeam", []),
        conditions=by_type.get("Condition", []), timeline=timeline,
        documents=by_type.get("DocumentReference", []), plans=plans, budgets=budgets, sources=sources,
        names=await record.names({m.get("member", {}).get("reference", "") for team in by_type.get("CareTeam", [])
                                      for m in team.get("participant") or []})))


async def provenance_of(record: Record, resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Where each of these resources came from (the latest Provenance naming it)."""
    refs = sorted({f"{r['resourceType']}/{r['id']}" for r in resources if r.get("id")})
    found: list[dict[str, Any]] = []
    for start in range(0, len(refs), _PROVENANCE_BATCH):
        chunk = refs[start:start + _PROVENANCE_BATCH]
        result = await record.search("Provenance", [("target", ",".join(chunk)), ("_count", "500")])
        found += result.matches
    return facts.provenance_by_target(found)


def facts_name(patient: dict[str, Any]) -> str:
    return person_name(patient) or "Person"


def facts_text(resource: dict[str, Any]) -> str:
    if resource["resourceType"] == "Encounter":
        kind = concept_text(resource.get("type")) or concept_text(resource.get("class")) or "Encounter"
        return f"{kind} ({resource.get('status', '')})"
    return concept_text(resource.get("code")) or resource["resourceType"]


def _started(encounter: dict[str, Any]) -> str | None:
    return (encounter.get("period") or {}).get("start")


def _service(patient: dict[str, Any]) -> dict[str, Any] | None:
    exts = facts.extension(patient, "armed-forces-service")
    if not exts:
        return None
    ext = exts[0]
    return {"branch": (facts.sub_values(ext, "branch") or [None])[0],
            "enlisted": (facts.sub_values(ext, "enlisted") or [None])[0],
            "discharged": (facts.sub_values(ext, "discharged") or [None])[0],
            "pathway": (facts.sub_values(ext, "recoveryPathwayStatus") or [None])[0]}
