"""The SubscriptionTopics the hub publishes, and whether a change to the record is an event of
one. Pure: a topic looks at the change event (type, method, record part), the version written
and, where a transition matters (admitted, discharged, merged), the version before it. The
time-based topics (a deadline passing: `handover-overdue`, `review-due`, `review-overdue`) are no
write's events; hub.subscriptions.deadlines raises them.

R4 has no SubscriptionTopic resource; the Subscriptions R5 Backport names topics by canonical URL
(`Subscription.criteria`) and the server lists the ones it supports in its CapabilityStatement
(`capabilitystatement-subscriptiontopic-canonical`). Each topic also says which filters a
subscriber may add (`backport-filter-criteria`, `Type?name=value`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.consent.parts import BUDGET, PLAN
from hub.fhir.identifiers import CANONICAL_BASE

TOPIC_BASE = f"{CANONICAL_BASE}/SubscriptionTopic/"
_TRANSITION = f"{CANONICAL_BASE}/CodeSystem/ipc-transition"
_AGREEMENT = f"{CANONICAL_BASE}/StructureDefinition/plan-agreement"


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as a topic sees it."""

    res_type: str
    res_id: str
    method: str  # POST, PUT or DELETE (the outbox's words)
    part: str | None
    resource: dict[str, Any] | None  # the version written; None for a delete
    previous: dict[str, Any] | None  # the version before it, where there was one


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    title: str
    resource_type: str  # the focus of each notification
    description: str
    matches: Callable[[Change], bool]
    # Filter parameters a subscriber may add, with how each reads a value from the focus.
    filters: tuple[str, ...] = ("patient",)

    @property
    def url(self) -> str:
        return TOPIC_BASE + self.name


def _written(change: Change) -> bool:
    return change.method in ("POST", "PUT") and change.resource is not None


def _plan(change: Change) -> bool:
    return change.res_type == "CarePlan" and change.part == PLAN and _written(change)


def _is_agreed(resource: dict[str, Any] | None) -> bool:
    return resource is not None and resource.get("status") == "active" and any(
        e.get("url") == _AGREEMENT for e in resource.get("extension") or [])


def _agreed(change: Change) -> bool:
    return _plan(change) and _is_agreed(change.resource) and not _is_agreed(change.previous)


def _budget(change: Change) -> bool:
    return change.res_type == "CarePlan" and change.part == BUDGET and _written(change)


def _encounter_status(resource: dict[str, Any] | None) -> str | None:
    return None if resource is None else resource.get("status")


def _admitted(change: Change) -> bool:
    return (change.res_type == "Encounter" and _written(change)
            and _encounter_status(change.resource) == "in-progress"
            and _encounter_status(change.previous) != "in-progress")


def _discharged(change: Change) -> bool:
    return (change.res_type == "Encounter" and _written(change)
            and _encounter_status(change.resource) == "finished"
            and _encounter_status(change.previous) != "finished")


def _locations(resource: dict[str, Any] | None) -> list[Any]:
    return [] if resource is None else [(entry.get("location") or {}) for entry in resource.get("location") or []]


def _transferred(change: Change) -> bool:
    return (change.res_type == "Encounter" and _written(change) and change.previous is not None
            and _encounter_status(change.resource) == "in-progress"
            and _encounter_status(change.previous) == "in-progress"
            and _locations(change.resource) != _locations(change.previous))


def _is_handover(resource: dict[str, Any] | None) -> bool:
    return resource is not None and any(
        c.get("system") == _TRANSITION and c.get("code") == "gp-registration-handover"
        for c in (resource.get("code") or {}).get("coding") or [])


def _handover_received(change: Change) -> bool:
    return change.res_type == "Task" and _written(change) and _is_handover(change.resource) and (
        change.previous is None or not _is_handover(change.previous))


def _never(change: Change) -> bool:
    """A time-based topic: no write is one of its events (hub.subscriptions.deadlines raises them)."""
    return False


def _retired(resource: dict[str, Any] | None) -> bool:
    return resource is not None and any(link.get("type") == "replaced-by" for link in resource.get("link") or [])


def _merged(change: Change) -> bool:
    return change.res_type == "Patient" and _written(change) and _retired(change.resource) \
        and not _retired(change.previous)


