"""A resource allocation system (RAS) applied to an assessment: answers → points → money, with
uplifts and a cap, and every step written down so a person can see how their indicative budget
was reached.

The system is data a council or ICB configures (profile `ipc-resource-allocation`, a
ChargeItemDefinition, versioned): the assessment Questionnaire it scores (each answer's points in
the standard `ordinalValue` extension on the answer option's Coding, or on the item for a number
answered), a base price component (money per point), uplifts (surcharge components whose
applicability is a FHIRPath expression on the QuestionnaireResponse: a percentage of the points'
money as `factor`, or a fixed `amount`) and a cap (`ras-cap`). Pure: no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from hub.fhir.errors import FhirError
from hub.fhir.validation.rules import fhirpath_rule
from hub.money.statement import SD, money_value

ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
PENNY = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the reasoning: what was looked at, what it gave."""
    kind: str  # answer, points, uplift, cap, result
    text: str
    points: Decimal | None = None
    amount: Decimal | None = None


@dataclass(slots=True)
class Indicative:
    amount: Decimal
    system: str  # canonical|version of the system applied
    steps: list[Step] = field(default_factory=list)

    def reasoning(self) -> str:
        """The steps as markdown, one line each (kept on the statement beside the figure)."""
        return "\n".join(f"- {step.text}" for step in self.steps)


def pounds(value: Decimal) -> str:
    return f"£{value:,.2f}"


def canonical_of(resource: dict[str, Any]) -> str:
    return f"{resource.get('url', '')}|{resource.get('version', '')}"


def _ext(resource: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in resource.get("extension") or [] if e.get("url") == f"{SD}/{name}"), None)


def _ordinal(element: dict[str, Any]) -> Decimal | None:
    for extension in element.get("extension") or []:
        if extension.get("url") == ORDINAL_VALUE and "valueDecimal" in extension:
            return Decimal(str(extension["valueDecimal"]))
    return None


