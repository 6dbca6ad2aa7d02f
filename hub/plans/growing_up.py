"""Growing up: the moments a child's or young person's plan must act on as they get older, and
the adult plan that takes over from the child's at 18.

Each moment is a `Step`: the Task it raises, the day it may first be raised (`opens`) and the day
it is due, both from the person's birth date (hub.fhir.ages). The plan worker's scheduler
(hub.pipeline.planlife) raises every step whose day has come, for every child with an EHC plan,
every child in children's continuing care and the young carers, and claims each (person, step) in `child_transition_raised` in the
transaction that writes it, so each is raised exactly once however many schedulers run and
however often (a Task a worker has since completed is never raised again).

- preparing for adulthood: from the start of year 9 (the school year a child turns 14), due at
  its end (SEND Code of Practice 8.9: from year 9 the EHC plan's reviews cover it);
- the young person takes over decisions: at `HUB_PROXY_PASSES_AT_AGE` (16 unless set: from 16
  the Mental Capacity Act applies, and at the end of compulsory schooling the rights under the
  Children and Families Act pass to the young person); proxy access itself is hub.consent's;
- continuing care to NHS Continuing Healthcare: only for a child or young person in children's
  continuing care (complex health needs: an active `ipc-flag|childrens-continuing-care` Flag in
  their record, from the council's extract or written through the API by the ICB), whether or not
  they have an EHC plan: from 14 they are identified, screened from 16, and the adult decision is
  due before 18 (National Framework for Children and Young People's Continuing Care; National
  Framework for NHS Continuing Healthcare, transition). Children without that need are not
  asked: most children with an EHC plan have no complex health need;
- transfer to adult services: from 17, due on the 18th birthday (Care Act 2014 s58–66);
- a young carer's reassessment as an adult carer: from 17, due on the 18th birthday (Care Act
  2014 s63–64, young carers' needs assessments);
- the adult plan (`adult_plan`): on the 18th birthday, a draft adult care and support plan that
  `replaces` the child's and carries its goals forward; the child's plan closes when the adult
  plan is agreed (hub.plans.followups.superseded)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from hub.fhir.ages import birthday, start_of_year_9
from hub.fhir.ids import derived_id
from hub.plans.ehc import CHILDREN_TASK_SYSTEM, EHC_TASK_PROFILE
from hub.plans.model import (
    COORDINATOR,
    CS,
    PLAN_CATEGORY_SYSTEM,
    PROGRAMME_SYSTEM,
    SD,
    STAGE,
    STAGE_SYSTEM,
    concept,
)

CHILD = "child"            # a child or young person with an EHC plan
CONTINUING_CARE = "continuing-care"   # a child or young person in children's continuing care
YOUNG_CARER = "young-carer"
CONTINUING_CARE_FLAG = "childrens-continuing-care"   # its code in CS + "ipc-flag"
ADULT_PLAN = "adult-plan"  # the step that writes the adult plan rather than a Task
LINKED_PLAN = SD + "linked-plan"
FORMAL_PLAN_SYSTEM = CS + "ipc-formal-plan-type"


def proxy_passes_at() -> int:
    """HUB_PROXY_PASSES_AT_AGE (the age a parent's say passes to the young person; 16 unset)."""
    text = os.environ.get("HUB_PROXY_PASSES_AT_AGE", "").strip()
    return int(text) if text.isdigit() and 10 <= int(text) <= 25 else 16


@dataclass(frozen=True)
class Step:
    code: str
    display: str
    who: str                                   # CHILD, CONTINUING_CARE or YOUNG_CARER
    opens: Callable[[date], date]
    due: Callable[[date], date]
    description: str


def _at(age: int) -> Callable[[date], date]:
    return lambda born: birthday(born, age)


def _end_of_year_9(born: date) -> date:
    start = start_of_year_9(born)
    return date(start.year + 1, 8, 31)


def _proxy_age(born: date) -> date:
    return birthday(born, proxy_passes_at())


STEPS: tuple[Step, ...] = (
    Step("preparing-for-adulthood", "Preparing for adulthood", CHILD, start_of_year_9, _end_of_year_9,
         "From year 9 the EHC plan's review covers preparing for adulthood: employment, independent living, "
         "friends and community, good health"),
    Step("decisions-pass", "Young person takes over decisions", CHILD, _proxy_age, _proxy_age,
         "The young person now makes their own decisions about their plan and record: ask them who, if anyone, "
         "may act for them"),
    Step("continuing-care-check", "Continuing care to NHS Continuing Healthcare check", CONTINUING_CARE, _at(14),
         _at(18), "In children's continuing care: identify now for adult NHS Continuing Healthcare, screen from 16 and "
         "refer so that the adult decision is made before the 18th birthday"),
    Step("adult-transfer", "Transfer to adult services", CHILD, _at(17), _at(18),
         "Plan the move from children's to adult services: adult social care and health, and the adult care and "
         "support plan that takes over from the child's at 18"),
    Step("young-carer-reassessment", "Young carer reassessed as an adult carer", YOUNG_CARER, _at(17), _at(18),
         "Reassess the young carer's own needs as an adult carer before they turn 18"),
)


def due_steps(born: date, day: date, who: str) -> list[Step]:
    """The steps of a person of this kind whose day has come on `day`, up to their 25th birthday
    (nothing is raised for anyone older)."""
    if day >= birthday(born, 25):
        return []
    return [s for s in STEPS if s.who == who and s.opens(born) <= day]


def adult_plan_due(born: date, day: date) -> bool:
    return birthday(born, 18) <= day < birthday(born, 25)


def transition_task(step: Step, person: str, born: date, raised: str, *, focus: str | None = None,
                    owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Task a step raises, for the person, about their plan when they have one."""
    task: dict[str, Any] = {
        "resourceType": "Task", "id": derived_id("growing-up", person, step.code),
        "meta": {"profile": [EHC_TASK_PROFILE]},
        "status": "requested", "intent": "order", "priority": "routine",
        "code": concept(CHILDREN_TASK_SYSTEM, step.code, step.display),
        "description": step.description,
        "for": {"reference": person},
        "authoredOn": raised,
        "restriction": {"period": {"start": step.opens(born).isoformat(), "end": step.due(born).isoformat()}},
    }
    if focus:
        task["focus"] = {"reference": focus}
        task["basedOn"] = [{"reference": focus}]
    if owner:
        task["owner"] = owner
    return task


def adult_plan(child_plan: dict[str, Any], child_plan_id: str, born: date,
               ehc_plan_id: str | None) -> dict[str, Any]:
    """The draft adult care and support plan that replaces the child's from the 18th birthday: the
    same person, coordinator and goals (carried forward, not copied: the same Goal resources go on
    being worked on), the IPC adult programme, linked to the EHC plan while it runs."""
    start = birthday(born, 18).isoformat()
    plan: dict[str, Any] = {
        "resourceType": "CarePlan", "id": derived_id("adult-plan", child_plan_id),
        "meta": {"profile": [SD + "ipc-care-plan"]},
        "extension": [{"url": STAGE, "valueCodeableConcept": concept(STAGE_SYSTEM, "preparation", "Preparation")}],
        "status": "draft", "intent": "plan",
        "category": [concept(PLAN_CATEGORY_SYSTEM, "care-support-plan", "Personalised care and support plan"),
                     concept(PROGRAMME_SYSTEM, "ipc-adult", "IPC for adults")],
        "title": "Adult care and support plan",
        "description": "The adult care and support plan that takes over from the child's plan at 18, carrying its "
                       "goals forward.",
        "subject": child_plan["subject"],
        "period": {"start": start},
        "replaces": [{"reference": f"CarePlan/{child_plan_id}"}],
    }
    coordinator = next((e for e in child_plan.get("extension") or () if e.get("url") == COORDINATOR), None)
    if coordinator:
        plan["extension"].append(coordinator)
    if ehc_plan_id:
        plan["extension"].append({"url": LINKED_PLAN, "extension": [
            {"url": "type", "valueCodeableConcept": concept(FORMAL_PLAN_SYSTEM, "ehc-plan",
                                                             "Education, Health and Care plan")},
            {"url": "plan", "valueReference": {"reference": f"CarePlan/{ehc_plan_id}"}}]})
    if child_plan.get("goal"):
        plan["goal"] = [dict(g) for g in child_plan["goal"]]
    return plan

