"""The linked dataset's reviews and outcome measures, and the cohort summary built from the rows
(hub/datasets/linked.py, hub/datasets/summary.py): pure functions, checked without a database."""
from __future__ import annotations

import csv
import io
from datetime import date

from hub.datasets import linked, summary

IPC = "https://ipc-hub.example.org/fhir/"
TODAY = date(2026, 12, 3)


def _plan(next_review: str | None) -> dict:
    plan = {"resourceType": "CarePlan", "id": "p1", "status": "active", "intent": "plan",
            "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "care-support-plan"}]}],
            "period": {"start": "2026-01-10"}}
    if next_review:
        plan["extension"] = [{"url": IPC + "StructureDefinition/next-review-date", "valueDate": next_review}]
    return plan


def _review_task(due: str, status: str, meeting: str | None = None) -> dict:
    task = {"resourceType": "Task", "status": status, "intent": "order",
            "code": {"coding": [{"system": IPC + "CodeSystem/ipc-plan-task", "code": "plan-review"}]},
            "restriction": {"period": {"end": due}}}
    if meeting:
        task["output"] = [{"type": {"text": "Review meeting"}, "valueReference": {"reference": f"Encounter/{meeting}"}}]
    return task


def _meeting(mid: str, day: str, status: str = "finished") -> dict:
    return {"resourceType": "Encounter", "id": mid, "status": status,
            "type": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-contact-type", "code": "plan-review"}]}],
            "period": {"start": f"{day}T10:00:00+00:00", "end": f"{day}T11:00:00+00:00"}}


def _score(code: str, value: float, when: str, goal: str | None = None, status: str = "final") -> dict:
    observation = {"resourceType": "Observation", "status": status,
                   "code": {"coding": [{"system": IPC + "CodeSystem/ipc-outcome-measure", "code": code}]},
                   "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": "score"}}
    if goal:
        observation["focus"] = [{"reference": goal}]
    return observation


def _person(pid: str, **parts) -> linked.Person:
    return linked.Person(pid, patient={"resourceType": "Patient", "gender": "female", "birthDate": "1960-05-01"},
                         member={"period": {"start": "2026-02-01T00:00:00Z"}}, **parts)


def test_reviews_due_and_held_on_time_come_from_the_review_tasks_and_their_meetings():
    person = _person("a", plans=[_plan("2026-11-30")],
                     reviews=[_review_task("2026-05-26", "completed", "m1"),       # held 20 May: on time
                              _review_task("2026-06-30", "completed", "m2"),       # held 10 July: late
                              _review_task("2026-09-01", "requested"),             # due, not held
                              _review_task("2026-10-01", "cancelled"),             # stale: not a review due
                              _review_task("2027-01-15", "requested")],            # not due yet
                     meetings=[_meeting("m1", "2026-05-20"), _meeting("m2", "2026-07-10")])
    row = linked.row(person, b"k", TODAY)
    assert (row["reviews_due"], row["reviews_on_time"]) == ("3", "1")
    assert row["next_review_month"] == "2026-11" and row["review_overdue"] == "yes"
    # A meeting still in progress is no review held; a plan reviewed in date is not overdue.
    person = _person("b", plans=[_plan("2027-02-01")], reviews=[_review_task("2026-05-26", "completed", "m1")],
                     meetings=[_meeting("m1", "2026-05-20", status="in-progress")])
    row = linked.row(person, b"k", TODAY)
    assert (row["reviews_due"], row["reviews_on_time"], row["review_overdue"]) == ("1", "0", "no")
    assert linked.row(_person("c"), b"k", TODAY)["review_overdue"] == ""


