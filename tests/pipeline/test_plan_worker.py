"""The plan worker as it runs in production: `ipc-hub worker plans` processes against the
session's PostgreSQL, fed by writes over the real API. Sign-off requests to each commissioner
yet to agree, closed by the agreement; a withdrawn agreement flagged; a review Task raised
exactly once when two schedulers run at once; a person's review request accepted and answered
by a review meeting that moves the plan to 'review' and back and moves the next review date;
questionnaire scores turned into Observations charted against a Goal."""
from __future__ import annotations

import copy
import os
import subprocess
from datetime import date, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from hub.fhir import jsontext
from hub.plans.reviews import add_interval, today
from tests.factories import budget_statement, ipc_plan, plan_agreement, unique
from tests.pipeline.conftest import IPC_HUB, Workers, wait_for
from tests.validation_cases import example

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/fhir+json"}
IPC = "https://ipc-hub.example.org/fhir/"
TASKS = IPC + "CodeSystem/ipc-plan-task"
OUTCOMES = IPC + "CodeSystem/ipc-outcome-measure"
COORDINATOR = "Practitioner/veteran-vwm"   # the example plan's coordinator


def plan_worker_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_DATABASE_URL=database_url, HUB_LOG_LEVEL="info", HUB_LOG_FORMAT="console",
               HUB_PLAN_WORKER_INTERVAL_S="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]), **extra)
    return env


@pytest.fixture()
def plan_workers(clean_db, tmp_path):
    """Two plan workers running at once (as on two machines), stopped at the end of the test."""
    workers = Workers(tmp_path)
    env = plan_worker_env(clean_db)
    workers.start("plans", env)
    workers.start("plans", env)
    yield workers
    workers.stop_all()


def someone(hold_referenced) -> str:
    person = f"Patient/{unique('p-')}"
    hold_referenced([ipc_plan(person, agreements=(
        plan_agreement("nhs-commissioner", "Organization/veteran-icb", "2026-01-01T00:00:00Z"),
        plan_agreement("local-authority-commissioner", "Organization/veteran-council", "2026-01-01T00:00:00Z"))),
        example("Task-veteran-action"), example("Encounter-veteran-review")])
    return person


def created(fhir: httpx.Client, resource: dict) -> dict:
    response = fhir.post(f"/{resource['resourceType']}", content=jsontext.dumps(resource), headers=JSON)
    assert response.status_code == 201, response.text
    return response.json()


def put(fhir: httpx.Client, resource: dict) -> dict:
    response = fhir.put(f"/{resource['resourceType']}/{resource['id']}", content=jsontext.dumps(resource),
                        headers={**JSON, "If-Match": f'W/"{resource["meta"]["versionId"]}"'})
    assert response.status_code == 200, response.text
    return response.json()


def read(fhir: httpx.Client, reference: str) -> dict:
    response = fhir.get(f"/{reference}")
    assert response.status_code == 200, response.text
    return response.json()


def found(fhir: httpx.Client, path: str, **params) -> list[dict]:
    response = fhir.get(path, params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]


def ext(resource: dict, name: str) -> list[dict]:
    return [e for e in resource.get("extension", []) if e["url"] == IPC + "StructureDefinition/" + name]


def stage_of(plan: dict) -> str:
    return ext(plan, "ipc-stage")[0]["valueCodeableConcept"]["coding"][0]["code"]


def next_review_of(plan: dict) -> str | None:
    found_ = ext(plan, "next-review-date")
    return found_[0]["valueDate"] if found_ else None


def sign_offs(fhir: httpx.Client, plan_id: str) -> dict[str, str]:
    """The plan's sign-off requests: the commissioner role each goes to → its status."""
    return {t["performerType"][0]["coding"][0]["code"]: t["status"]
            for t in found(fhir, "/Task", code=f"{TASKS}|plan-sign-off", focus=f"CarePlan/{plan_id}")}


