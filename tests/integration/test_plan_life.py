"""The plan's life over the real API: agreement before a plan is active, the IPC stages' entry
rules (422 naming the rule) on REST and in transactions, the next review date, overdue reviews
and actions as standard searches, review requests, and what is recorded against a plan (needs,
meetings, messages, risks, outcome measures)."""
from __future__ import annotations

import copy
from datetime import date, timedelta

import httpx

from hub.fhir import jsontext
from hub.plans.reviews import add_interval, today
from tests.factories import budget_statement, ipc_plan, plan_agreement, unique
from tests.validation_cases import example

JSON = {"Content-Type": "application/fhir+json"}
IPC = "https://ipc-hub.example.org/fhir/"
TASKS = IPC + "CodeSystem/ipc-plan-task"


def someone(hold_referenced) -> str:
    """A person in the record, and what the example plan refers to (goals, team, coordinator)."""
    person = f"Patient/{unique('p-')}"
    hold_referenced([ipc_plan(person, agreements=(
        plan_agreement("nhs-commissioner", "Organization/veteran-icb", "2026-01-01T00:00:00Z"),)),
        example("Task-veteran-action")])
    return person


def post(fhir: httpx.Client, resource: dict) -> httpx.Response:
    return fhir.post(f"/{resource['resourceType']}", content=jsontext.dumps(resource), headers=JSON)


def put(fhir: httpx.Client, resource: dict) -> httpx.Response:
    return fhir.put(f"/{resource['resourceType']}/{resource['id']}", content=jsontext.dumps(resource),
                    headers={**JSON, "If-Match": f'W/"{resource["meta"]["versionId"]}"'})


def created(fhir: httpx.Client, resource: dict) -> dict:
    response = post(fhir, resource)
    assert response.status_code == 201, response.text
    return response.json()


def ext(resource: dict, name: str) -> list[dict]:
    return [e for e in resource.get("extension", []) if e["url"] == IPC + "StructureDefinition/" + name]


def stage_of(plan: dict) -> str:
    return ext(plan, "ipc-stage")[0]["valueCodeableConcept"]["coding"][0]["code"]


def with_stage(plan: dict, code: str) -> dict:
    changed = copy.deepcopy(plan)
    ext(changed, "ipc-stage")[0]["valueCodeableConcept"] = {"coding": [{"system": IPC + "CodeSystem/ipc-stage",
                                                                        "code": code}]}
    return changed


def agreeing(plan: dict, *agreements: dict) -> dict:
    changed = copy.deepcopy(plan)
    changed["extension"] += list(agreements)
    return changed


def refused(response: httpx.Response, rule: str) -> dict:
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule" and rule in issue["diagnostics"], issue
    return issue


def found(fhir: httpx.Client, path: str, **params) -> list[dict]:
    response = fhir.get(path, params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]


def test_a_plan_funded_by_the_nhs_and_the_council_stays_draft_with_one_agreement_and_becomes_active_with_both(
        fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person))
    created(fhir, budget_statement(person, plan["id"], {"nhs": "24000.00", "local-authority": "12000.00"}))
    person_agrees = put(fhir, agreeing(plan, plan_agreement("person", person, "2026-02-02T14:00:00Z",
                                                            method="in-person")))
    assert person_agrees.status_code == 200 and person_agrees.json()["status"] == "draft"
    council = put(fhir, agreeing(person_agrees.json(), plan_agreement(
        "local-authority-commissioner", "Organization/veteran-council", "2026-02-05T11:00:00Z")))
    assert council.status_code == 200, council.text
    plan = council.json()
    assert plan["status"] == "draft"
    issue = refused(put(fhir, {**plan, "status": "active"}), "ipc-agree-1")
    assert "the NHS commissioner" in issue["diagnostics"] and issue["expression"] == ["CarePlan.status"]
    assert fhir.get(f"/CarePlan/{plan['id']}").json()["meta"]["versionId"] == plan["meta"]["versionId"]

    both = put(fhir, agreeing(plan, plan_agreement("nhs-commissioner", "Organization/veteran-icb",
                                                   "2026-02-09T09:30:00Z")))
    assert both.status_code == 200, both.text
    plan = both.json()
    assert plan["status"] == "active"
    # IPC for Veterans: reviewed yearly, from the day the last agreement made the plan agreed.
    assert ext(plan, "next-review-date")[0]["valueDate"] == "2027-02-09"
    assert found(fhir, "/CarePlan", subject=person, status="active", _elements="status")[0]["id"] == plan["id"]


def test_withdrawing_an_agreement_is_recorded_and_the_plan_stays_in_effect(fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person, agreements=(plan_agreement("person", person, "2026-02-02T14:00:00Z"),)))
    assert plan["status"] == "active"    # no budget statement: the person's agreement is all it needs
    withdrawn = copy.deepcopy(plan)
    ext(withdrawn, "plan-agreement")[0]["extension"] += [
        {"url": "withdrawn", "valueDateTime": "2026-03-01T10:00:00Z"},
        {"url": "withdrawalReason", "valueString": "Wants to talk it over with his family first"}]
    kept = put(fhir, withdrawn)
    assert kept.status_code == 200, kept.text
    assert kept.json()["status"] == "active"   # services carry on; the plan worker flags it
    assert [e["url"] for e in ext(kept.json(), "plan-agreement")[0]["extension"]][-2:] == ["withdrawn",
                                                                                          "withdrawalReason"]


