"""Children and young people, the pure parts: ages as English law counts them, the EHC needs
assessment's statutory timeline from a SEN2-shaped row, the EHC plan's end by the 25th birthday,
the growing-up steps and the adult plan that replaces the child's."""
from __future__ import annotations

from datetime import date

import pytest

from connectors.children.format import EHC, KINDS
from connectors.la.format import check_row, kind_of_header
from hub.fhir.ages import age_on, birthday, day_before_birthday, start_of_year_9
from hub.fhir.errors import FhirError
from hub.fhir.validation import validate
from hub.plans import ehc, growing_up
from mappings.children import map_ehc
from mappings.children.rows import EHC_COLUMNS

SOURCE = "la-E10000024"


def ehc_row(**values: str) -> bytes:
    row = dict.fromkeys(EHC_COLUMNS, "")
    row.update(LA_Code="E10000024", Child_Id="CH-1", Date_of_Birth="2012-02-29", Request_Id="RQ-1",
               Request_Received_Date="2026-01-05", **values)
    return (",".join(EHC_COLUMNS) + "\n" + ",".join(row[c] for c in EHC_COLUMNS) + "\n").encode()


def by_code(bundle: dict) -> dict[str, dict]:
    out = {}
    for e in bundle["entry"]:
        r = e["resource"]
        key = r["code"]["coding"][0]["code"] if r["resourceType"] == "Task" else r["resourceType"] + (
            ":" + r["category"][0]["coding"][0]["code"] if r["resourceType"] == "CarePlan" else "")
        out[key] = r
    return out


def test_a_leap_day_birthday_falls_on_1_march_and_ages_turn_on_the_day():
    born = date(2008, 2, 29)
    assert birthday(born, 18) == date(2026, 3, 1)
    assert birthday(born, 16) == date(2024, 2, 29)
    assert age_on(born, date(2026, 2, 28)) == 17 and age_on(born, date(2026, 3, 1)) == 18
    assert day_before_birthday(born, 25) == date(2033, 2, 28)
    assert age_on(date(2009, 5, 14), date(2027, 5, 13)) == 17 and age_on(date(2009, 5, 14), date(2027, 5, 14)) == 18


@pytest.mark.parametrize(("born", "year_9"), [("2012-10-05", "2026-09-01"), ("2013-08-31", "2026-09-01"),
                                              ("2013-09-01", "2027-09-01"), ("2012-02-29", "2025-09-01")])
def test_year_9_is_the_school_year_a_child_turns_14(born, year_9):
    start = start_of_year_9(date.fromisoformat(born))
    assert start == date.fromisoformat(year_9)
    assert birthday(date.fromisoformat(born), 14) < date(start.year + 1, 9, 1) <= birthday(date.fromisoformat(born), 15)


def test_the_assessment_runs_to_its_statutory_weeks_and_open_steps_stay_requested():
    tasks = by_code(map_ehc(ehc_row(Decision="Assess", Decision_Date="2026-02-10"), SOURCE))
    due = {code: t["restriction"]["period"]["end"] for code, t in tasks.items()}
    assert due == {"ehc-request": "2026-01-05", "ehc-decision": "2026-02-16", "ehc-advice": "2026-03-30",
                   "ehc-draft": "2026-04-27", "ehc-final": "2026-05-25"}   # weeks 0, 6, 12, 16, 20
    assert {c: t["status"] for c, t in tasks.items()} == {
        "ehc-request": "completed", "ehc-decision": "completed", "ehc-advice": "requested",
        "ehc-draft": "requested", "ehc-final": "requested"}
    assert tasks["ehc-decision"]["executionPeriod"]["end"] == "2026-02-10"
    for task in tasks.values():
        assert [i.diagnostics for i in validate(task) if i.severity == "error"] == []


def test_a_decision_not_to_assess_ends_the_timeline():
    tasks = by_code(map_ehc(ehc_row(Decision="Not assess", Decision_Date="2026-02-10"), SOURCE))
    assert sorted(tasks) == ["ehc-decision", "ehc-request"]
    assert tasks["ehc-decision"]["output"][0]["valueString"] == "Not assess"