def test_sign_off_requests_go_to_each_commissioner_yet_to_agree_and_close_with_the_agreement(
        plan_workers, fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person))
    created(fhir, budget_statement(person, plan["id"], {"nhs": "12000.00", "local-authority": "8320.00"}))
    plan = read(fhir, f"CarePlan/{plan['id']}")
    plan["extension"].append(plan_agreement("person", person, "2026-02-02T14:00:00Z"))
    assert put(fhir, plan)["status"] == "draft"
    asked = wait_for(lambda: (s := sign_offs(fhir, plan["id"])) and len(s) == 2 and s, 60, "two sign-off requests")
    assert asked == {"nhs-commissioner": "requested", "local-authority-commissioner": "requested"}
    # Each commissioner finds theirs by the standard `performer` search (Task.performerType).
    [request] = found(fhir, "/Task", code=f"{TASKS}|plan-sign-off", focus=f"CarePlan/{plan['id']}",
                      performer=f"{IPC}CodeSystem/ipc-agreement-role|nhs-commissioner")
    assert request["requester"] == {"reference": COORDINATOR} and request["for"] == {"reference": person}

    plan = read(fhir, f"CarePlan/{plan['id']}")
    plan["extension"].append(plan_agreement("nhs-commissioner", "Organization/veteran-icb", "2026-02-04T09:30:00Z"))
    plan = put(fhir, plan)
    assert plan["status"] == "draft"   # the council has not agreed
    wait_for(lambda: sign_offs(fhir, plan["id"]) == {"nhs-commissioner": "completed",
                                                     "local-authority-commissioner": "requested"},
             60, "the NHS sign-off closed by its agreement")

    plan = read(fhir, f"CarePlan/{plan['id']}")
    plan["extension"].append(plan_agreement("local-authority-commissioner", "Organization/veteran-council",
                                            "2026-02-05T11:00:00Z"))
    plan = put(fhir, plan)
    assert plan["status"] == "active"
    assert next_review_of(plan) == "2027-02-05"   # IPC for Veterans: yearly from the last agreement
    wait_for(lambda: set(sign_offs(fhir, plan["id"]).values()) == {"completed"}, 60, "both sign-offs closed")
    # What the worker wrote is attributed to it, derived from the plan version it read.
    completed = found(fhir, "/Task", code=f"{TASKS}|plan-sign-off", focus=f"CarePlan/{plan['id']}")
    provenance = found(fhir, "/Provenance", target=f"Task/{completed[0]['id']}")
    assert any(a["who"].get("display") == "IPC Hub plan worker" for p in provenance for a in p["agent"])

    # The council withdraws: recorded on the plan, and the plan flagged on the person's record.
    plan = read(fhir, f"CarePlan/{plan['id']}")
    council = next(e for e in ext(plan, "plan-agreement") if b"local-authority-commissioner" in jsontext.dumps(e))
    council["extension"] += [{"url": "withdrawn", "valueDateTime": "2026-03-01T09:00:00Z"},
                             {"url": "withdrawalReason", "valueString": "Funding panel to look again"}]
    plan = put(fhir, plan)
    flags = wait_for(lambda: found(fhir, "/Flag", patient=person, status="active"), 60, "the withdrawal flag")
    assert "withdrawn by the local authority commissioner" in flags[0]["code"]["text"]
    assert "Funding panel to look again" in flags[0]["code"]["text"]
    wait_for(lambda: sign_offs(fhir, plan["id"])["local-authority-commissioner"] == "requested", 60,
             "the council's sign-off asked again")


