"""The plan's life as pure rules (hub/plans): who must agree, the stages' entry rules, the review
schedule, what the plan worker concludes from the record, outcome measures as Observations."""
from __future__ import annotations

import copy
from datetime import date

import pytest

from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.validation import load_guide
from hub.plans import agreement, followups, lifecycle, outcomes, reviews, stages
from hub.plans.model import NEXT_REVIEW, agreements, next_review, stage, with_stage
from tests.validation_cases import example

SD = f"{CANONICAL_BASE}/StructureDefinition/"
CS = f"{CANONICAL_BASE}/CodeSystem/"
DAY = date(2026, 6, 1)


def agreed(role: str, who: str, when: str, withdrawn: str | None = None) -> dict:
    ext = [{"url": "agreedBy", "valueReference": {"reference": who}},
           {"url": "role", "valueCodeableConcept": {"coding": [{"system": f"{CS}ipc-agreement-role", "code": role}]}},
           {"url": "date", "valueDateTime": when}]
    if withdrawn:
        ext += [{"url": "withdrawn", "valueDateTime": withdrawn}, {"url": "withdrawalReason", "valueString": "changed my mind"}]
    return {"url": f"{SD}plan-agreement", "extension": ext}


def draft(*agreements_: dict, at: str = "record-and-agree", programme: str | None = "ipc4v") -> dict:
    """The veteran's plan as a draft at `at`, with only these agreements and no review date."""
    plan = example("CarePlan-veteran-plan")
    plan["status"] = "draft"
    plan["extension"] = [e for e in plan["extension"]
                         if e["url"] not in (f"{SD}plan-agreement", NEXT_REVIEW, f"{SD}review-interval")]
    plan["extension"] += list(agreements_)
    plan["category"] = [c for c in plan["category"] if c["coding"][0]["system"] != f"{CS}ipc-programme"]
    if programme:
        plan["category"].append({"coding": [{"system": f"{CS}ipc-programme", "code": programme}]})
    return with_stage(plan, at)


PERSON = agreed("person", "Patient/veteran-patient", "2026-02-02T14:00:00Z")
NHS = agreed("nhs-commissioner", "Organization/veteran-icb", "2026-02-04T09:30:00Z")
COUNCIL = agreed("local-authority-commissioner", "Organization/veteran-council", "2026-02-05T11:00:00Z")
FUNDERS = {"nhs", "local-authority"}


def test_a_plan_is_agreed_once_the_person_and_every_funder_have_agreed():
    assert agreement.missing(draft(), FUNDERS) == ["person-or-representative", "nhs-commissioner",
                                                   "local-authority-commissioner"]
    assert agreement.missing(draft(PERSON, COUNCIL), FUNDERS) == ["nhs-commissioner"]
    assert agreement.missing(draft(PERSON, COUNCIL, NHS), FUNDERS) == []
    assert agreement.agreed_on(draft(PERSON, COUNCIL, NHS), FUNDERS) == "2026-02-05"
    representative = agreed("representative", "RelatedPerson/mum", "2026-02-01T10:00:00Z")
    assert agreement.missing(draft(representative), set()) == []   # no budget: the person's side alone
    assert agreement.commissioner_roles({"other", "education", "nhs"}) == ["nhs-commissioner", "education-commissioner",
                                                                          "other-funder"]


def test_a_withdrawn_agreement_no_longer_counts_and_stays_on_record():
    gone = agreed("local-authority-commissioner", "Organization/veteran-council", "2026-02-05T11:00:00Z",
                  withdrawn="2026-03-01T09:00:00Z")
    plan = draft(PERSON, NHS, gone)
    assert agreement.missing(plan, FUNDERS) == ["local-authority-commissioner"]
    assert [a.role for a in agreement.withdrawn(plan)] == ["local-authority-commissioner"]
    assert len(agreements(plan)) == 3
    again = draft(PERSON, NHS, gone, COUNCIL)
    assert agreement.withdrawn(again) == [] and agreement.missing(again, FUNDERS) == []


def test_the_last_agreement_makes_a_draft_at_record_and_agree_active_with_a_review_date():
    before = draft(PERSON, COUNCIL)
    assert lifecycle.settle(None, before, FUNDERS, day=DAY) is before          # one funder missing: stays draft
    after = lifecycle.settle(before, draft(PERSON, COUNCIL, NHS), FUNDERS, day=DAY)
    assert after["status"] == "active"
    assert next_review(after) == "2027-02-05"    # IPC4V: a year from the day it became agreed
    # At an earlier stage it stays a draft until the coordinator moves it to record and agree.
    early = draft(PERSON, COUNCIL, NHS, at="conversation")
    assert lifecycle.settle(None, early, FUNDERS, day=DAY)["status"] == "draft"


