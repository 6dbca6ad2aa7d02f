"""Which person's record a resource belongs to, and which part of it.

Consent is given per record part (the `ipc-record-part` codes), so every resource in a patient's
compartment is placed in exactly one part when it is written and the store keeps that place
beside it; access is then a join, never a second look at the content. These are pure functions
of the resource (and its already-extracted reference index rows), so every write path (REST,
transactions, the recorder's batches) places a resource the same way.

Order of decision, most specific first: safeguarding and mental health wherever they appear in
a category or code (the most sensitive parts win over the type's usual part), then Armed Forces
Service details, then profile, category, a request made for a care plan, and type. A writer's
`meta.tag` from the record-part system may then move the resource only into a more protected
part (`safeguarding` above `mental-health` above the rest): a tag that would put it somewhere
less protected than its content, or another part of equal standing, is refused (422), so no
writer can file a Condition as `demographics` to read it back, and no record-sharing Consent
can be filed outside `consent`."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from hub.fhir.errors import FhirError

PART_SYSTEM = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-record-part"
_IPC = "https://ipc-hub.example.org/fhir/"
PLAN_CATEGORY_SYSTEM = _IPC + "CodeSystem/ipc-plan-category"
FLAG_SYSTEM = _IPC + "CodeSystem/ipc-flag"
FLAG_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-category"
ARMED_FORCES_EXTENSION = _IPC + "StructureDefinition/Extension-armed-forces-service"

DEMOGRAPHICS = "demographics"
PLAN = "care-support-plan"
BUDGET = "budget"
CARERS = "carers"
HEALTH = "health"
ARMED_FORCES = "armed-forces-service"
CARE_TEAM = "care-team"
SOCIAL_CARE = "social-care"
MENTAL_HEALTH = "mental-health"
SAFEGUARDING = "safeguarding"
CONSENT = "consent"

# Every part, in the CodeSystem's order: "*" in configuration means all of these.
PARTS = (DEMOGRAPHICS, PLAN, BUDGET, CARERS, HEALTH, ARMED_FORCES, CARE_TEAM, SOCIAL_CARE,
         MENTAL_HEALTH, SAFEGUARDING, CONSENT)

_BY_PROFILE = {
    _IPC + "StructureDefinition/ipc-budget-statement": BUDGET,
    _IPC + "StructureDefinition/ipc-care-plan": PLAN,
    _IPC + "StructureDefinition/ipc-goal": PLAN,
    _IPC + "StructureDefinition/ipc-carer": CARERS,
    _IPC + "StructureDefinition/ipc-care-team": CARE_TEAM,
    _IPC + "StructureDefinition/ipc-consent": CONSENT,
    _IPC + "StructureDefinition/ipc-patient": DEMOGRAPHICS,
    _IPC + "StructureDefinition/ipc-service-condition": ARMED_FORCES,
    # What is recorded against the plan (issue 13): its meetings and messages, outcome measures,
    # the risks the person chooses to take, the Tasks about it — seen by whoever sees the plan.
    **{_IPC + f"StructureDefinition/{name}": PLAN for name in (
        "ipc-plan-meeting", "ipc-plan-communication", "ipc-outcome-response", "ipc-outcome-observation",
        "ipc-positive-risk", "ipc-review-task", "ipc-review-request", "ipc-sign-off-task", "ipc-plan-action",
        # Children and young people (issue 17): the EHC plan, its Tasks, the young person's views.
        "ipc-ehc-plan", "ipc-ehc-task", "ipc-young-person-views")},
}
_BY_PLAN_CATEGORY = {"budget-statement": BUDGET, "care-support-plan": PLAN, "ehc-plan": PLAN, "care-team": CARE_TEAM,
                     "record-sharing": CONSENT, "proxy-delegation": CONSENT}
_BY_FLAG = {"armed-forces-veteran": ARMED_FORCES, "service-leaver": ARMED_FORCES,
            "has-carer": CARERS, "is-carer": CARERS,
            "childrens-continuing-care": HEALTH}   # a complex health need: health, not everyone's alert
_BY_TYPE = {
    "Patient": DEMOGRAPHICS,
    "RelatedPerson": CARERS,
    "CareTeam": CARE_TEAM,
    "Goal": PLAN,
    "Flag": DEMOGRAPHICS,  # alerts everyone involved should see, unless their codes say more
    "Coverage": BUDGET, "Claim": BUDGET, "ClaimResponse": BUDGET, "ExplanationOfBenefit": BUDGET,
    "Invoice": BUDGET, "ChargeItem": BUDGET, "Account": BUDGET, "PaymentNotice": BUDGET,
    "PaymentReconciliation": BUDGET,
}
# Requests that, made `basedOn` a CarePlan, are the plan's actions (after the sensitive parts:
# a mental health referral stays in mental health whatever plan it serves).
_PLAN_ACTIONS = frozenset({"ServiceRequest", "Task", "Appointment", "CommunicationRequest", "NutritionOrder"})
# Words that mark a category or code as one of the sensitive parts, matched in codes and
# displays (lower case, '-' and '_' read as spaces). Flag categories are coded exactly.
_SENSITIVE_WORDS = ((SAFEGUARDING, ("safeguarding", "child protection", "adult protection")),
                    (MENTAL_HEALTH, ("mental health", "mental disorder", "psychiatric")),
                    (SOCIAL_CARE, ("social care", "social work")))
_SENSITIVE_FLAG_CATEGORIES = {"safety": SAFEGUARDING, "behavioral": MENTAL_HEALTH}


# How protected a part is, for a tag's sake (every part not listed: 1).
PROTECTION = {SAFEGUARDING: 3, MENTAL_HEALTH: 2}


def outside_part(resource: dict[str, Any]) -> str | None:
    """The part a resource outside every person's record is held in: the part its `meta.tag`
    names, or None (visible to any client with the type's scope, as before). Data about many
    people at once that no single record holds — a cohort's member Group, which says who has
    which conditions — is tagged so, and only clients whose class sees that part by default see
    it (hub/search/access.py)."""
    return tagged_part(resource)


def record_part(resource: dict[str, Any]) -> str:
    """The one record part a resource in a patient's compartment belongs to: where its content
    places it, or a more protected part its record-part tag names (FhirError 422 for a tag that
    names a less protected one)."""
    placed = content_part(resource)
    tagged = tagged_part(resource)
    if tagged is None or tagged == placed:
        return placed
    if placed != CONSENT and PROTECTION.get(tagged, 1) > PROTECTION.get(placed, 1):
        return tagged
    raise FhirError("business-rule", f"meta.tag record part '{tagged}' is not allowed: the hub places this "
                    f"{resource.get('resourceType', 'resource')} in '{placed}', and a tag may only move it to a "
                    "more protected part", expression=f"{resource.get('resourceType', 'Resource')}.meta.tag",
                    status=422)


def type_default(res_type: str) -> str:
    """The part a resource of this type sits in when nothing in it says more."""
    return _BY_TYPE.get(res_type, HEALTH)


def content_part(resource: dict[str, Any]) -> str:
    """Where the hub places a resource from its content alone (tags aside)."""
    res_type = resource.get("resourceType", "")
    sensitive = _sensitive_part(resource)
    if sensitive:
        return sensitive
    if any(e.get("url") == ARMED_FORCES_EXTENSION for e in resource.get("extension") or ()
           if isinstance(e, dict)) and res_type != "Patient":
        return ARMED_FORCES
    if res_type == "Flag":
        for code in _codes([resource.get("code"), *_category(resource)], FLAG_SYSTEM):
            if code in _BY_FLAG:
                return _BY_FLAG[code]
    for code in _codes(_category(resource), PLAN_CATEGORY_SYSTEM):
        if code in _BY_PLAN_CATEGORY:
            return _BY_PLAN_CATEGORY[code]
    if _about_a_plan(resource):
        return PLAN
    for profile in (resource.get("meta") or {}).get("profile") or ():
        if isinstance(profile, str) and profile.split("|")[0] in _BY_PROFILE:
            return _BY_PROFILE[profile.split("|")[0]]
    if res_type == "Consent":
        return HEALTH  # a treatment consent is part of the care record; only IPC ones are `consent`
    if res_type in _PLAN_ACTIONS and _about_money(resource):
        return BUDGET
    if res_type in _PLAN_ACTIONS and _based_on_a_plan(resource):
        return PLAN
    return _BY_TYPE.get(res_type, HEALTH)


def _about_a_plan(resource: dict[str, Any]) -> bool:
    """A meeting, message or flag about the plan (the guide's `care-plan` extension: a review
    meeting, a withdrawn agreement) is part of the plan's story and sits with the plan."""
    return any(isinstance(e, dict) and e.get("url") == _IPC + "StructureDefinition/care-plan"
               for e in resource.get("extension") or ())


def _about_money(resource: dict[str, Any]) -> bool:
    """A request about a budget account or a spend line (spend running ahead of plan) holds
    budget figures, so it sits with the budget, whatever plan it is based on."""
    focus = resource.get("focus")
    return isinstance(focus, dict) and str(focus.get("reference", "")).startswith(("Account/", "ChargeItem/"))


def _based_on_a_plan(resource: dict[str, Any]) -> bool:
    """A request made to carry out a care plan (a charity's offer of support, a council's service
    request) is an action of that plan, and whoever may see the plan sees what is done for it."""
    return any(isinstance(ref, dict) and str(ref.get("reference", "")).startswith("CarePlan/")
               for ref in resource.get("basedOn") or ())


def tagged_part(resource: dict[str, Any]) -> str | None:
    """The record part a `meta.tag` names, if any."""
    for tag in (resource.get("meta") or {}).get("tag") or ():
        if isinstance(tag, dict) and tag.get("system") == PART_SYSTEM and tag.get("code") in PARTS:
            return tag["code"]
    return None


def _sensitive_part(resource: dict[str, Any]) -> str | None:
    concepts = _category(resource) + [resource.get("code")]
    if resource.get("resourceType") == "EpisodeOfCare":   # its kind is its type (a child protection plan, ...)
        concepts += list(resource.get("type") or [])
    if resource.get("resourceType") == "Flag":
        for code in _codes(_category(resource), FLAG_CATEGORY_SYSTEM):
            if code in _SENSITIVE_FLAG_CATEGORIES:
                return _SENSITIVE_FLAG_CATEGORIES[code]
    words = " ".join(_words(concepts))
    for part, markers in _SENSITIVE_WORDS:
        if any(marker in words for marker in markers):
            return part
    return None


def _category(resource: dict[str, Any]) -> list[Any]:
    category = resource.get("category")
    if isinstance(category, dict):
        return [category]
    return list(category) if isinstance(category, list) else []


def _codings(concepts: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for concept in concepts:
        if isinstance(concept, dict):
            for coding in concept.get("coding") or ():
                if isinstance(coding, dict):
                    yield coding


def _codes(concepts: Iterable[Any], system: str) -> list[str]:
    return [c["code"] for c in _codings(concepts) if c.get("system") == system and isinstance(c.get("code"), str)]


def _words(concepts: list[Any]) -> Iterator[str]:
    for concept in concepts:
        if isinstance(concept, dict) and isinstance(concept.get("text"), str):
            yield concept["text"].lower()
    for coding in _codings(concepts):
        for key in ("code", "display"):
            if isinstance(coding.get(key), str):
                yield coding[key].lower().replace("-", " ").replace("_", " ")