def test_a_review_is_raised_exactly_once_when_two_schedulers_run_at_once(clean_db, fhir, hold_referenced, tmp_path):
    day = today()
    due = (day + timedelta(days=5)).isoformat()
    plans = []
    for _ in range(8):
        person = someone(hold_referenced)
        plans.append(created(fhir, ipc_plan(person, status="active", stage="make-it-happen", next_review=due,
                                            agreements=(plan_agreement("person", person, "2026-01-10T10:00:00Z"),))))
    later_person = someone(hold_referenced)
    later = created(fhir, ipc_plan(later_person, status="active", stage="make-it-happen",
                                   next_review=(day + timedelta(days=90)).isoformat(),
                                   agreements=(plan_agreement("person", later_person, "2026-01-10T10:00:00Z"),)))
    env = plan_worker_env(clean_db, HUB_REVIEW_TASK_LEAD_DAYS="28")
    runs = [subprocess.Popen([IPC_HUB, "worker", "plans", "--once"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for run in runs:
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output

    for plan in plans:
        [task] = found(fhir, "/Task", code=f"{TASKS}|plan-review", focus=f"CarePlan/{plan['id']}")
        assert task["status"] == "requested" and task["owner"] == {"reference": COORDINATOR}
        assert task["restriction"]["period"]["end"] == due
    assert found(fhir, "/Task", code=f"{TASKS}|plan-review", focus=f"CarePlan/{later['id']}") == []
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM plan_review_raised").fetchone()[0] == len(plans)
    # A third run later raises nothing more.
    again = subprocess.run([IPC_HUB, "worker", "plans", "--once"], env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(found(fhir, "/Task", code=f"{TASKS}|plan-review", _count=100)) == len(plans)
    # Due within the lead time, the reviews are what the coordinator's worklist searches for.
    soon = found(fhir, "/Task", code=f"{TASKS}|plan-review", owner=COORDINATOR, status="requested",
                 **{"due-date": f"le{due}"}, _count=100)
    assert {t["focus"]["reference"] for t in soon} == {f"CarePlan/{p['id']}" for p in plans}


def test_a_persons_review_request_is_accepted_and_completed_moving_the_next_review_date(
        plan_workers, fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person, status="active", stage="make-it-happen", next_review="2027-01-10",
                                  agreements=(plan_agreement("person", person, "2026-01-10T10:00:00Z"),)))
    about = {"reference": f"CarePlan/{plan['id']}"}
    request = {**example("Task-veteran-review-request"), "status": "requested", "for": {"reference": person},
               "requester": {"reference": person}, "basedOn": [about], "focus": about}
    del request["id"]
    request = created(fhir, request)
    request = put(fhir, {**request, "status": "accepted"})   # the coordinator accepts

    meeting = copy.deepcopy(example("Encounter-veteran-review"))
    del meeting["id"]
    meeting.update(subject={"reference": person}, status="in-progress", period={"start": "2026-06-10T10:00:00+01:00"})
    meeting["extension"][0]["valueReference"] = about
    meeting = created(fhir, meeting)
    wait_for(lambda: stage_of(read(fhir, f"CarePlan/{plan['id']}")) == "review", 60, "the plan at 'review'")

    meeting = put(fhir, {**meeting, "status": "finished",
                         "period": {"start": "2026-06-10T10:00:00+01:00", "end": "2026-06-10T11:30:00+01:00"}})
    reviewed = wait_for(lambda: (p := read(fhir, f"CarePlan/{plan['id']}")) and stage_of(p) == "make-it-happen" and p,
                        60, "the plan back at 'make it happen'")
    assert next_review_of(reviewed) == add_interval(date(2026, 6, 10), (12, "mo")).isoformat() == "2027-06-10"
    assert ext(reviewed, "last-review")[0]["valueReference"] == {"reference": f"Encounter/{meeting['id']}"}
    answered = wait_for(lambda: (t := read(fhir, f"Task/{request['id']}"))["status"] == "completed" and t, 60,
                        "the request completed")
    assert answered["output"][0]["valueReference"] == {"reference": f"Encounter/{meeting['id']}"}
    # The plan's versions keep the review: at 'review' in one, moved on in the next.
    history = fhir.get(f"/CarePlan/{plan['id']}/_history").json()
    stages = [stage_of(e["resource"]) for e in history["entry"]]
    assert stages[0] == "make-it-happen" and "review" in stages


def test_questionnaire_scores_are_charted_as_observations_against_a_goal(plan_workers, fhir, hold_referenced):
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person, stage="conversation"))
    goal = plan["goal"][0]["reference"]

    def scored(score: int, when: str) -> dict:
        response = copy.deepcopy(example("QuestionnaireResponse-veteran-gas"))
        del response["id"]
        response.update(subject={"reference": person}, basedOn=[{"reference": f"CarePlan/{plan['id']}"}],
                        authored=when)
        response["extension"][0]["valueReference"] = {"reference": goal}
        response["item"][0]["answer"] = [{"valueInteger": score}]
        return created(fhir, response)

    scored(-1, "2026-03-01T10:00:00Z")
    later = scored(1, "2026-06-01T10:00:00Z")
    scored(0, "2026-04-15T10:00:00Z")

    def chart() -> list[tuple[str, int]]:
        points = found(fhir, "/Observation", focus=goal, code=f"{OUTCOMES}|gas-attainment", _sort="date")
        return [(o["effectiveDateTime"][:10], o["valueQuantity"]["value"]) for o in points]

    wait_for(lambda: len(chart()) == 3, 60, "three scores charted")
    assert chart() == [("2026-03-01", -1), ("2026-04-15", 0), ("2026-06-01", 1)]
    # An amended response replaces its Observation rather than adding one.
    put(fhir, {**later, "status": "amended", "item": [{"linkId": "attainment", "answer": [{"valueInteger": 2}]}]})
    wait_for(lambda: chart()[-1] == ("2026-06-01", 2), 60, "the amended score")
    assert len(chart()) == 3
    [observation] = found(fhir, "/Observation", focus=goal, code=f"{OUTCOMES}|gas-attainment", date="2026-06-01")
    assert observation["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
    assert observation["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{later['id']}"}]


def test_an_agreed_plan_closes_the_plan_it_replaces(plan_workers, fhir, hold_referenced):
    person = someone(hold_referenced)
    agreed = (plan_agreement("person", person, "2025-02-01T10:00:00Z"),)
    old = created(fhir, ipc_plan(person, status="active", stage="make-it-happen", start="2025-02-05",
                                 next_review="2026-02-05", agreements=agreed))
    new = ipc_plan(person, start="2026-02-05", replaces=[{"reference": f"CarePlan/{old['id']}"}])
    new = created(fhir, new)
    assert new["status"] == "draft"
    # Not yet agreed: the old plan is still the person's plan.
    assert [p["id"] for p in found(fhir, "/CarePlan", subject=person, status="active")] == [old["id"]]
    new["extension"].append(plan_agreement("person", person, "2026-02-03T10:00:00Z"))
    assert put(fhir, new)["status"] == "active"
    closed = wait_for(lambda: (p := read(fhir, f"CarePlan/{old['id']}"))["status"] == "completed" and p, 60,
                      "the replaced plan closed")
    assert closed["period"] == {"start": "2025-02-05", "end": "2026-02-05"}
    assert f"Replaced by CarePlan/{new['id']}" in closed["note"][-1]["text"]
    assert [p["id"] for p in found(fhir, "/CarePlan", subject=person, status="active,draft,on-hold")] == [new["id"]]


def test_a_look_alike_created_over_the_api_gets_its_review_task_with_no_feed_traffic(clean_db, fhir, tmp_path):
    """Issue 20: the review pass runs on its own (the plan worker, woken by the API's write), not
    only when the recorder handles a feed batch; two workers at once raise the pair's Task once."""
    family = unique("Lookalike")
    details = {"resourceType": "Patient", "name": [{"family": family, "given": ["Robin"]}],
               "birthDate": "1969-04-04", "gender": "female"}
    first = created(fhir, details)
    second = created(fhir, details)   # no NHS number: a look-alike, stored, scored later
    task_code = "https://ipc-hub.example.org/fhir/CodeSystem/task-code|review-possible-duplicate"
    assert found(fhir, "/Task", focus=f"Patient/{first['id']}") == []   # nothing in the request itself
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM person_link WHERE method = 'new-unreviewed'").fetchone()[0] == 2
    env = plan_worker_env(clean_db)
    runs = [subprocess.Popen([IPC_HUB, "worker", "plans", "--once"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for run in runs:
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output
    tasks = found(fhir, "/Task", focus=f"Patient/{first['id']}")
    assert [t["code"]["coding"][0]["code"] for t in tasks] == ["review-possible-duplicate"], tasks
    assert tasks[0]["input"][0]["valueReference"]["reference"] == f"Patient/{second['id']}"
    assert len(found(fhir, "/Task", code=task_code)) == 1
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM person_link WHERE method = 'new-unreviewed'").fetchone()[0] == 0


def test_a_sign_off_request_is_owned_by_the_funder_and_on_its_commissioners_worklist_until_agreed(
        plan_workers, fhir, hold_referenced, hub_url, pg_url):
    """Issue 13: each sign-off Task has an owner — the funder's Organization (named on the budget
    allocation) — and reaches its commissioners' worklist, not only a search; a request whose
    funder the record does not name reaches commissioners of its role's kind. Agreeing from the
    plan page closes it."""
    from tests.integration.signin import add_user
    from tests.integration.test_workspace_pages import csrf_of, workspace

    icb_code, council_code = f"Q{unique()[-6:]}".upper(), f"E{unique()[-8:]}".upper()
    icb = created(fhir, {"resourceType": "Organization", "name": "Midshire ICB", "identifier": [
        {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": icb_code}]})
    person = someone(hold_referenced)
    plan = created(fhir, ipc_plan(person))
    statement = budget_statement(person, plan["id"], {"nhs": "12000.00", "local-authority": "8320.00"})
    nhs_share = next(e for e in statement["extension"] if b'"nhs"' in jsontext.dumps(e))
    nhs_share["extension"].append({"url": "funder", "valueReference": {"reference": f"Organization/{icb['id']}"}})
    created(fhir, statement)
    plan = read(fhir, f"CarePlan/{plan['id']}")
    plan["extension"].append(plan_agreement("person", person, "2026-02-02T14:00:00Z"))
    put(fhir, plan)
    wait_for(lambda: len(sign_offs(fhir, plan["id"])) == 2, 60, "two sign-off requests")
    requests = {t["performerType"][0]["coding"][0]["code"]: t
                for t in found(fhir, "/Task", code=f"{TASKS}|plan-sign-off", focus=f"CarePlan/{plan['id']}")}
    assert requests["nhs-commissioner"]["owner"] == {"reference": f"Organization/{icb['id']}"}
    assert "owner" not in requests["local-authority-commissioner"]   # the record names no council
    # The standard search by owner finds the ICB's.
    assert [t["id"] for t in found(fhir, "/Task", owner=f"Organization/{icb['id']}", status="requested")] == \
        [requests["nhs-commissioner"]["id"]]

    link = f'href="/app/plans/{plan["id"]}"'
    icb_commissioner = workspace(hub_url, add_user(pg_url, role="commissioner", organisation=icb_code).username)
    other_icb = workspace(hub_url, add_user(pg_url, role="commissioner", organisation="QZZ").username)
    council = workspace(hub_url, add_user(pg_url, role="commissioner", partner_class="local-authority",
                                          organisation=council_code).username)
    page = icb_commissioner.get("/app/worklist").text
    assert link in page and "Plan sign-off" in page and "as its nhs commissioner" in page
    assert link not in other_icb.get("/app/worklist").text       # owned by another ICB
    # The council's request names no council: it would reach council commissioners, but consent
    # holds on the worklist too (a council sees only who the person is, by default).
    assert link not in council.get("/app/worklist").text
    # A request whose funder the record does not name reaches the commissioners of its kind.
    someone_else = someone(hold_referenced)
    unnamed = created(fhir, ipc_plan(someone_else))
    created(fhir, budget_statement(someone_else, unnamed["id"], {"nhs": "5000.00"}))
    unnamed = read(fhir, f"CarePlan/{unnamed['id']}")
    unnamed["extension"].append(plan_agreement("person", someone_else, "2026-02-02T14:00:00Z"))
    put(fhir, unnamed)
    wait_for(lambda: sign_offs(fhir, unnamed["id"]) == {"nhs-commissioner": "requested"}, 60, "its sign-off request")
    assert f'href="/app/plans/{unnamed["id"]}"' in other_icb.get("/app/worklist").text
    assert f'href="/app/plans/{unnamed["id"]}"' not in council.get("/app/worklist").text

    # The ICB's commissioner agrees from the plan page: recorded on the plan, the request closed.
    plan_page = icb_commissioner.get(f"/app/plans/{plan['id']}")
    assert "Agree the plan as the NHS commissioner" in plan_page.text
    version = read(fhir, f"CarePlan/{plan['id']}")["meta"]["versionId"]
    answer = icb_commissioner.post(f"/app/plans/{plan['id']}/agree",
                                   data={"csrf_token": csrf_of(plan_page.text), "version": version})
    assert answer.status == 303, answer.text[:300]
    agreed = read(fhir, f"CarePlan/{plan['id']}")
    nhs = [e for e in ext(agreed, "plan-agreement") if b"nhs-commissioner" in jsontext.dumps(e)]
    assert [s["valueReference"]["reference"] for e in nhs for s in e["extension"] if s["url"] == "agreedBy"] == \
        [f"Organization/{icb['id']}"]
    assert agreed["status"] == "draft"   # the council has still to agree
    wait_for(lambda: sign_offs(fhir, plan["id"])["nhs-commissioner"] == "completed", 60, "the NHS request closed")
    assert link not in icb_commissioner.get("/app/worklist").text
    assert "Agree the plan as" not in icb_commissioner.get(f"/app/plans/{plan['id']}").text