def test_a_stage_is_entered_only_when_its_rule_holds_and_a_refusal_names_the_rule(fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person, stage="conversation"))
    issue = refused(put(fhir, with_stage(plan, "make-it-happen")), "ipc-stage-2")
    assert "from 'Conversation' to 'Make it happen'" in issue["diagnostics"]
    assert issue["expression"] == ["CarePlan.extension:stage"]
    refused(put(fhir, with_stage(plan, "review")), "ipc-stage-3")
    goalless = ipc_plan(someone(hold_referenced), stage="record-and-agree")
    del goalless["goal"]
    for activity in goalless["activity"]:
        del activity["detail"]["goal"]
    refused(post(fhir, goalless), "ipc-stage-1")
    moved = put(fhir, with_stage(plan, "record-and-agree"))
    assert moved.status_code == 200 and stage_of(moved.json()) == "record-and-agree"


def test_transaction_entries_pass_the_same_plan_rules(fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = ipc_plan(person, status="active", stage="make-it-happen", next_review="2027-02-05",
                    agreements=(plan_agreement("person", person, "2026-02-02T14:00:00Z"),))
    budget = budget_statement(person, "placeholder", {"nhs": "5000.00"})
    budget["partOf"] = [{"reference": "urn:uuid:6d1a6c8e-0d0a-4f59-9c0e-2f0a3c1b7a11"}]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:8c1c2b5e-4f3e-4d8a-9b7d-1e2f3a4b5c6d", "resource": budget,
         "request": {"method": "POST", "url": "CarePlan"}},
        {"fullUrl": "urn:uuid:6d1a6c8e-0d0a-4f59-9c0e-2f0a3c1b7a11", "resource": plan,
         "request": {"method": "POST", "url": "CarePlan"}}]}
    answer = fhir.post("", content=jsontext.dumps(bundle), headers=JSON)
    refused(answer, "ipc-agree-1")
    assert found(fhir, "/CarePlan", subject=person) == []      # all or nothing
    plan["extension"].append(plan_agreement("nhs-commissioner", "Organization/veteran-icb", "2026-02-04T09:30:00Z"))
    answer = fhir.post("", content=jsontext.dumps(bundle), headers=JSON)
    assert answer.status_code == 200, answer.text
    assert {p["status"] for p in found(fhir, "/CarePlan", subject=person)} == {"active"}


def test_overdue_reviews_are_one_standard_search(fhir, hold_referenced):
    day = today()
    overdue_on, later_on = (day - timedelta(days=3)).isoformat(), (day + timedelta(days=40)).isoformat()
    person, other = someone(hold_referenced), someone(hold_referenced)
    agreed = (plan_agreement("person", person, "2025-01-10T10:00:00Z"),)
    overdue = created(fhir, ipc_plan(person, status="active", stage="make-it-happen", next_review=overdue_on,
                                     agreements=agreed))
    created(fhir, ipc_plan(other, status="active", stage="make-it-happen", next_review=later_on,
                           agreements=(plan_agreement("person", other, "2025-01-10T10:00:00Z"),)))
    plans = found(fhir, "/CarePlan", **{"next-review-date": f"lt{day.isoformat()}", "status": "active",
                                        "subject": f"{person},{other}"})
    assert [p["id"] for p in plans] == [overdue["id"]]

    def review(plan: dict, due: str, status: str = "requested") -> dict:
        task = {**example("Task-veteran-review"), "status": status, "for": {"reference": plan["subject"]["reference"]},
                "basedOn": [{"reference": f"CarePlan/{plan['id']}"}], "focus": {"reference": f"CarePlan/{plan['id']}"},
                "restriction": {"period": {"end": due}}}
        del task["id"]
        return created(fhir, task)

    late = review(overdue, overdue_on)
    review(overdue, later_on)
    review(overdue, overdue_on, status="completed")
    tasks = found(fhir, "/Task", code=f"{TASKS}|plan-review", status="requested,accepted,in-progress",
                  **{"due-date": f"lt{day.isoformat()}", "focus": f"CarePlan/{overdue['id']}"})
    assert [t["id"] for t in tasks] == [late["id"]]


