"""The Education, Health and Care (EHC) plan's own rules: it ends no later than the day before
the young person's 25th birthday, and its annual review is due a year after the plan was
issued or last reviewed (Children and Families Act 2014 s44; SEND Regulations 2014 reg 2).

The store applies `check_ends_by_25` to every write of an EHC plan beside the other plan rules;
the plan worker raises each annual review Task on the plan's next review date (set a year after
it was issued or last reviewed) with the review machinery (hub.plans.reviews: due within the
lead time, claimed once per plan and due date)."""
from __future__ import annotations

from datetime import date
from typing import Any

from hub.fhir.ages import day_before_birthday, parse_birth_date
from hub.fhir.errors import FhirError
from hub.fhir.ids import derived_id
from hub.plans.model import CS, PLAN_CATEGORY_SYSTEM, SD, concept, subject
from hub.plans.reviews import as_day

EHC = "ehc-plan"
CHILDREN_TASK_SYSTEM = CS + "ipc-children-task"
EHC_TASK_PROFILE = SD + "ipc-ehc-task"


def is_ehc_plan(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "CarePlan" and any(
        c.get("system") == PLAN_CATEGORY_SYSTEM and c.get("code") == EHC
        for cc in resource.get("category") or () for c in cc.get("coding") or ())


def last_day(born: date) -> date:
    """The last day an EHC plan may run: the day before the 25th birthday."""
    return day_before_birthday(born, 25)


def check_ends_by_25(plan: dict[str, Any], birth_date: str | None) -> None:
    """FhirError (422 business-rule) for an EHC plan with no end, or one running past the day
    before its subject's 25th birthday. Without a full birth date only the end's presence is
    judged (the profile's `ehc-1` requires it)."""
    end = as_day((plan.get("period") or {}).get("end"))
    if end is None:
        raise FhirError("business-rule", "An EHC plan ends no later than the day before the young person's 25th "
                        "birthday: period.end is required", expression="CarePlan.period.end")
    born = parse_birth_date(birth_date)
    if born is not None and end > last_day(born):
        raise FhirError("business-rule", f"An EHC plan ends no later than the day before the young person's 25th "
                        f"birthday ({last_day(born).isoformat()}); this one ends {end.isoformat()}",
                        expression="CarePlan.period.end")


def annual_review_task(plan: dict[str, Any], plan_id: str, due: str, raised: str) -> dict[str, Any]:
    """The EHC annual review Task: the council's (the plan's author), due on the review date."""
    task: dict[str, Any] = {
        "resourceType": "Task", "id": derived_id("ehc-annual-review", plan_id, due),
        "meta": {"profile": [EHC_TASK_PROFILE]},
        "status": "requested", "intent": "order", "priority": "routine",
        "code": concept(CHILDREN_TASK_SYSTEM, "ehc-annual-review", "EHC plan annual review"),
        "description": f"Review the EHC plan with the child or young person and their family (due {due}; "
                       "from year 9 the review covers preparing for adulthood)",
        "basedOn": [{"reference": f"CarePlan/{plan_id}"}],
        "focus": {"reference": f"CarePlan/{plan_id}"},
        "for": {"reference": subject(plan)},
        "authoredOn": raised,
        "restriction": {"period": {"end": due}},
    }
    if plan.get("author"):
        task["owner"] = plan["author"]
    return task