def test_becoming_active_without_every_funder_is_refused_naming_the_rule():
    before = draft(PERSON, COUNCIL)
    active = {**draft(PERSON, COUNCIL), "status": "active"}
    active = lifecycle.settle(None, {**active, "extension": [*active["extension"],
                                                             {"url": NEXT_REVIEW, "valueDate": "2027-01-01"}]},
                              set(), day=DAY)   # no budget statement: the person's agreement is enough
    assert active["status"] == "active"
    with pytest.raises(FhirError) as refused:
        lifecycle.settle(before, {**draft(PERSON, COUNCIL), "status": "active"}, FUNDERS, day=DAY)
    assert refused.value.status == 422
    assert "ipc-agree-1" in refused.value.issues[0].diagnostics
    assert "the NHS commissioner" in refused.value.issues[0].diagnostics
    assert refused.value.issues[0].expression == "CarePlan.status"


def test_each_stage_is_entered_only_when_its_rule_holds():
    plan = draft(PERSON, at="conversation")
    for code, rule in (("make-it-happen", "ipc-stage-2"), ("review", "ipc-stage-3")):
        with pytest.raises(FhirError) as refused:
            stages.check(plan, with_stage(plan, code))
        assert rule in refused.value.issues[0].diagnostics
        assert "from 'Conversation'" in refused.value.issues[0].diagnostics
    no_goals = {**plan, "goal": []}
    del no_goals["goal"]
    with pytest.raises(FhirError) as refused:
        stages.check(no_goals, with_stage(no_goals, "record-and-agree"))
    assert "ipc-stage-1" in refused.value.issues[0].diagnostics
    stages.check(plan, with_stage(plan, "record-and-agree"))          # coordinator and goals: fine
    agreed_plan = {**plan, "status": "active"}
    stages.check(agreed_plan, with_stage(agreed_plan, "make-it-happen"))
    stages.check(with_stage(agreed_plan, "review"), with_stage(agreed_plan, "preparation"))   # back: fine
    # A plan at 'make it happen' cannot slip back to draft without moving back a stage.
    with pytest.raises(FhirError):
        stages.check(with_stage(agreed_plan, "make-it-happen"), {**with_stage(agreed_plan, "make-it-happen"),
                                                                 "status": "draft"})
    # Closing a plan is always allowed, whatever its stage.
    stages.check(with_stage(agreed_plan, "review"), {**with_stage(agreed_plan, "review"), "status": "completed"})


def test_a_completed_review_moves_the_next_review_date_unless_the_writer_set_one():
    reviewing = with_stage({**draft(PERSON, COUNCIL, NHS), "status": "active"}, "review")
    reviewing["extension"].append({"url": NEXT_REVIEW, "valueDate": "2026-05-05"})
    done = lifecycle.settle(reviewing, with_stage(reviewing, "make-it-happen"), FUNDERS, day=DAY)
    assert next_review(done) == "2027-06-01"
    chosen = with_stage(reviewing, "make-it-happen")
    chosen["extension"] = [e for e in chosen["extension"] if e["url"] != NEXT_REVIEW] + [
        {"url": NEXT_REVIEW, "valueDate": "2026-09-01"}]
    assert next_review(lifecycle.settle(reviewing, chosen, FUNDERS, day=DAY)) == "2026-09-01"


def test_review_intervals_come_from_the_plan_its_programme_or_the_setting(monkeypatch):
    plan = draft()
    assert reviews.interval_for(plan) == (12, "mo")
    own = {**plan, "extension": [*plan["extension"], {"url": f"{SD}review-interval", "valueDuration": {
        "value": 3, "unit": "months", "system": "http://unitsofmeasure.org", "code": "mo"}}]}
    assert reviews.interval_for(own) == (3, "mo")
    monkeypatch.setenv("HUB_REVIEW_INTERVALS", "ipc4v=26wk;*=6mo")
    assert reviews.interval_for(plan) == (26, "wk")
    assert reviews.interval_for(draft(programme=None)) == (6, "mo")
    assert reviews.interval_for(own) == (3, "mo")
    with pytest.raises(ValueError):
        reviews.parse_intervals("ipc4v=twelve months")
    assert reviews.guide_intervals()["ipc4v"] == (12, "mo")