def test_an_issued_plan_ends_the_day_before_the_25th_birthday_and_links_to_the_ipc_plan():
    out = by_code(map_ehc(ehc_row(Decision="Assess", Decision_Date="2026-02-10", Assessment_Outcome="Plan issued",
                                  Final_Plan_Date="2026-05-20", SEN_Type="ASD", Placement_Type="Special school",
                                  Placement_URN="123456"), SOURCE))
    plan, part = out["CarePlan:ehc-plan"], out["CarePlan:care-support-plan"]
    assert plan["period"] == {"start": "2026-05-20", "end": "2037-02-28"}   # 25 on 1 March 2037
    assert plan["addresses"] == [{"reference": f"Condition/{out['Condition']['id']}"}]
    assert {e["url"].rsplit("/", 1)[1]: e.get("valueDate") for e in plan["extension"]} == {"next-review-date": "2027-05-20"}
    linked = {e["url"]: e for e in next(x for x in part["extension"] if x["url"].endswith("linked-plan"))["extension"]}
    assert linked["plan"]["valueReference"]["reference"] == f"CarePlan/{plan['id']}"
    assert out["ehc-draft"]["status"] == "completed"   # skipped in the extract, done by the final plan
    for resource in out.values():
        assert [i.diagnostics for i in validate(resource) if i.severity == "error"] == [], resource["resourceType"]


def test_the_store_rule_refuses_an_ehc_plan_past_the_25th_birthday_or_without_an_end():
    plan = {"resourceType": "CarePlan", "status": "active",
            "category": [{"coding": [{"system": ehc.PLAN_CATEGORY_SYSTEM, "code": "ehc-plan"}]}],
            "period": {"start": "2026-01-01", "end": "2033-03-01"}}
    with pytest.raises(FhirError, match="2033-02-28"):
        ehc.check_ends_by_25(plan, "2008-02-29")
    ehc.check_ends_by_25({**plan, "period": {"start": "2026-01-01", "end": "2033-02-28"}}, "2008-02-29")
    with pytest.raises(FhirError, match="period.end is required"):
        ehc.check_ends_by_25({**plan, "period": {"start": "2026-01-01"}}, None)


def test_the_extract_refuses_rows_whose_story_does_not_hold():
    kind = kind_of_header(list(EHC.names), KINDS)
    positions = tuple(range(len(EHC.names)))

    def problems(**values: str) -> list[tuple[str, str]]:
        row = dict.fromkeys(EHC.names, "")
        row.update(LA_Code="E10000024", Child_Id="C1", Date_of_Birth="2014-01-01", Request_Id="R1",
                   Request_Received_Date="2026-01-05", **values)
        return check_row(kind, positions, [row[n] for n in EHC.names])[1]

    assert problems(Decision="Assess", Decision_Date="2025-12-01") == [("Decision_Date", "Decision_Date is before Request_Received_Date")]
    assert problems(Decision="Assess", Decision_Date="2026-02-01", Assessment_Outcome="Plan issued",
                    Final_Plan_Date="2026-05-01") == [("SEN_Type", "an issued plan needs this column")]
    assert problems(Decision="Not assess", Decision_Date="2026-02-01", Final_Plan_Date="2026-05-01",
                    Assessment_Outcome="Plan issued", SEN_Type="ASD")[0][0] == "Decision"
    assert problems(Decision="Assess", Decision_Date="2026-02-01") == []


def test_a_17_year_old_has_the_transition_steps_and_an_18_year_old_the_adult_plan():
    born = date(2009, 5, 14)
    at_17 = {s.code for s in growing_up.due_steps(born, date(2026, 12, 3), growing_up.CHILD)}
    assert at_17 == {"preparing-for-adulthood", "decisions-pass", "adult-transfer"}
    assert {s.code for s in growing_up.due_steps(born, date(2022, 9, 1), growing_up.CHILD)} == {"preparing-for-adulthood"}
    assert growing_up.due_steps(born, date(2034, 5, 14), growing_up.CHILD) == []   # 25: nothing more
    assert [s.code for s in growing_up.due_steps(born, date(2026, 5, 14), growing_up.YOUNG_CARER)] == [
        "young-carer-reassessment"]
    assert not growing_up.adult_plan_due(born, date(2027, 5, 13)) and growing_up.adult_plan_due(born, date(2027, 5, 14))
    transfer = next(s for s in growing_up.STEPS if s.code == "adult-transfer")
    task = growing_up.transition_task(transfer, "Patient/p1", born, "2026-12-03T00:00:00Z")
    assert task["restriction"]["period"] == {"start": "2026-05-14", "end": "2027-05-14"}
    assert [i.diagnostics for i in validate(task) if i.severity == "error"] == []


def test_the_continuing_care_check_is_only_for_children_in_continuing_care_from_14():
    born = date(2012, 2, 29)
    steps = {s.code: s for s in growing_up.STEPS}
    assert steps["continuing-care-check"].who == growing_up.CONTINUING_CARE
    assert "continuing-care-check" not in {s.code for s in growing_up.STEPS if s.who == growing_up.CHILD}
    assert growing_up.due_steps(born, date(2026, 2, 27), growing_up.CONTINUING_CARE) == []       # 13
    [check] = growing_up.due_steps(born, date(2026, 3, 1), growing_up.CONTINUING_CARE)           # 14
    task = growing_up.transition_task(check, "Patient/p1", born, "2026-03-01T00:00:00Z")
    assert task["restriction"]["period"] == {"start": "2026-03-01", "end": "2030-03-01"}         # due at 18
    assert growing_up.due_steps(born, date(2037, 3, 1), growing_up.CONTINUING_CARE) == []        # 25