TOPICS: tuple[Topic, ...] = (
    Topic("plan-changed", "Care and support plan created or changed", "CarePlan",
          "A person's personalised care and support plan was created or changed (any new version).", _plan),
    Topic("plan-agreed", "Care and support plan agreed", "CarePlan",
          "A person's plan became active with its agreement recorded (plan-agreement), having not been "
          "before.", _agreed),
    Topic("budget-statement-changed", "Budget statement created or changed", "CarePlan",
          "A person's personal budget statement was created or changed.", _budget),
    Topic("encounter-admission", "Admission", "Encounter",
          "An Encounter began (status in-progress), e.g. from an HL7 v2 A01 admission.", _admitted,
          ("patient", "class")),
    Topic("encounter-discharge", "Discharge", "Encounter",
          "An Encounter ended (status finished), e.g. from an HL7 v2 A03 discharge.", _discharged,
          ("patient", "class")),
    Topic("encounter-transfer", "Transfer", "Encounter",
          "An Encounter in progress moved location, e.g. from an HL7 v2 A02 transfer.", _transferred,
          ("patient", "class")),
    Topic("mod-handover-received", "MOD handover received", "Task",
          "A service leaver's GP registration handover arrived from the Ministry of Defence; filter by "
          "`owner` (the receiving practice, `Organization/<id>`, or `owner:identifier=<system>|<ODS code>`) "
          "to hear of your own.", _handover_received,
          ("patient", "owner", "owner:identifier")),
    Topic("patient-merged", "Person merged", "Patient",
          "Two records of one person were merged (HL7 v2 A40): the focus is the retired Patient, "
          "`replaced-by` the survivor.", _merged),
    Topic("handover-overdue", "MOD handover overdue", "Task",
          "A service leaver's GP registration handover is still open when its due date "
          "(Task.restriction.period.end) has passed (raised once, at midnight UK time after the due date); "
          "filter by `owner` or `owner:identifier` as for mod-handover-received.", _never,
          ("patient", "owner", "owner:identifier")),
    Topic("review-due", "Plan review due", "CarePlan",
          "An agreed care and support plan's next review date has arrived (raised once, at midnight UK time "
          "on that date).", _never),
    Topic("review-overdue", "Plan review overdue", "CarePlan",
          "An agreed care and support plan's next review date has passed and no review has moved it (raised "
          "once, at midnight UK time after that date).", _never),
)

BY_URL = {topic.url: topic for topic in TOPICS}


def _refs(value: Any) -> list[str]:
    if isinstance(value, list):
        return [r for item in value for r in _refs(item)]
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return [value["reference"]]
    return []


def _patient_refs(topic: Topic, resource: dict[str, Any], res_id: str) -> list[str]:
    if topic.resource_type == "Patient":
        return [f"Patient/{res_id}"]
    return _refs(resource.get("subject")) + _refs(resource.get("patient")) + _refs(resource.get("for"))


def _filter_values(topic: Topic, name: str, resource: dict[str, Any], res_id: str) -> list[str]:
    if name == "patient":
        return _patient_refs(topic, resource, res_id)
    if name == "owner":
        return _refs(resource.get("owner")) + _refs((resource.get("restriction") or {}).get("recipient"))
    if name == "class":
        cls = resource.get("class") or {}
        return [cls.get("code", ""), f"{cls.get('system', '')}|{cls.get('code', '')}"]
    return []


def references(topic: Topic, name: str, resource: dict[str, Any] | None, res_id: str) -> list[str]:
    """The references a reference filter (`owner`, `patient`) reads from the focus."""
    return [] if resource is None else [v for v in _filter_values(topic, name, resource, res_id) if "/" in v]


def identifier_tokens(resource: dict[str, Any]) -> list[str]:
    """`system|value` and `value` for each identifier: what `name:identifier=` may match."""
    tokens = []
    for ident in resource.get("identifier") or []:
        if ident.get("value"):
            tokens += [ident["value"], f"{ident.get('system', '')}|{ident['value']}"]
    return tokens


def passes(topic: Topic, filters: list[tuple[str, str]], resource: dict[str, Any] | None, res_id: str,
           identifiers: dict[str, list[str]] | None = None) -> bool:
    """Whether the focus passes every filter (each a parameter and a comma-separated list of
    values, any of which may match, as in a search). `name:identifier` matches the identifiers
    of the resources the reference names (`identifiers`: reference → its identifier tokens, read
    by the caller), e.g. `owner:identifier=https://fhir.nhs.uk/Id/ods-organization-code|C84001`."""
    if not filters:
        return True
    if resource is None:
        return False
    for name, value in filters:
        if name.endswith(":identifier"):
            refs = references(topic, name.removesuffix(":identifier"), resource, res_id)
            have = {t for ref in refs for t in (identifiers or {}).get(ref, [])}
        else:
            have = set(_filter_values(topic, name, resource, res_id))
        if not have.intersection(v.strip() for v in value.split(",")):
            return False
    return True