def test_intervals_keep_to_the_end_of_a_month():
    assert reviews.add_interval(date(2026, 1, 31), (1, "mo")) == date(2026, 2, 28)
    assert reviews.add_interval(date(2028, 2, 29), (1, "a")) == date(2029, 2, 28)
    assert reviews.add_interval(date(2026, 12, 15), (3, "mo")) == date(2027, 3, 15)
    assert reviews.add_interval(date(2026, 12, 15), (2, "wk")) == date(2026, 12, 29)
    assert reviews.is_due("2026-06-29", 28, DAY) and not reviews.is_due("2026-06-30", 28, DAY)
    assert reviews.is_due("2026-06", 0, DAY)   # a month: its first day


def _state(plan: dict, **kw) -> followups.PlanState:
    budget = example("CarePlan-veteran-budget")
    budget["extension"] = [e for e in budget["extension"] if not (
        e["url"] == f"{SD}budget-allocation" and "other" in str(e))]
    return followups.PlanState("p1", plan, budgets=[budget], **kw)


def test_sign_off_requests_go_to_each_commissioner_yet_to_agree_and_close_with_the_agreement():
    now = "2026-06-01T09:00:00Z"
    assert followups.signoff_requests(_state(draft(PERSON, at="conversation")), now) == []   # too early
    raised = followups.signoff_requests(_state(draft(PERSON, COUNCIL)), now)
    assert [(t["status"], t["performerType"][0]["coding"][0]["code"]) for t in raised] == [
        ("requested", "nhs-commissioner")]
    task = {**raised[0], "meta": {"versionId": "1", "profile": raised[0]["meta"]["profile"]}}
    state = _state(draft(PERSON, COUNCIL, NHS), tasks={task["id"]: task})
    [done] = followups.signoff_requests(state, now)
    assert done["status"] == "completed" and done["output"][0]["valueDateTime"] == "2026-02-04T09:30:00Z"
    assert "versionId" not in done["meta"]
    # Withdrawn: the request is reopened; the plan closed: it is cancelled.
    gone = agreed("nhs-commissioner", "Organization/veteran-icb", "2026-02-04T09:30:00Z", withdrawn=now)
    reopened = followups.signoff_requests(_state(draft(PERSON, COUNCIL, gone), tasks={done["id"]: done}), now)
    assert [t["status"] for t in reopened] == ["requested"]
    closed = {**draft(PERSON, COUNCIL), "status": "revoked"}
    assert [t["status"] for t in followups.signoff_requests(_state(closed, tasks={task["id"]: task}), now)] == [
        "cancelled"]


def test_a_withdrawn_agreement_flags_the_plan_until_it_is_given_again():
    now = "2026-06-01T09:00:00Z"
    gone = agreed("person", "Patient/veteran-patient", "2026-02-02T14:00:00Z", withdrawn="2026-05-30T10:00:00Z")
    plan = {**draft(gone, COUNCIL, NHS), "status": "active"}
    [flag] = followups.withdrawal_flags(_state(plan), now)
    assert flag["status"] == "active" and flag["code"]["coding"][0]["code"] == "plan-agreement-withdrawn"
    assert "changed my mind" in flag["code"]["text"]
    assert flag["meta"]["tag"] == [followups.PART_TAG]
    assert followups.withdrawal_flags(_state(plan, flags={flag["id"]: flag}), now) == []   # raised once
    again = {**draft(gone, PERSON, COUNCIL, NHS), "status": "active"}
    [ended] = followups.withdrawal_flags(_state(again, flags={flag["id"]: flag}), now)
    assert ended["status"] == "inactive" and ended["period"]["end"] == now


def test_a_review_meeting_moves_the_plan_to_review_and_back_and_completes_what_it_answers():
    now = "2026-06-01T09:00:00Z"
    plan = with_stage({**draft(PERSON, COUNCIL, NHS), "status": "active"}, "make-it-happen")
    meeting = example("Encounter-veteran-review")
    in_progress = {**meeting, "status": "in-progress"}
    [moved] = followups.review_held(_state(plan, encounters={"m1": in_progress}), "m1", now)
    assert stage(moved) == "review"
    review_task = reviews.review_task(plan, "p1", "2026-05-05", now)
    request = {**example("Task-veteran-review-request"), "id": "r1"}
    declined = {**request, "id": "r2", "status": "rejected", "statusReason": {"text": "reviewed last month"}}
    state = _state(moved, encounters={"m1": meeting}, tasks={review_task["id"]: review_task, "r1": request, "r2": declined})
    changed = followups.review_held(state, "m1", now)
    assert stage(changed[0]) == "make-it-happen" and next_review(changed[0]) == "2027-05-05"
    assert [(t["id"], t["status"]) for t in changed[1:]] == [(review_task["id"], "completed"), ("r1", "completed")]
    assert changed[1]["output"][0]["valueReference"] == {"reference": "Encounter/m1"}
    # Applied once: the plan now names the meeting as its last review.
    assert followups.review_held(_state(changed[0], encounters={"m1": meeting}), "m1", now) == []


