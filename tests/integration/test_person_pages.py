"""The person's own pages (`/me`, issue 18) over real HTTP against the real API, with a browser
stand-in that keeps cookies: a citizen signs in with a local account (a SMART patient launch of
the hub's own `ipc-hub-me` app), sees their goals, adds a note (CSRF checked), downloads only
their own record; someone whose delegation has ended is told so and shown nothing. The browser
tests (tests/browser/test_person.py) walk the same pages in Chromium with axe-core."""
from __future__ import annotations

import re

import pytest

from hub.fhir.jsontext import dumps
from tests.integration.access_cases import JSON, make_person
from tests.integration.signin import Agent, form_of
from tests.integration.test_person_access import PASSWORD, citizen, delegation, related

pytestmark = pytest.mark.integration


def signed_in(hub_url: str, username: str, password: str = PASSWORD) -> Agent:
    agent = Agent(hub_url)
    url = "/me"
    for _ in range(8):
        answer = agent.get(url)
        if answer.status == 200 and "Sign in to IPC Hub" in answer.text:
            action, csrf = form_of(answer.text)
            answer = agent.post(action, data={"csrf_token": csrf, "username": username, "password": password,
                                              "code": ""})
        if answer.status not in (302, 303):
            break
        url = answer.location.replace(hub_url, "")
    return agent


def test_a_citizen_reads_their_goals_adds_a_note_and_downloads_only_their_record(hub_url, pg_url, fhir):
    mine, theirs = make_person(fhir), make_person(fhir)
    agent = signed_in(hub_url, citizen(pg_url, patient=mine.patient).username)
    try:
        page = agent.get("/me")
        assert page.status == 200 and "Back to work" in page.text and "Add your own note" in page.text
        goal_id = mine.ids["goal"].split("/")[1]
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        version = re.search(rf'action="/me/goals/{goal_id}/note".*?name="version" value="(\d+)"', page.text, re.S).group(1)
        forged = agent.post(f"/me/goals/{goal_id}/note", data={"csrf_token": "not-it", "version": version,
                                                               "note": "forged"})
        assert forged.status == 403
        saved = agent.post(f"/me/goals/{goal_id}/note", data={"csrf_token": csrf, "version": version,
                                                              "note": "I rang the college today"})
        assert saved.status == 303, saved.text[:300]
        notes = fhir.get(f"/{mine.ids['goal']}").json()["note"]
        assert notes[-1]["text"] == "I rang the college today"
        assert notes[-1]["authorReference"]["reference"] == f"Patient/{mine.patient}"
        assert "forged" not in dumps(notes).decode()
        easy = agent.get("/me?view=easy-read")
        assert easy.status == 200 and "hub-easy-read" in easy.text
        download = agent.get("/me/download?format=json")
        people = {r["resource"]["id"] for r in __import__("json").loads(download.text)["entry"]
                  if r["resource"]["resourceType"] == "Patient"}
        assert people == {mine.patient}
        readable = agent.get("/me/download")
        assert readable.status == 200 and "Back to work" in readable.text and theirs.patient not in readable.text
        assert "Safeguarding concern" not in readable.text  # withheld from the person
        assert agent.get("/me/who-looked").status == 200 and agent.get("/me/sharing").status == 200
    finally:
        agent.close()


def test_a_proxy_whose_delegation_ended_is_told_and_shown_nothing(hub_url, pg_url, fhir, recorder):
    child = make_person(fhir)
    attorney = related(fhir, child, "POWATT")
    consent = delegation(child, attorney, ["care-support-plan", "demographics"], code="POWATT", end="2021-06-30")
    consent["sourceAttachment"] = {"title": "LPA registration"}
    assert recorder.post("/Consent", content=dumps(consent), headers=JSON).status_code == 201
    agent = signed_in(hub_url, citizen(pg_url, related_person=attorney).username)
    try:
        page = agent.get("/me")
        assert page.status == 403 and "You cannot see this record now" in page.text
        assert "Back to work" not in page.text
    finally:
        agent.close()


def test_the_person_reads_their_one_page_profile_and_what_is_working_on_their_plan(hub_url, pg_url, fhir,
                                                                                   hold_referenced):
    """Issue 18, "my plan and one-page profile": the profile's sections, in the plan's words and
    order, and what is working and not in each part of life, on the person's own plan page."""
    from tests.factories import ipc_plan, unique
    from tests.validation_cases import example

    person = f"Patient/{unique('p-')}"
    hold_referenced([ipc_plan(person), example("Task-veteran-action")])
    stored = fhir.post("/CarePlan", content=dumps(ipc_plan(person, stage="conversation")), headers=JSON)
    assert stored.status_code == 201, stored.text
    agent = signed_in(hub_url, citizen(pg_url, patient=person.split("/")[1]).username)
    try:
        page = agent.get("/me?view=usual")
        assert page.status == 200, page.text[:300]
        text = page.text
        headings = ["What people like and admire about me", "What is important to me", "How best to support me"]
        assert [text.index(h) for h in headings] == sorted(text.index(h) for h in headings)
        assert "Funny, stubborn in a good way, and the first to help a mate." in text
        needs = text[text.index('id="needs"'):]
        assert "Steps at the door and a bath he cannot use" in needs
        assert "No adapted laptop yet; he has not applied to university." in needs
    finally:
        agent.close()