def test_outcome_measures_first_latest_change_and_goal_attainment():
    person = _person("a", measures=[
        _score("ons4-life-satisfaction", 7, "2026-10-01T10:00:00Z"),
        _score("ons4-life-satisfaction", 4, "2026-03-01T10:00:00Z"),
        _score("ons4-life-satisfaction", 9, "2026-11-01T10:00:00Z", status="entered-in-error"),
        _score("gas-attainment", -1, "2026-03-01T10:00:00Z", goal="Goal/g1"),
        _score("gas-attainment", 1, "2026-10-01T10:00:00Z", goal="Goal/g1"),
        _score("gas-attainment", 0, "2026-10-01T10:00:00Z", goal="Goal/g2"),
        _score("ons4-anxiety", 3, "2026-10-01T10:00:00Z")])
    row = linked.row(person, b"k", TODAY)
    assert (row["wellbeing_first"], row["wellbeing_latest"], row["wellbeing_change"]) == ("4", "7", "3")
    assert row["goal_attainment"] == "0.5"   # latest per goal: +1 and 0
    assert row["outcome_measures"] == "6"     # the entered-in-error one is not counted
    once = linked.row(_person("b", measures=[_score("ons4-life-satisfaction", 6, "2026-03-01")]), b"k", TODAY)
    assert (once["wellbeing_first"], once["wellbeing_latest"], once["wellbeing_change"]) == ("6", "6", "")
    assert linked.row(_person("c"), b"k", TODAY)["goal_attainment"] == ""


def test_the_dictionary_describes_every_column_and_spend_unknown_is_not_nil():
    data = linked.build([_person("a", lines=None)], b"k", 1, TODAY)
    columns = [r["column"] for r in csv.DictReader(io.StringIO(data.dictionary))]
    assert columns == linked.COLUMNS == list(data.rows[0])
    assert data.rows[0]["spent_gbp"] == ""


def _rows(n: int, **values: str) -> list[dict[str, str]]:
    base = dict.fromkeys(linked.COLUMNS, "")
    base.update(reviews_due="0", reviews_on_time="0")
    return [{**base, **values} for _ in range(n)]


def _groups(report: dict) -> dict[str, dict]:
    return {g["code"]["coding"][0]["code"]: g for g in report["group"]}


def test_the_summary_counts_each_figure_and_withholds_small_numbers():
    rows = (_rows(10, offer_status="requested", has_plan="yes", review_overdue="no", reviews_due="2", reviews_on_time="1",
                  budget_type="phb", budget_gbp="20000", spent_gbp="5000", wellbeing_change="2")
            + _rows(3, offer_status="accepted", has_plan="yes", review_overdue="yes", reviews_due="1",
                    wellbeing_change="-1")
            + _rows(4, left_month="2026-06"))   # left the cohort: not counted
    groups = _groups(summary.report("Group/c", rows, 10, TODAY))
    count = {code: (g["population"][0].get("count")) for code, g in groups.items()}
    assert count["identified"] == 13 and count["offered"] == 13 and count["with-plan"] == 13
    assert count["accepted"] is None and "suppressed" in groups["accepted"]["population"][0]["code"]["text"]
    assert count["review-in-date"] == 10 and count["review-overdue"] is None
    assert groups["reviews-on-time"]["measureScore"]["value"] == round(100 * 10 / 23, 1)
    assert groups["budget-total"]["measureScore"]["value"] == 200000
    assert groups["spent-share"]["measureScore"]["value"] == 25.0
    assert count["wellbeing-measured"] == 13 and count["wellbeing-improved"] == 10
    assert groups["wellbeing-change"]["measureScore"]["value"] == round((20 - 3) / 13, 1)
    # A mean over fewer than the minimum is withheld with its count.
    few = _groups(summary.report("Group/c", _rows(9, goal_attainment="1.0"), 10, TODAY))
    assert "measureScore" not in few["goal-attainment"] and few["goal-attainment"]["population"][0].get("count") is None
    # Nothing at all is a count of zero, not a withheld one.
    empty = _groups(summary.report("Group/c", [], 10, TODAY))
    assert empty["identified"]["population"][0]["count"] == 0
    assert empty["budget-total"]["population"][0]["count"] == 0 and empty["budget-total"]["measureScore"]["value"] == 0
    assert "measureScore" not in empty["wellbeing-change"]   # a mean over nobody has no value


def test_the_summary_csv_reads_back_every_figure():
    report = summary.report("Group/c", _rows(12, offer_status="requested"), 10, TODAY)
    rows = list(csv.DictReader(io.StringIO(summary.as_csv([("My cohort", report)]))))
    assert [r["measure"] for r in rows] == [g["code"]["coding"][0]["code"] for g in report["group"]]
    by = {r["measure"]: r for r in rows}
    assert by["identified"]["people"] == "12" and by["offered"]["people"] == "12"
    assert by["accepted"]["people"] == "0" and by["identified"]["cohort"] == "My cohort"
