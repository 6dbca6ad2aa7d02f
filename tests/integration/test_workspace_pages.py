"""The workspace's pages over real HTTP without a browser (tests/browser drives Chromium): the
sign-in redirect, identity review decisions (merge and keep apart, through the API, attributed
to the person), the operator-only page, CSRF on every form, idle timeout, and where sign-in may
send a browser next."""
from __future__ import annotations

import re
import uuid
from urllib.parse import unquote

import psycopg
import pytest

from tests.integration.signin import Agent, add_user, form_of

pytestmark = pytest.mark.integration

TASK_CODE = "https://ipc-hub.example.org/fhir/CodeSystem/task-code"


def workspace(base: str, username: str, password: str = "a long demo passphrase", start: str = "/app") -> Agent:
    """A browser stand-in signed in to the workspace."""
    agent = Agent(base)
    answer = agent.get(start)
    while answer.status in (302, 303) and "/auth/authorize" not in answer.location:
        answer = agent.get(answer.location)
    page = agent.get(answer.location)
    action, csrf = form_of(page.text)
    answer = agent.post(action, data={"csrf_token": csrf, "username": username, "password": password})
    while answer.status in (302, 303):
        answer = agent.get(answer.location)
    assert answer.status == 200, answer.text[:300]
    return agent


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def review_case(fhir) -> tuple[str, str, str]:
    """Two records that may be one person, and the review Task the recorder would raise."""
    tag = uuid.uuid4().hex[:8]
    first, second = f"dup-a-{tag}", f"dup-b-{tag}"
    for pid, ident in ((first, f"LA-{tag}"), (second, f"GP-{tag}")):
        assert fhir.put(f"/Patient/{pid}", json={
            "resourceType": "Patient", "id": pid, "identifier": [{"system": "urn:test", "value": ident}],
            "name": [{"family": "Duplicate", "given": ["Dana"]}], "birthDate": "1970-01-01"}).status_code in (200, 201)
    task = f"review-{tag}"
    assert fhir.put(f"/Task/{task}", json={
        "resourceType": "Task", "id": task, "status": "requested", "intent": "proposal",
        "code": {"coding": [{"system": TASK_CODE, "code": "review-possible-duplicate"}]},
        "description": "Demographics suggest these records may be one person.",
        "focus": {"reference": f"Patient/{first}"}, "for": {"reference": f"Patient/{first}"},
        "input": [{"type": {"text": "possible duplicate"}, "valueReference": {"reference": f"Patient/{second}"}}],
    }).status_code in (200, 201)
    return first, second, task


def test_pages_need_a_signed_in_person(hub_url):
    agent = Agent(hub_url)
    for path in ("/app", "/app/worklist", "/app/operations", "/app/people/x", "/app/plans/x"):
        answer = agent.get(path)
        assert answer.status == 303 and answer.location.startswith("/app/sign-in?next=")
        assert unquote(answer.location.split("next=", 1)[1]) == path


def test_confirming_a_duplicate_merges_the_two_records_and_names_who_decided(hub_url, pg_url, fhir):
    first, second, task = review_case(fhir)
    operator = add_user(pg_url, role="operator", name="Olu Operator")
    agent = workspace(hub_url, operator.username)
    page = agent.get("/app/operations")
    assert page.status == 200 and f"review-{task}" in page.text
    done = agent.post(f"/app/reviews/{task}", data={"csrf_token": csrf_of(page.text), "decision": "merge",
                                                     "back": "/app/operations"})
    assert done.status == 303 and done.location.startswith("/app/operations?done=")
    retired, kept = fhir.get(f"/Patient/{first}").json(), fhir.get(f"/Patient/{second}").json()
    assert retired["active"] is False and retired["link"] == [{"other": {"reference": f"Patient/{second}"},
                                                              "type": "replaced-by"}]
    assert {"other": {"reference": f"Patient/{first}"}, "type": "replaces"} in kept["link"]
    assert {i["value"] for i in kept["identifier"]} >= {i["value"] for i in retired["identifier"]}
    closed = fhir.get(f"/Task/{task}").json()
    assert closed["status"] == "completed" and closed["businessStatus"]["text"] == "merged"
    proof = fhir.get("/Provenance", params={"target": f"Task/{task}"}).json()["entry"][0]["resource"]
    assert any(a["who"].get("reference") == operator.practitioner for a in proof["agent"])
    assert f"review-{task}" not in agent.get("/app/operations").text


