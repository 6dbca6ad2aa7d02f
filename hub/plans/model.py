"""Reading and writing the parts of a personalised care and support plan that its life cycle
turns on: the IPC stage, the agreements, the budget statement's funders, the coordinator, the
review schedule. The plan is FHIR JSON (a dict) as the guide profiles it (`ipc-care-plan`,
`ipc-budget-statement`); these functions never change their argument (writers return a copy),
so the store can compare the version before a write with the one after."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hub.fhir.identifiers import CANONICAL_BASE

SD = f"{CANONICAL_BASE}/StructureDefinition/"
CS = f"{CANONICAL_BASE}/CodeSystem/"

STAGE = SD + "ipc-stage"
COORDINATOR = SD + "care-coordinator"
AGREEMENT = SD + "plan-agreement"
REVIEW_INTERVAL = SD + "review-interval"
NEXT_REVIEW = SD + "next-review-date"
LAST_REVIEW = SD + "last-review"
ALLOCATION = SD + "budget-allocation"
CARE_PLAN = SD + "care-plan"               # on an Encounter or Flag: the plan it is about
MEASURED_GOAL = SD + "measured-goal"       # on an outcome QuestionnaireResponse

PLAN_CATEGORY_SYSTEM = CS + "ipc-plan-category"
PROGRAMME_SYSTEM = CS + "ipc-programme"
STAGE_SYSTEM = CS + "ipc-stage"
AGREEMENT_ROLE_SYSTEM = CS + "ipc-agreement-role"
FUNDING_SOURCE_SYSTEM = CS + "ipc-funding-source"
PLAN_TASK_SYSTEM = CS + "ipc-plan-task"
CONTACT_TYPE_SYSTEM = CS + "ipc-plan-contact-type"
FLAG_SYSTEM = CS + "ipc-flag"
OUTCOME_SYSTEM = CS + "ipc-outcome-measure"

PLAN = "care-support-plan"
BUDGET = "budget-statement"
# A plan in these states is the person's plan for its period; completed, revoked and
# entered-in-error plans are history.
OPEN_STATUSES = ("draft", "active", "on-hold")
# The IPC stages in order (Annex A of the IPC for Veterans framework; CodeSystem ipc-stage).
STAGES = ("context", "preparation", "conversation", "record-and-agree", "make-it-happen", "review")
STAGE_NAMES = {"context": "Context", "preparation": "Preparation", "conversation": "Conversation",
               "record-and-agree": "Record and agree", "make-it-happen": "Make it happen", "review": "Review"}


def codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or () if isinstance(c, dict)]


def code_in(concepts: Any, system: str) -> str | None:
    """The first code from `system` in a CodeableConcept or a list of them."""
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        for coding in codings(concept):
            if coding.get("system") == system and isinstance(coding.get("code"), str):
                return coding["code"]
    return None


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def plan_kind(resource: dict[str, Any]) -> str | None:
    """`care-support-plan` or `budget-statement` for an IPC CarePlan of either kind (any status);
    None for anything else."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "CarePlan":
        return None
    for concept_ in resource.get("category") or ():
        for coding in codings(concept_):
            if coding.get("system") == PLAN_CATEGORY_SYSTEM and coding.get("code") in (PLAN, BUDGET):
                return coding["code"]
    return None


def is_open(resource: dict[str, Any]) -> bool:
    return resource.get("status") in OPEN_STATUSES


