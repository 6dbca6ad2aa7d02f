"""An EHC needs assessment request and the plan it led to (one SEN2-shaped row) → its timeline as
Tasks, and once issued the EHC plan, the special educational need it addresses and the child's
IPC plan part that links to it.

The timeline is the statutory one (SEND Regulations 2014): the decision whether to assess within
6 weeks of the request (reg 5), advice within 6 weeks of being asked (reg 8: by week 12), the draft
with 15 days for comment before the final (by week 16), the final plan within 20 weeks (reg 13).
Each step is a Task due that many weeks after the request: completed with the day the council
did it, or still requested — and then overdue once its due date has passed
(`Task?code=…|ehc-final&status=requested&due-date=lt[today]`). A step the council skipped (a
later one is done) is completed without a date. After a decision not to assess, no later step
is raised and the request's Tasks are complete.

The plan ends no later than the day before the 25th birthday (the store refuses any other);
its next review is a year after it was issued or last reviewed, which the plan worker raises."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from hub.fhir.ages import birthday, day_before_birthday
from hub.fhir.builders import concept, transaction
from hub.fhir.builders import put_entry as entry
from hub.fhir.councils import council, patient_id
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.ids import source_id
from hub.fhir.rows import read_rows
from mappings.children.rows import EHC_COLUMNS

SD = f"{CANONICAL_BASE}/StructureDefinition"
CS = f"{CANONICAL_BASE}/CodeSystem"
TASKS = f"{CS}/ipc-children-task"
SECTION = f"{CS}/ipc-ehc-section"
SEN_NEED = f"{CS}/ipc-sen-need"
PLAN_CATEGORY = f"{CS}/ipc-plan-category"
STAGE = f"{CS}/ipc-stage"
EHC_PLAN_ID = f"{CANONICAL_BASE}/Id/ehc-plan"
# (step, weeks after the request it is due, display, the extract's column with the day it was done)
STEPS = (
    ("ehc-request", 0, "EHC needs assessment requested", "Request_Received_Date"),
    ("ehc-decision", 6, "Decision whether to assess", "Decision_Date"),
    ("ehc-advice", 12, "Advice gathered", "Advice_Date"),
    ("ehc-draft", 16, "Draft EHC plan sent", "Draft_Plan_Date"),
    ("ehc-final", 20, "Final EHC plan issued", "Final_Plan_Date"),
)
SEN_TYPES = {"SPLD": "Specific learning difficulty", "MLD": "Moderate learning difficulty",
             "SLD": "Severe learning difficulty", "PMLD": "Profound and multiple learning difficulty",
             "SEMH": "Social, emotional and mental health", "SLCN": "Speech, language and communication needs",
             "HI": "Hearing impairment", "VI": "Vision impairment", "MSI": "Multi-sensory impairment",
             "PD": "Physical disability", "ASD": "Autistic spectrum disorder", "OTH": "Other difficulty or disability",
             "NSA": "SEN support but no specialist assessment"}


def map_ehc(payload: bytes, source: str) -> dict[str, Any]:
    row = read_rows(payload, EHC_COLUMNS, "children's extract")[0]
    child = f"Patient/{patient_id(source, row['Child_Id'])}"
    entries = [entry(t) for t in timeline(source, row, child)]
    if row["Assessment_Outcome"] == "Plan issued":
        need = sen_need(source, row, child)
        plan = ehc_plan(source, row, child, need["id"])
        entries += [entry(need), entry(plan), entry(ipc_plan_part(source, row, child, plan["id"]))]
    return transaction(entries)


def _weeks_after(day: str, weeks: int) -> str:
    return (date.fromisoformat(day) + timedelta(weeks=weeks)).isoformat()


def timeline(source: str, row: dict[str, str], child: str) -> list[dict[str, Any]]:
    received = row["Request_Received_Date"]
    not_assessed = row["Decision"] == "Not assess"
    last_done = max((i for i, step in enumerate(STEPS) if row[step[3]]), default=0)
    tasks = []
    for index, (code, weeks, display, column) in enumerate(STEPS):
        if not_assessed and index > 1:
            break
        task: dict[str, Any] = {
            "resourceType": "Task", "id": source_id(source, "Task", f"ehc:{row['Request_Id']}:{code}"),
            "meta": {"profile": [f"{SD}/ipc-ehc-task"]},
            "identifier": [{"system": f"{CANONICAL_BASE}/Id/ehc-request", "value": row["Request_Id"]}],
            "groupIdentifier": {"system": f"{CANONICAL_BASE}/Id/ehc-request", "value": row["Request_Id"]},
            "status": "requested", "intent": "order", "priority": "routine",
            "code": concept(TASKS, code, display),
            "description": f"{display}: due {weeks} weeks after the request received on {received}"
                           + (" (SEND Regulations 2014)" if weeks else ""),
            "for": {"reference": child},
            "authoredOn": received,
            "owner": council(row["LA_Code"]),
            "restriction": {"period": {"start": received, "end": _weeks_after(received, weeks)}},
        }
        if row[column]:
            task["status"] = "completed"
            task["executionPeriod"] = {"end": row[column]}
        elif index < last_done:
            task["status"] = "completed"
            task["statusReason"] = {"text": "a later step of the assessment is done"}
        if code == "ehc-decision" and row["Decision"]:
            task["output"] = [{"type": {"text": "decision"}, "valueString": row["Decision"]}]
        tasks.append(task)
    return tasks


def sen_need(source: str, row: dict[str, str], child: str) -> dict[str, Any]:
    """Section B: the child's primary type of special educational need."""
    return {
        "resourceType": "Condition", "id": source_id(source, "Condition", f"sen-need:{row['Child_Id']}"),
        "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
        "category": [concept(SECTION, "b-sen", "B: special educational needs")],
        "code": concept(SEN_NEED, row["SEN_Type"], SEN_TYPES[row["SEN_Type"]]),
        "subject": {"reference": child}, "recordedDate": row["Final_Plan_Date"],
        "recorder": council(row["LA_Code"]),
    }


