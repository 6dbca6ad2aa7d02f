"""Outcome measures: a completed QuestionnaireResponse to one of the guide's Questionnaires
(ONS personal wellbeing, goal attainment scaling, and the licensed instruments whose structure
the guide ships) turned into Observations — one per answered question that carries a code — on
the person's Goals (`Observation.focus`, from the response's `measured-goal` extensions) and
plan (`basedOn`), so progress can be charted over time:
`GET /Observation?focus=Goal/[id]&code=[system]|gas-attainment&_sort=date`.

Like SDC's observation-based extraction, but automatic: the plan worker writes them when the
response is written, under ids derived from the response and the question, so a response
amended later replaces its Observations rather than adding more."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hub.fhir.ids import derived_id
from hub.plans.followups import PART_TAG, QUESTIONNAIRES
from hub.fhir.identifiers import CANONICAL_BASE
from hub.plans.model import MEASURED_GOAL, extensions, value

_SURVEY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey",
                       "display": "Survey"}]}
_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/ipc-outcome-observation"
_PERFORMERS = ("Practitioner", "PractitionerRole", "Organization", "CareTeam", "Patient", "RelatedPerson")


def is_outcome_response(resource: dict[str, Any]) -> bool:
    """A QuestionnaireResponse to one of the guide's Questionnaires."""
    return (resource.get("resourceType") == "QuestionnaireResponse"
            and str(resource.get("questionnaire", "")).startswith(QUESTIONNAIRES))


def observation_id(response_id: str, link_id: str, occurrence: int = 0) -> str:
    """The Observation of the `occurrence`-th answer to question `link_id` (a repeating group
    answers it more than once)."""
    parts = (response_id, link_id) if occurrence == 0 else (response_id, link_id, str(occurrence))
    return derived_id("outcome-measure", *parts)


def observations(response: dict[str, Any], response_id: str, questionnaire: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The Observations a response becomes (none unless it is completed or amended)."""
    if questionnaire is None or response.get("status") not in ("completed", "amended"):
        return []
    coded = {item["linkId"]: item for item in _items(questionnaire.get("item")) if item.get("code")}
    goals = [value(e) for e in extensions(response, MEASURED_GOAL) if isinstance(value(e), dict)]
    out = []
    seen: dict[str, int] = {}
    for item, label in _answered(response.get("item"), None):
        definition = coded.get(item.get("linkId"))
        answers = item.get("answer") or []
        if definition is None or not answers:
            continue
        observed = _value(answers[0])
        if observed is None:
            continue
        occurrence = seen[item["linkId"]] = seen.get(item["linkId"], -1) + 1
        text = label or definition.get("text")
        observation: dict[str, Any] = {
            "resourceType": "Observation", "id": observation_id(response_id, item["linkId"], occurrence),
            "meta": {"profile": [_PROFILE], "tag": [PART_TAG]},
            "status": "amended" if response.get("status") == "amended" else "final",
            "category": [_SURVEY],
            "code": {"coding": definition["code"], **({"text": text} if text else {})},
            "subject": response["subject"],
            "derivedFrom": [{"reference": f"QuestionnaireResponse/{response_id}"}],
            **observed,
        }
        if response.get("authored"):
            observation["effectiveDateTime"] = response["authored"]
        if goals:
            observation["focus"] = [{"reference": g["reference"]} for g in goals if g.get("reference")]
        plans = [r for r in response.get("basedOn") or () if str(r.get("reference", "")).startswith("CarePlan/")]
        if plans:
            observation["basedOn"] = plans
        author = (response.get("author") or {}).get("reference", "")
        if author.split("/")[0] in _PERFORMERS:
            observation["performer"] = [{"reference": author}]
        out.append(observation)
    return out


def _items(items: Any) -> Iterator[dict[str, Any]]:
    """Every item of a Questionnaire, nested ones included."""
    for item in items or ():
        if isinstance(item, dict):
            yield item
            yield from _items(item.get("item"))


def _answered(items: Any, label: str | None) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Every item of a response (nested ones included) with the label its group gives it: the
    text answer of a sibling question (a POET outcome area names the rating beside it)."""
    items = [i for i in items or () if isinstance(i, dict)]
    here = next((a["valueString"] for i in items for a in i.get("answer") or () if "valueString" in a), None)
    for item in items:
        yield item, here or label
        yield from _answered(item.get("item"), here or label)
        for answer in item.get("answer") or ():
            if isinstance(answer, dict):
                yield from _answered(answer.get("item"), here or label)


def _value(answer: dict[str, Any]) -> dict[str, Any] | None:
    """An answer as an Observation value: numbers as a score quantity (searchable with
    `value-quantity`), codes as a CodeableConcept."""
    for key in ("valueInteger", "valueDecimal"):
        if key in answer:
            return {"valueQuantity": {"value": answer[key], "unit": "score", "system": "http://unitsofmeasure.org",
                                      "code": "{score}"}}
    if "valueCoding" in answer:
        return {"valueCodeableConcept": {"coding": [answer["valueCoding"]]}}
    return None