def extensions(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension") or () if isinstance(e, dict) and e.get("url") == url]


def sub(extension: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in extension.get("extension") or () if isinstance(e, dict) and e.get("url") == url]


def value(extension: dict[str, Any] | None) -> Any:
    """The value[x] of an extension (whatever its type), None without one."""
    if not extension:
        return None
    return next((v for k, v in extension.items() if k.startswith("value")), None)


def sub_value(extension: dict[str, Any], url: str) -> Any:
    found = sub(extension, url)
    return value(found[0]) if found else None


def reference(resource: dict[str, Any], element: str) -> str | None:
    ref = resource.get(element)
    return ref.get("reference") if isinstance(ref, dict) and isinstance(ref.get("reference"), str) else None


def stage(plan: dict[str, Any]) -> str | None:
    found = extensions(plan, STAGE)
    return code_in(value(found[0]), STAGE_SYSTEM) if found else None


def stage_rank(code: str | None) -> int:
    return STAGES.index(code) if code in STAGES else -1


def coordinator(plan: dict[str, Any]) -> str | None:
    found = extensions(plan, COORDINATOR)
    ref = value(found[0]) if found else None
    return ref.get("reference") if isinstance(ref, dict) else None


def next_review(plan: dict[str, Any]) -> str | None:
    found = extensions(plan, NEXT_REVIEW)
    date = value(found[0]) if found else None
    return date if isinstance(date, str) else None


def last_review(plan: dict[str, Any]) -> str | None:
    found = extensions(plan, LAST_REVIEW)
    ref = value(found[0]) if found else None
    return ref.get("reference") if isinstance(ref, dict) else None


def review_interval(plan: dict[str, Any]) -> tuple[int, str] | None:
    """The plan's own review interval as (number, UCUM unit: a, mo, wk or d), None if it has none."""
    found = extensions(plan, REVIEW_INTERVAL)
    duration = value(found[0]) if found else None
    if not isinstance(duration, dict) or duration.get("value") is None:
        return None
    unit = duration.get("code") or duration.get("unit")
    number = duration["value"]
    if unit not in ("a", "mo", "wk", "d") or int(number) != number or number <= 0:
        return None
    return int(number), unit


def programmes(plan: dict[str, Any]) -> list[str]:
    """The IPC programmes a plan is part of (its `ipc-programme` categories), e.g. `ipc4v`."""
    return [c["code"] for concept_ in plan.get("category") or () for c in codings(concept_)
            if c.get("system") == PROGRAMME_SYSTEM and isinstance(c.get("code"), str)]


def goals(plan: dict[str, Any]) -> list[str]:
    return [g["reference"] for g in plan.get("goal") or () if isinstance(g, dict) and g.get("reference")]


def subject(resource: dict[str, Any]) -> str | None:
    return reference(resource, "subject")


def parent_plans(budget: dict[str, Any]) -> list[str]:
    """The ids of the plans a budget statement is part of."""
    return [ref["reference"].removeprefix("CarePlan/") for ref in budget.get("partOf") or ()
            if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("CarePlan/")]


def funders(budget: dict[str, Any]) -> set[str]:
    """The funding sources (`ipc-funding-source` codes) a budget statement's allocations name."""
    out = set()
    for allocation in extensions(budget, ALLOCATION):
        code = code_in(sub_value(allocation, "fundingSource"), FUNDING_SOURCE_SYSTEM)
        if code:
            out.add(code)
    return out


@dataclass(frozen=True, slots=True)
class Agreement:
    """One sign-off recorded on the plan: who (a reference), in what role, when, how, and
    whether (and when) it was withdrawn."""

    party: str | None
    role: str | None
    date: str | None
    method: str | None = None
    withdrawn: str | None = None
    reason: str | None = None

    @property
    def live(self) -> bool:
        return self.withdrawn is None


def agreements(plan: dict[str, Any]) -> list[Agreement]:
    out = []
    for ext in extensions(plan, AGREEMENT):
        party = sub_value(ext, "agreedBy")
        out.append(Agreement(
            party=party.get("reference") if isinstance(party, dict) else None,
            role=code_in(sub_value(ext, "role"), AGREEMENT_ROLE_SYSTEM),
            date=sub_value(ext, "date"),
            method=code_in(sub_value(ext, "method"), CS + "ipc-agreement-method"),
            withdrawn=sub_value(ext, "withdrawn"),
            reason=sub_value(ext, "withdrawalReason")))
    return out


def with_extension(resource: dict[str, Any], url: str, value_key: str | None, new: Any) -> dict[str, Any]:
    """A copy of `resource` whose single `url` extension has `value_key: new` (in the place the
    old one had, else at the end); removed when `new` is None."""
    out = copy.deepcopy(resource)
    found = False
    kept = []
    for ext in out.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == url:
            if new is not None and not found:
                kept.append({"url": url, value_key: new})
            found = True
        else:
            kept.append(ext)
    if new is not None and not found:
        kept.append({"url": url, value_key: new})
    if kept:
        out["extension"] = kept
    else:
        out.pop("extension", None)
    return out


def with_stage(plan: dict[str, Any], code: str) -> dict[str, Any]:
    return with_extension(plan, STAGE, "valueCodeableConcept", concept(STAGE_SYSTEM, code, STAGE_NAMES[code]))