def test_overdue_actions_are_listed_by_owner(fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person, stage="conversation"))
    day = today()

    def action(owner: str, due: date, status: str = "in-progress") -> dict:
        task = {**example("Task-veteran-action"), "status": status, "owner": {"reference": owner},
                "for": {"reference": person}, "basedOn": [{"reference": f"CarePlan/{plan['id']}"}],
                "focus": {"reference": f"CarePlan/{plan['id']}"}, "restriction": {"period": {"end": due.isoformat()}}}
        del task["id"]
        return created(fhir, task)

    council, charity = "Organization/veteran-council", "Organization/veteran-charity"
    late = action(council, day - timedelta(days=1))
    action(council, day + timedelta(days=10))
    action(council, day - timedelta(days=5), status="completed")
    action(charity, day - timedelta(days=2))
    # The plan's activity carries its Task.
    carried = copy.deepcopy(plan)
    carried["activity"].append({"reference": {"reference": f"Task/{late['id']}"}})
    assert put(fhir, carried).status_code == 200
    overdue = found(fhir, "/Task", code=f"{TASKS}|plan-action", owner=council, status="requested,accepted,in-progress",
                    **{"due-date": f"lt{day.isoformat()}", "patient": person})
    assert [t["id"] for t in overdue] == [late["id"]]
    assert found(fhir, "/CarePlan", **{"activity-reference": f"Task/{late['id']}"})[0]["id"] == plan["id"]


def test_a_review_request_is_a_proposal_and_a_declined_one_says_why(fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person, status="active", stage="make-it-happen", next_review="2027-01-01",
                                  agreements=(plan_agreement("person", person, "2026-01-10T10:00:00Z"),)))
    request = {**example("Task-veteran-review-request"), "status": "requested", "for": {"reference": person},
               "requester": {"reference": person}, "basedOn": [{"reference": f"CarePlan/{plan['id']}"}],
               "focus": {"reference": f"CarePlan/{plan['id']}"}}
    del request["id"]
    assert post(fhir, {**request, "intent": "order"}).status_code == 422
    asked = created(fhir, request)
    declined = put(fhir, {**asked, "status": "rejected"})
    assert declined.status_code == 422 and "ipc-rr-1" in declined.text
    declined = put(fhir, {**asked, "status": "rejected", "statusReason": {"text": "Reviewed three weeks ago; "
                                                                                  "we will talk at the next visit"}})
    assert declined.status_code == 200, declined.text


def test_needs_meetings_messages_and_risks_are_found_from_the_plan(fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person, stage="conversation"))
    need = f"{IPC}CodeSystem/ipc-life-area|accommodation-own"
    assert [p["id"] for p in found(fhir, "/CarePlan", need=need, subject=person)] == [plan["id"]]
    assert found(fhir, "/CarePlan", need=f"{IPC}CodeSystem/ipc-life-area|transport", subject=person) == []
    about = {"reference": f"CarePlan/{plan['id']}"}
    meeting = copy.deepcopy(example("Encounter-veteran-steering-group"))
    meeting.pop("id")
    meeting["subject"] = {"reference": person}
    meeting["extension"][0]["valueReference"] = about
    meeting = created(fhir, meeting)
    letter = {**example("Communication-veteran-letter"), "subject": {"reference": person}, "basedOn": [about],
              "recipient": [{"reference": person}]}
    letter.pop("id")
    letter = created(fhir, letter)
    risk = {**example("RiskAssessment-veteran-climbing"), "subject": {"reference": person}, "basedOn": about}
    risk.pop("id")
    risk = created(fhir, risk)
    assert [e["id"] for e in found(fhir, "/Encounter", **{"care-plan": f"CarePlan/{plan['id']}"})] == [meeting["id"]]
    assert [c["id"] for c in found(fhir, "/Communication", **{"based-on": f"CarePlan/{plan['id']}"})] == [letter["id"]]
    assert [r["id"] for r in found(fhir, "/RiskAssessment", **{"based-on": f"CarePlan/{plan['id']}"})] == [risk["id"]]
    no_mitigation = {k: v for k, v in risk.items() if k not in ("id", "meta", "mitigation")}
    assert post(fhir, no_mitigation).status_code == 422


def test_outcome_measures_are_served_with_their_licences(fhir, guide_served):
    [ons4] = found(fhir, "/Questionnaire", url=f"{IPC}Questionnaire/ons4")
    assert ons4["item"][1]["text"] == "Overall, how satisfied are you with your life nowadays?"
    [wemwbs] = found(fhir, "/Questionnaire", url=f"{IPC}Questionnaire/wemwbs")
    assert "licensed" in wemwbs["copyright"] and not any("text" in i for i in wemwbs["item"])
    lookup = fhir.get("/CodeSystem/$lookup", params={"system": f"{IPC}CodeSystem/ipc-outcome-measure",
                                                      "code": "gas-attainment"})
    assert lookup.status_code == 200 and "Goal attainment" in lookup.text
    intervals = fhir.get("/CodeSystem/ipc-programme").json()
    assert {c["code"]: c["property"][0]["valueString"] for c in intervals["concept"]}["ipc4v"] == "12mo"


def test_the_next_review_date_follows_the_plans_own_interval(fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = ipc_plan(person, agreements=(plan_agreement("person", person, "2026-03-31T10:00:00Z"),))
    plan["extension"].append({"url": f"{IPC}StructureDefinition/review-interval", "valueDuration": {
        "value": 3, "unit": "months", "system": "http://unitsofmeasure.org", "code": "mo"}})
    stored = created(fhir, plan)
    assert stored["status"] == "active"
    assert ext(stored, "next-review-date")[0]["valueDate"] == add_interval(date(2026, 3, 31), (3, "mo")).isoformat()