def test_an_agreed_plan_closes_the_plan_it_replaces():
    old = {**draft(PERSON), "status": "active", "period": {"start": "2025-02-05"}}
    new = {**draft(PERSON, COUNCIL, NHS), "status": "active", "period": {"start": "2026-02-05"},
           "replaces": [{"reference": "CarePlan/old"}]}
    [closed] = followups.superseded(_state(new, replaced={"old": old}), "2026-06-01")
    assert closed["status"] == "completed" and closed["period"] == {"start": "2025-02-05", "end": "2026-02-05"}
    assert followups.superseded(_state({**new, "status": "draft"}, replaced={"old": old}), "2026-06-01") == []


def test_outcome_responses_become_observations_on_the_goals_they_measure():
    guide = load_guide().questionnaires
    ons4 = example("QuestionnaireResponse-veteran-ons4")
    found = outcomes.observations(ons4, "q1", guide[ons4["questionnaire"]])
    assert [o["code"]["coding"][0]["code"] for o in found] == [
        "ons4-life-satisfaction", "ons4-worthwhile", "ons4-happiness", "ons4-anxiety"]
    assert found[0]["valueQuantity"]["value"] == 7 and found[0]["focus"] == [{"reference": "Goal/veteran-goal-home"}]
    assert found[0]["derivedFrom"] == [{"reference": "QuestionnaireResponse/q1"}]
    assert found[0]["effectiveDateTime"] == ons4["authored"]
    assert outcomes.observations({**ons4, "status": "in-progress"}, "q1", guide[ons4["questionnaire"]]) == []
    poet = {**copy.deepcopy(ons4), "questionnaire": f"{CANONICAL_BASE}/Questionnaire/poet", "item": [
        {"linkId": "outcome", "item": [{"linkId": "area", "answer": [{"valueString": "Getting out and about"}]},
                                      {"linkId": "rating", "answer": [{"valueCoding": {
                                          "system": f"{CS}ipc-outcome-measure", "code": "poet-better"}}]}]},
        {"linkId": "outcome", "item": [{"linkId": "area", "answer": [{"valueString": "Sleep"}]},
                                      {"linkId": "rating", "answer": [{"valueCoding": {
                                          "system": f"{CS}ipc-outcome-measure", "code": "poet-same"}}]}]}]}
    rated = outcomes.observations(poet, "q2", guide[poet["questionnaire"]])
    assert [(o["code"]["text"], o["valueCodeableConcept"]["coding"][0]["code"]) for o in rated] == [
        ("Getting out and about", "poet-better"), ("Sleep", "poet-same")]
    assert len({o["id"] for o in rated}) == 2


def test_licensed_instruments_ship_structure_and_codes_only():
    guide = load_guide().questionnaires
    for name in ("wemwbs", "pam-13", "ascot-sct4", "poet"):
        questionnaire = guide[f"{CANONICAL_BASE}/Questionnaire/{name}"]
        assert "Licensed" in questionnaire["description"] and "licensed" in questionnaire["copyright"]
        questions = [i for i in outcomes._items(questionnaire["item"]) if i["type"] not in ("group", "display")]
        # No question wording beyond a domain or field name: nothing of the instrument's text.
        assert all(len(i.get("text", "")) <= 40 for i in questions), name
    assert len([i for i in guide[f"{CANONICAL_BASE}/Questionnaire/wemwbs"]["item"] if i["linkId"] != "wemwbs-total"]) == 14
    ons4 = guide[f"{CANONICAL_BASE}/Questionnaire/ons4"]
    assert "Open Government Licence" in ons4["copyright"]
    assert ons4["item"][1]["text"] == "Overall, how satisfied are you with your life nowadays?"


def test_a_funder_added_to_an_agreed_plan_must_agree_before_its_allocation_takes_effect():
    now = "2026-06-01T09:00:00Z"
    active = {**with_stage(draft(PERSON, COUNCIL), "make-it-happen"), "status": "active"}
    assert agreement.awaiting(active, FUNDERS) == ["nhs-commissioner"]
    raised = followups.signoff_requests(_state(active), now)
    assert [(t["status"], t["performerType"][0]["coding"][0]["code"]) for t in raised] == [
        ("requested", "nhs-commissioner")]
    # The agreed plan stays in effect for everything else: a write of it is not taken back to draft.
    assert lifecycle.settle(active, active, FUNDERS, day=DAY)["status"] == "active"
    assert agreement.awaiting({**active, "extension": [*active["extension"], NHS]}, FUNDERS) == []