def test_rejecting_a_duplicate_keeps_the_records_apart(hub_url, pg_url, fhir):
    first, second, task = review_case(fhir)
    coordinator = add_user(pg_url, role="coordinator")
    agent = workspace(hub_url, coordinator.username)
    page = agent.get("/app/worklist")
    assert f"review-{task}" in page.text
    assert agent.post(f"/app/reviews/{task}", data={"csrf_token": csrf_of(page.text),
                                                     "decision": "keep-apart"}).status == 303
    assert "link" not in fhir.get(f"/Patient/{first}").json()
    assert fhir.get(f"/Patient/{first}").json().get("active", True) is True
    assert fhir.get(f"/Task/{task}").json()["businessStatus"]["text"] == "kept apart"


def test_every_form_refuses_a_wrong_csrf_token(hub_url, pg_url, fhir):
    _, _, task = review_case(fhir)
    agent = workspace(hub_url, add_user(pg_url, role="operator").username)
    for path, form in ((f"/app/reviews/{task}", {"decision": "merge"}), ("/app/plans/any", {"version": "1"}),
                       ("/app/goals/any/progress", {"version": "1"}), ("/app/operations/replay", {"letter": "x"}),
                       ("/app/sign-out", {})):
        answer = agent.post(path, data={"csrf_token": "forged", **form})
        assert answer.status == 403, path
    assert fhir.get(f"/Task/{task}").json()["status"] == "requested"
    assert agent.get("/app").status == 200  # still signed in: the forged sign-out did nothing


def test_operations_is_for_operators_only(hub_url, pg_url):
    agent = workspace(hub_url, add_user(pg_url, role="coordinator").username)
    answer = agent.get("/app/operations")
    assert answer.status == 403 and "Not available to your role" in answer.text


def test_a_session_idle_too_long_ends(hub_url, pg_url, hub_api):
    agent = workspace(hub_url, add_user(pg_url).username)
    idle = hub_api.settings.session_idle_timeout_s
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE browser_session SET last_seen_at = now() - make_interval(secs => %s + 1)"
                     " WHERE session_hash IN (SELECT session_hash FROM browser_session ORDER BY created_at DESC"
                     " LIMIT 2)", (idle,))
    answer = agent.get("/app")
    assert answer.status == 303 and answer.location.startswith("/app/sign-in")


def test_sign_in_only_returns_to_workspace_pages():
    from hub.web.signin import safe_next

    assert safe_next("/app\\..\\evil") == "/app"
    assert safe_next("https://evil.example/") == "/app" and safe_next("//evil.example") == "/app"
    assert safe_next("/app/people/1?x=2") == "/app/people/1?x=2"


def test_a_person_who_did_not_share_is_not_shown(hub_url, pg_url, fhir):
    """A page never shows what the API would hide: a charity worker opening the record, plan or
    goal of someone who shared nothing with that charity gets 'not found', and the page says
    nothing of what exists."""
    from tests.integration.access_cases import make_person

    person = make_person(fhir)
    plan = fhir.post("/CarePlan", json={"resourceType": "CarePlan", "status": "active", "intent": "plan",
                                        "subject": {"reference": f"Patient/{person.patient}"}}).json()["id"]
    agent = workspace(hub_url, add_user(pg_url, partner_class="charity", organisation=person.charity_number).username)
    for path in (f"/app/people/{person.patient}", f"/app/plans/{plan}", f"/app/budgets/{plan}"):
        answer = agent.get(path)
        assert answer.status == 404, path
        assert "Access" not in answer.text and "Asthma" not in answer.text
    assert "No one you may see matches" in agent.get(f"/app?find={person.patient}").text
    nhs = workspace(hub_url, add_user(pg_url).username)  # the NHS, by default, sees the record
    assert "Asthma" in nhs.get(f"/app/people/{person.patient}").text


def test_pages_leave_no_personal_data_in_logs(hub_url, pg_url, fhir, caplog):
    """The pages call the API in-process with search values in URLs (an NHS number typed into
    'find a person'): none of it may reach a log."""
    import logging

    from tests import factories

    nhs = factories.test_nhs_number()
    assert fhir.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Zebedee-Logless"}],
                                       "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number",
                                                       "value": nhs}]}).status_code == 201
    agent = workspace(hub_url, add_user(pg_url).username)
    caplog.set_level(logging.DEBUG)
    found = agent.get(f"/app?find={nhs}")
    assert "Zebedee-Logless" in found.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert nhs not in logged and "Zebedee-Logless" not in logged