def _items(items: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        out[item.get("linkId", "")] = item
        out.update(_items(item.get("item")))
    return out


def _answers(items: list[dict[str, Any]] | None) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for item in items or []:
        for answer in item.get("answer") or []:
            out.append((item.get("linkId", ""), answer))
            out += _answers(answer.get("item"))
        out += _answers(item.get("item"))
    return out


def _points(question: dict[str, Any], answer: dict[str, Any]) -> tuple[Decimal | None, str]:
    """(points, the answer in words) for one answer; None points for an answer that scores
    nothing (a yes/no read by an uplift)."""
    if "valueCoding" in answer:
        coding = answer["valueCoding"]
        for option in question.get("answerOption") or []:
            offered = option.get("valueCoding") or {}
            if offered.get("code") == coding.get("code") and offered.get("system") == coding.get("system"):
                points = _ordinal(offered)
                if points is None:
                    points = _ordinal(option)
                return points, offered.get("display") or coding.get("code", "")
        raise FhirError("code-invalid", f"the answer {coding.get('code')!r} to {question.get('linkId')!r} is not "
                        "one of the questionnaire's options", expression="QuestionnaireResponse.item")
    for key in ("valueInteger", "valueDecimal"):
        if key in answer:
            weight = _ordinal(question)
            value = Decimal(str(answer[key]))
            return (value * weight if weight is not None else None), str(answer[key])
    shown = next((str(v) for k, v in answer.items() if k.startswith("value")), "")
    return None, {"True": "yes", "False": "no"}.get(shown, shown)


def indicative_budget(system: dict[str, Any], questionnaire: dict[str, Any],
                      response: dict[str, Any]) -> Indicative:
    """Apply the system to a completed assessment. Refuses (FhirError) an assessment of another
    questionnaire, one not completed, or an answer the questionnaire does not offer."""
    wanted = ((_ext(system, "ras-questionnaire") or {}).get("valueCanonical") or "").split("|")
    answered = (response.get("questionnaire") or "").split("|")
    if wanted[0] != answered[0] or (len(wanted) > 1 and len(answered) > 1 and wanted[1] != answered[1]):
        raise FhirError("business-rule", f"the assessment answers {response.get('questionnaire')!r}, but this "
                        f"resource allocation system scores {'|'.join(wanted)!r}",
                        expression="QuestionnaireResponse.questionnaire")
    if response.get("status") not in ("completed", "amended"):
        raise FhirError("business-rule", "an indicative budget needs a completed assessment "
                        f"(this one is {response.get('status')!r})", expression="QuestionnaireResponse.status")
    result = Indicative(Decimal(0), canonical_of(system))
    steps = result.steps
    questions = _items(questionnaire.get("item"))
    total = Decimal(0)
    for link_id, answer in _answers(response.get("item")):
        question = questions.get(link_id)
        if question is None:
            raise FhirError("business-rule", f"the assessment answers {link_id!r}, which the questionnaire "
                            "does not ask", expression="QuestionnaireResponse.item")
        points, words = _points(question, answer)
        if points is None:
            continue
        total += points
        steps.append(Step("answer", f"{question.get('text') or link_id} {words}: {points.normalize():f} points", points=points))
    per_point = _base_price(system)
    base = (total * per_point).quantize(PENNY, ROUND_HALF_UP)
    steps.append(Step("points", f"{total.normalize():f} points × {pounds(per_point)} a point = {pounds(base)}",
                      points=total, amount=base))
    amount = base
    for group in system.get("propertyGroup") or []:
        for component in group.get("priceComponent") or []:
            if component.get("type") != "surcharge":
                continue
            label = "; ".join(a.get("description") or a.get("expression", "") for a in group.get("applicability") or [])
            if not _applies(group, response):
                steps.append(Step("uplift", f"{label}: does not apply", amount=Decimal(0)))
                continue
            if "factor" in component:
                factor = Decimal(str(component["factor"]))
                added = (base * factor).quantize(PENNY, ROUND_HALF_UP)
                steps.append(Step("uplift", f"{label}: + {(factor * 100).normalize():f}% of {pounds(base)} = "
                                  f"{pounds(added)}", amount=added))
            else:
                added = money_value(component.get("amount")).quantize(PENNY)
                steps.append(Step("uplift", f"{label}: + {pounds(added)}", amount=added))
            amount += added
    cap = _ext(system, "ras-cap")
    if cap is not None and amount > (limit := money_value(cap.get("valueMoney"))):
        steps.append(Step("cap", f"{pounds(amount)} is more than the cap of {pounds(limit)}: capped", amount=limit))
        amount = limit
    result.amount = amount
    name = system.get("title") or "resource allocation system"
    steps.append(Step("result", f"Indicative budget: {pounds(amount)} a year ({name}, version "
                      f"{system.get('version', '')})", amount=amount))
    return result


def _base_price(system: dict[str, Any]) -> Decimal:
    for group in system.get("propertyGroup") or []:
        for component in group.get("priceComponent") or []:
            if component.get("type") == "base" and component.get("amount"):
                return money_value(component["amount"])
    raise FhirError("business-rule", "the resource allocation system has no base price component (money per point)",
                    expression="ChargeItemDefinition.propertyGroup")


def _applies(group: dict[str, Any], response: dict[str, Any]) -> bool:
    """Every applicability condition of the group holds on the assessment (FHIRPath)."""
    for condition in group.get("applicability") or []:
        expression = condition.get("expression")
        if not expression:
            continue
        if condition.get("language", "text/fhirpath") != "text/fhirpath":
            raise FhirError("not-supported", f"applicability language {condition.get('language')!r}: only FHIRPath")
        try:
            found = fhirpath_rule(expression)(response)
        except Exception:  # noqa: BLE001 - a broken expression in configuration is a specific error
            raise FhirError("business-rule", f"the uplift condition {expression!r} cannot be evaluated",
                            expression="ChargeItemDefinition.propertyGroup.applicability") from None
        if found != [True]:
            return False
    return True