def test_the_extracts_continuing_care_date_becomes_a_health_flag_the_worker_reads():
    from hub.consent.parts import HEALTH, record_part
    from hub.fhir.builders import coding
    from mappings.children import map_child
    from mappings.children.rows import CHILD_COLUMNS

    def child(since: str) -> list[dict]:
        row = ["E10000024", "CH-9", "", "", "Ava", "Stone", "2011-06-01", "F", "", since]
        payload = (",".join(CHILD_COLUMNS) + "\n" + ",".join(row) + "\n").encode()
        return [e["resource"] for e in map_child(payload, "la-E10000024")["entry"]]

    [patient] = child("")
    patient, flag = child("2019-09-01")
    assert flag["code"]["coding"] == [coding("https://ipc-hub.example.org/fhir/CodeSystem/ipc-flag", growing_up.CONTINUING_CARE_FLAG,
                                             "Receives children's continuing care")]
    assert flag["status"] == "active" and flag["period"] == {"start": "2019-09-01"}
    assert flag["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert [i.diagnostics for i in validate(flag) if i.severity == "error"] == []
    assert record_part(flag) == HEALTH


def test_decisions_pass_at_the_configured_age(monkeypatch):
    monkeypatch.setenv("HUB_PROXY_PASSES_AT_AGE", "18")
    step = next(s for s in growing_up.STEPS if s.code == "decisions-pass")
    assert step.due(date(2009, 5, 14)) == date(2027, 5, 14)


def test_the_adult_plan_replaces_the_childs_and_carries_its_goals():
    child = {"resourceType": "CarePlan", "subject": {"reference": "Patient/p1"},
             "goal": [{"reference": "Goal/g1"}, {"reference": "Goal/g2"}],
             "extension": [{"url": growing_up.COORDINATOR, "valueReference": {"reference": "Practitioner/x"}}]}
    adult = growing_up.adult_plan(child, "child-plan", date(2009, 5, 14), "ehc-1")
    assert adult["replaces"] == [{"reference": "CarePlan/child-plan"}]
    assert adult["goal"] == child["goal"] and adult["period"] == {"start": "2027-05-14"}
    assert adult["subject"] == {"reference": "Patient/p1"}
    assert [i.diagnostics for i in validate(adult) if i.severity == "error"] == []


@pytest.mark.parametrize(("episode", "part"), [("CIN", "social-care"), ("CLA", "social-care"), ("CPP", "safeguarding")])
def test_childrens_social_care_episodes_sit_in_their_protected_parts_of_the_record(episode, part):
    from hub.consent.parts import record_part
    from mappings.children import map_episode

    legal = "C2" if episode == "CLA" else ""
    payload = ("LA_Code,Child_Id,Episode_Id,Episode_Type,Start_Date,End_Date,Primary_Need,Legal_Status\n"
               f"E10000024,C1,EP1,{episode},2020-01-01,,N1,{legal}\n").encode()
    [entry] = map_episode(payload, SOURCE)["entry"]
    assert record_part(entry["resource"]) == part
    assert [i.diagnostics for i in validate(entry["resource"]) if i.severity == "error"] == []


def test_a_reimport_moves_only_what_the_council_owns_and_notes_a_difference_once():
    from hub.plans import council_owned

    tasks = by_code(map_ehc(ehc_row(), SOURCE))
    first = tasks["ehc-decision"]                                   # requested: the council has no date
    assert council_owned.is_council_owned(first)
    # Nobody touched it: the council's new date completes it.
    done = by_code(map_ehc(ehc_row(Decision="Assess", Decision_Date="2026-02-01"), SOURCE))["ehc-decision"]
    assert council_owned.merge(done, first) == done
    # The coordinator took it on: her status, owner and note stay.
    hers = {**first, "status": "in-progress", "owner": {"display": "Priya Shah"}, "note": [{"text": "Withdrawn?"}]}
    assert council_owned.merge(first, hers) is hers                 # the council says nothing new: unchanged
    merged = council_owned.merge(done, hers)
    assert (merged["status"], merged["owner"], merged["executionPeriod"]) == ("in-progress", {"display": "Priya Shah"},
                                                                             {"end": "2026-02-01"})
    assert merged["note"][0] == {"text": "Withdrawn?"} and "done on 2026-02-01" in merged["note"][1]["text"]
    assert council_owned.merge(done, merged) is merged              # the same note never twice
    # Completed here, still open at the council: kept, and the difference noted.
    closed = council_owned.merge(first, {**first, "status": "completed"})
    assert closed["status"] == "completed" and "still open there" in closed["note"][0]["text"]
    cancelled = council_owned.merge(first, {**first, "status": "cancelled"})
    assert cancelled["status"] == "cancelled" and "still open there" in cancelled["note"][0]["text"]


def test_a_continuing_care_flag_a_person_ended_stays_ended():
    from hub.plans import council_owned

    flag = {"resourceType": "Flag", "id": "f1", "status": "active", "period": {"start": "2019-09-01"},
            "code": {"coding": [{"system": council_owned.FLAG_SYSTEM, "code": "childrens-continuing-care"}]}}
    assert council_owned.is_council_owned(flag)
    ended = {**flag, "status": "inactive", "period": {"start": "2019-09-01", "end": "2026-06-30"}}
    assert council_owned.merge(flag, ended)["status"] == "inactive"


def test_the_childrens_worklist_rows_filter_by_kind_when_and_name_and_show_a_difference():
    from hub.plans.council_owned import CONFLICT_AUTHOR
    from hub.web.children import rows

    system = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-children-task"

    def task(code: str, child: str, due: str, **more) -> dict:
        return {"resourceType": "Task", "status": "requested", "code": {"coding": [{"system": system, "code": code}]},
                "for": {"reference": child}, "restriction": {"period": {"end": due}}, **more}

    children = {"Patient/a": {"name": [{"given": ["Ava"], "family": "Stone"}], "birthDate": "2012-02-29"},
                "Patient/b": None}   # a child this user may not see
    tasks = [task("adult-transfer", "Patient/a", "2030-03-01"),
             task("ehc-final", "Patient/a", "2026-07-20",
                  note=[{"text": "Mine."}, {"authorString": CONFLICT_AUTHOR, "text": "The council's extract says..."}]),
             task("ehc-annual-review", "Patient/b", "2026-12-20"),
             {"resourceType": "Task", "status": "requested", "code": {"text": "something else"}}]
    today = date(2026, 12, 3)
    every = rows(tasks, children, today, kind="all", when="all", name="")
    assert [(r["child"], r["age"], r["overdue"]) for r in every] == [
        ("Ava Stone", 14, True), ("Name not shared", None, False), ("Ava Stone", 14, False)]
    assert every[0]["differs"] == ["The council's extract says..."]
    assert [r["task"]["code"]["coding"][0]["code"] for r in rows(tasks, children, today, kind="transition", when="all",
                                                                   name="")] == ["adult-transfer"]
    assert len(rows(tasks, children, today, kind="all", when="overdue", name="")) == 1
    assert len(rows(tasks, children, today, kind="all", when="soon", name="")) == 2      # overdue, and due in 17 days
    assert [r["child"] for r in rows(tasks, children, today, kind="all", when="all", name="ava")] == ["Ava Stone"] * 2


def test_a_reimported_ehc_plan_keeps_what_others_added_and_takes_the_councils_fields():
    from hub.plans import council_owned

    issued = by_code(map_ehc(ehc_row(Decision="Assess", Decision_Date="2026-02-01", Assessment_Outcome="Plan issued",
                                     Final_Plan_Date="2026-05-01", SEN_Type="ASD", Placement_Type="Special school"),
                             SOURCE))["CarePlan:ehc-plan"]
    assert council_owned.is_council_owned(issued)
    trust = {"id": "trust-sleep-clinic", "detail": {"status": "in-progress", "description": "Sleep clinic"}}
    shared = {**issued, "activity": [*issued["activity"], trust], "supportingInfo": [{"reference": "Communication/v"}],
              "addresses": [*issued["addresses"], {"reference": "Condition/epilepsy"}]}
    assert council_owned.merge(issued, shared) is shared                # nothing new from the council
    reviewed = by_code(map_ehc(ehc_row(Decision="Assess", Decision_Date="2026-02-01", Assessment_Outcome="Plan issued",
                                       Final_Plan_Date="2026-05-01", SEN_Type="ASD", Placement_Type="Mainstream school",
                                       Last_Review_Date="2027-04-20"), SOURCE))["CarePlan:ehc-plan"]
    merged = council_owned.merge(reviewed, shared)
    assert [a["id"] for a in merged["activity"]] == ["placement", "trust-sleep-clinic"]
    assert "Mainstream school" in merged["activity"][0]["detail"]["description"]
    assert merged["supportingInfo"] == [{"reference": "Communication/v"}]
    assert {"reference": "Condition/epilepsy"} in merged["addresses"]
    assert {e["url"].rsplit("/", 1)[1]: e["valueDate"] for e in merged["extension"]} == {
        "next-review-date": "2028-04-20", "last-review": "2027-04-20"}