def last_day(born: str) -> str:
    """The day before the 25th birthday: the last day an EHC plan may run."""
    return day_before_birthday(date.fromisoformat(born), 25).isoformat()


def _a_year_after(day: str) -> str:
    return birthday(date.fromisoformat(day), 1).isoformat()


def ehc_plan(source: str, row: dict[str, str], child: str, need_id: str) -> dict[str, Any]:
    """The EHC plan as the council issued it: the needs it addresses, the placement, its end (when
    it ceased, or the day before the 25th birthday) and its next annual review."""
    ceased = row["Plan_Ceased_Date"]
    end = min(ceased, last_day(row["Date_of_Birth"])) if ceased else last_day(row["Date_of_Birth"])
    plan: dict[str, Any] = {
        "resourceType": "CarePlan", "id": source_id(source, "CarePlan", f"ehc:{row['Child_Id']}"),
        "meta": {"profile": [f"{SD}/ipc-ehc-plan"]},
        "identifier": [{"system": EHC_PLAN_ID, "value": f"{row['LA_Code']}-{row['Child_Id']}"}],
        "status": "completed" if ceased else "active", "intent": "plan",
        "category": [concept(PLAN_CATEGORY, "ehc-plan", "Education, Health and Care plan")],
        "title": "Education, Health and Care plan",
        "subject": {"reference": child},
        "period": {"start": row["Final_Plan_Date"], "end": end},
        "author": council(row["LA_Code"]),
        "addresses": [{"reference": f"Condition/{need_id}"}],
    }
    if not ceased:
        plan["extension"] = [{"url": f"{SD}/next-review-date",
                              "valueDate": _a_year_after(row["Last_Review_Date"] or row["Final_Plan_Date"])}]
    if row["Last_Review_Date"]:
        plan.setdefault("extension", []).append({"url": f"{SD}/last-review", "valueDate": row["Last_Review_Date"]})
    if row["Placement_Type"] or row["Placement_URN"]:
        where = row["Placement_Type"] or "Placement"
        detail: dict[str, Any] = {"code": concept(SECTION, "i-placement", "I: placement"),
                                  "status": "completed" if ceased else "in-progress",
                                  "description": where + (f" (establishment URN {row['Placement_URN']})"
                                                          if row["Placement_URN"] else "")}
        plan["activity"] = [{"id": "placement", "detail": detail}]
    return plan


def ipc_plan_part(source: str, row: dict[str, str], child: str, ehc_id: str) -> dict[str, Any]:
    """The council's part of the child's one IPC plan: its link to the EHC plan. The recorder joins
    it to the child's open plan (or it becomes that plan, in preparation, when there is none)."""
    return {
        "resourceType": "CarePlan", "id": source_id(source, "CarePlan", f"ipc-plan:{row['Child_Id']}"),
        "meta": {"profile": [f"{SD}/ipc-care-plan"]},
        "extension": [
            {"url": f"{SD}/ipc-stage", "valueCodeableConcept": concept(STAGE, "preparation", "Preparation")},
            {"url": f"{SD}/linked-plan", "extension": [
                {"url": "type", "valueCodeableConcept": concept(f"{CS}/ipc-formal-plan-type", "ehc-plan",
                                                                      "Education, Health and Care plan")},
                {"url": "plan", "valueReference": {"reference": f"CarePlan/{ehc_id}"}}]}],
        "status": "draft", "intent": "plan",
        "category": [concept(PLAN_CATEGORY, "care-support-plan", "Personalised care and support plan"),
                     concept(f"{CS}/ipc-programme", "ipc-children", "IPC for children and young people")],
        "title": "Personalised care and support plan",
        "description": f"Begun with the request for an EHC needs assessment received on {row['Request_Received_Date']}; "
                       "linked to the child's EHC plan.",
        "subject": {"reference": child},
        "period": {"start": row["Request_Received_Date"]},
        "author": council(row["LA_Code"]),
    }
