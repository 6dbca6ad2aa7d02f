"""The person and their family, finished (issue 18), over real HTTP against the real API and
PostgreSQL, with real sign-ins (the hub's authorization page, a citizen account, the token
endpoint): the trail of who looked leaves out people's own visits in the query (`agent-role:not`),
paging still reaching the organisations'; the withheld purposes are an operator's setting; and a
parent acting for two children signs in once, chooses whose record to open (SMART patient
selection at launch), and in each record sees exactly what that child's delegation allows."""
from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from datetime import date

import httpx
import pytest
from psycopg import AsyncConnection

from hub.api.app import create_app
from hub.auth.citizens import CLI, add_record
from hub.store.audit import TrailSettingError
from tests.integration.conftest import api_settings
from tests.integration.signin import Agent, add_app, add_user, authorize_url, form_of, pkce, query_of, run, sign_in
from tests.integration.test_person_access import (
    PASSWORD,
    PATIENT_APP,
    REDIRECT,
    citizen,
    two_people,  # noqa: F401 (a fixture)
    delegation,
    evidence,
    related,
    with_birth_date,
)
from tests.integration.test_auth_cli import IPC_HUB
from tests.integration.test_person_pages import signed_in
from tests.integration.test_workspace_pages import csrf_of, workspace
from tests.pipeline.conftest import wait_for

pytestmark = pytest.mark.integration

PARTNER = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-consent-partner"
SCOPE = "openid fhirUser launch/patient patient/*.rs patient/AuditEvent.rs"


def _token(hub_url: str, app, code: str, verifier: str) -> dict:
    answer = httpx.post(f"{hub_url}/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                       "redirect_uri": REDIRECT, "client_id": app.record.client_id,
                                                       "code_verifier": verifier})
    assert answer.status_code == 200, answer.text
    return answer.json()


def launch(hub_url: str, audience: str, app, username: str) -> dict:
    """A patient launch by a citizen account with one record: its token response."""
    agent = Agent(hub_url)
    try:
        verifier, challenge = pkce()
        answer = sign_in(agent, authorize_url(hub_url, app, REDIRECT, audience=audience, challenge=challenge,
                                              scope=SCOPE), username, PASSWORD)
        assert answer.status == 302 and answer.location.startswith(REDIRECT), answer.text[:300]
    finally:
        agent.close()
    return _token(hub_url, app, query_of(answer.location)["code"], verifier)


def bearer(token: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/fhir+json"}


def events(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "AuditEvent"]


def roles(event: dict) -> set[str]:
    return {c["code"] for agent in event["agent"] for concept in agent.get("role") or [] for c in concept["coding"]}


# --- who has looked: the person's own visits left out in the query ------------------------------------

def test_the_trail_leaves_out_peoples_own_visits_in_the_query_and_pages_to_the_organisations(
        hub_url, hub_api, pg_url, fhir_as, two_people):
    mine, _ = two_people
    gp = fhir_as(partner_class="nhs", organisation="B86001", scopes=["system/*.rs"], client_id="gp-practice-app")
    assert gp.get(f"/{mine.ids['goal']}").status_code == 200
    app = add_app(pg_url, REDIRECT, scopes=PATIENT_APP)
    me = bearer(launch(hub_url, hub_api.settings.token_audience(), app,
                       citizen(pg_url, patient=mine.patient).username))
    for _ in range(8):  # the person reads their own record, again and again, after the GP did
        assert httpx.get(f"{hub_url}/fhir/Patient/{mine.patient}", headers=me).status_code == 200
    trail = f"{hub_url}/fhir/AuditEvent"

    def everything() -> list[dict]:
        return events(httpx.get(trail, headers=me, params={"patient": mine.patient, "_count": "100"}).json())

    wait_for(lambda: sum("person" in roles(e) for e in everything()) >= 8 and
             any("gp-practice-app" in json.dumps(e) for e in everything()), 30, "the reads in the trail")
    # Unfiltered, the person's own visits fill the first page and push the GP's off it.
    first = events(httpx.get(trail, headers=me, params={"patient": mine.patient, "_count": "5"}).json())
    assert len(first) == 5 and all("person" in roles(e) for e in first)
    # With the criterion, in the query: only organisations' visits, the GP's on the first page,
    # the total counting none of the person's, and paging links keeping the criterion.
    answer = httpx.get(trail, headers=me, params={"patient": mine.patient, "agent-role:not": f"{PARTNER}|person",
                                                  "_count": "1"}).json()
    found = events(answer)
    assert found and not any("person" in roles(e) for e in found)
    organisations = [e for e in everything() if "person" not in roles(e)]
    assert answer["total"] == len(organisations) >= 1
    seen = list(found)
    link = next((lk["url"] for lk in answer.get("link", []) if lk["relation"] == "next"), None)
    while link:
        assert "agent-role%3Anot" in link or "agent-role:not" in link, link
        page = httpx.get(link, headers=me).json()
        seen += events(page)
        link = next((lk["url"] for lk in page.get("link", []) if lk["relation"] == "next"), None)
    assert any("gp-practice-app" in json.dumps(e) for e in seen)
    assert not any("person" in roles(e) for e in seen)
    # A token of another system matches nothing; an unsupported modifier is refused, not ignored.
    other = httpx.get(trail, headers=me, params={"patient": mine.patient, "agent-role": "http://other|person",
                                                 "_summary": "count"}).json()
    assert other["total"] == 0
    refused = httpx.get(trail, headers=me, params={"patient": mine.patient, "agent-role:exact": "person"})
    assert refused.status_code == 400 and refused.json()["resourceType"] == "OperationOutcome"


# --- the withheld purposes: an operator's setting ------------------------------------------------------

def test_the_withheld_purposes_are_an_operator_setting(hub_url, hub_api, start_api, pg_url, signing_key_file,
                                                       fhir_as, token_for, two_people):
    mine, _ = two_people
    enquiry = fhir_as(partner_class="nhs", organisation="QT2", scopes=["system/*.rs"], client_id="safety-lead",
                      purpose_of_use="PATSFTY")
    assert enquiry.get(f"/Patient/{mine.patient}").status_code == 200
    law = fhir_as(partner_class="nhs", organisation="QT3", scopes=["system/*.rs"], client_id="legal-team",
                  purpose_of_use="HLEGAL")
    assert law.get(f"/Patient/{mine.patient}").status_code == 200
    person = {"Authorization": "Bearer " + token_for(
        partner_class="nhs", organisation=f"citizen-{uuid.uuid4().hex[:6]}", scopes=["patient/*.rs", "patient/AuditEvent.rs"],
        user=f"Patient/{mine.patient}", user_role="person", patient=mine.patient)}
    narrower = start_api(person_trail_withheld_purposes="HLEGAL")

    def shown(base: str) -> str:
        return json.dumps(httpx.get(f"{base}/fhir/AuditEvent", headers=person,
                                    params={"patient": mine.patient, "_count": "100"}).json())

    wait_for(lambda: "safety-lead" in shown(narrower.url), 30, "the safeguarding lead's read, shown by the setting")
    assert "legal-team" not in shown(narrower.url)
    assert "safety-lead" not in shown(hub_url) and "legal-team" not in shown(hub_url)  # the default withholds both
    with pytest.raises(TrailSettingError):
        create_app(api_settings(pg_url, signing_key_file, person_trail_withheld_purposes="patsfty"), pg_url)


# --- a parent acting for two children ---------------------------------------------------------------

def test_a_parent_of_two_chooses_whose_record_and_each_childs_delegation_applies(
        hub_url, hub_api, start_api, pg_url, fhir, recorder, two_people):
    first, second = two_people
    with_birth_date(fhir, first, f"{date.today().year - 5}-05-01")
    with_birth_date(fhir, second, f"{date.today().year - 9}-05-01")
    parent_of_first, parent_of_second = related(fhir, first), related(fhir, second)
    for child, proxy, parts in ((first, parent_of_first, ["demographics", "care-support-plan"]),
                                (second, parent_of_second, ["demographics"])):
        made = recorder.post("/Consent", content=json.dumps(delegation(child, proxy, parts,
                                                                       document=evidence(fhir, child))),
                             headers={"Content-Type": "application/fhir+json"})
        assert made.status_code == 201, made.text
    parent = citizen(pg_url, related_person=parent_of_first)
    themselves = citizen(pg_url, patient=first.patient)

    async def link() -> tuple:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return (await add_record(conn, username=parent.username, related_person=parent_of_second, linked_by=CLI),
                    await add_record(conn, username=parent.username, related_person=parent_of_second, linked_by=CLI),
                    await add_record(conn, username=themselves.username,
                                     related_person=parent_of_second, linked_by=CLI))

    added, again, not_a_proxy = run(link())
    assert added[0] is not None and added[1].patient_id == second.patient, added
    assert again[0] is None and "already opens" in again[2]
    assert not_a_proxy[0] is None and "not an account acting for someone" in not_a_proxy[2]

    app = add_app(pg_url, REDIRECT, scopes=PATIENT_APP + " offline_access")
    audience = hub_api.settings.token_audience()
    scope = SCOPE + " offline_access"
    agent = Agent(hub_url)
    try:
        verifier, challenge = pkce()
        url = authorize_url(hub_url, app, REDIRECT, audience=audience, challenge=challenge, scope=scope)
        picker = sign_in(agent, url, parent.username, PASSWORD)
        assert picker.status == 200 and "Whose record do you want to see?" in picker.text, picker.text[:300]
        assert f'value="{first.patient}"' in picker.text and f'value="{second.patient}"' in picker.text
        action, csrf = form_of(picker.text)
        # a record the account does not open is refused, and the choice asked again
        stranger = agent.post(action, data={"csrf_token": csrf, "launch_patient": "not-" + first.patient})
        assert stranger.status == 400 and "Choose one of the people listed" in stranger.text
        chosen = agent.post(action, data={"csrf_token": csrf, "launch_patient": second.patient})
        assert chosen.status == 302 and chosen.location.startswith(REDIRECT), chosen.text[:300]
        token = _token(hub_url, app, query_of(chosen.location)["code"], verifier)
        # a second launch in the same sign-in asks only whose record, then opens the first child's
        verifier2, challenge2 = pkce()
        again_page = agent.get(authorize_url(hub_url, app, REDIRECT, audience=audience, challenge=challenge2,
                                             scope=scope, state="st-2"))
        assert again_page.status == 200 and "Whose record" in again_page.text
        action, csrf = form_of(again_page.text)
        other = agent.post(action, data={"csrf_token": csrf, "launch_patient": first.patient})
        token_first = _token(hub_url, app, query_of(other.location)["code"], verifier2)
    finally:
        agent.close()

    assert token["patient"] == second.patient and token_first["patient"] == first.patient
    as_second, as_first = bearer(token), bearer(token_first)
    fhir_url = f"{hub_url}/fhir"
    # The second child's delegation: demographics only; nothing of the first child on that token.
    assert httpx.get(f"{fhir_url}/Patient/{second.patient}", headers=as_second).status_code == 200
    assert httpx.get(f"{fhir_url}/{second.ids['goal']}", headers=as_second).status_code == 404
    assert httpx.get(f"{fhir_url}/Patient/{first.patient}", headers=as_second).status_code == 404
    # The first child's delegation: the plan too.
    assert httpx.get(f"{fhir_url}/{first.ids['goal']}", headers=as_first).status_code == 200
    assert httpx.get(f"{fhir_url}/Patient/{second.patient}", headers=as_first).status_code == 404
    # The refresh token of a launch keeps its choice.
    refreshed = httpx.post(f"{hub_url}/auth/token", data={"grant_type": "refresh_token",
                                                          "refresh_token": token["refresh_token"],
                                                          "client_id": app.record.client_id}).json()
    assert refreshed["patient"] == second.patient, refreshed
    # Each delegation's own rules, per person: where a parent's say passes at 8, the nine-year-old's
    # record closes to the parent and the five-year-old's stays open.
    younger = start_api(proxy_passes_at_age=8).url
    assert httpx.get(f"{younger}/fhir/Patient/{second.patient}", headers=as_second).status_code == 404
    assert httpx.get(f"{younger}/fhir/Patient/{first.patient}", headers=as_first).status_code == 200


# --- the coordinator gives sign-in in the workspace ------------------------------------------------

def test_a_coordinator_links_accounts_and_records_and_ends_a_delegation_with_the_clis_checks(
        hub_url, pg_url, fhir, two_people):
    child, other = two_people
    with_birth_date(fhir, child, f"{date.today().year - 9}-05-01")
    coordinator = add_user(pg_url)  # nhs coordinator: a role HUB_CONSENT_RECORDERS authorises by default
    agent = workspace(hub_url, coordinator.username)
    base = f"/app/people/{child.patient}/access"
    try:
        page = agent.get(base)
        assert page.status == 200 and "Give sign-in" in page.text, page.text[:300]
        csrf = csrf_of(page.text)
        forged = agent.post(f"{base}/related", data={"csrf_token": "not-it", "family": "Whitfield", "role": "PRN"})
        assert forged.status == 403
        added = agent.post(f"{base}/related", data={"csrf_token": csrf, "given": "Pat", "family": "Whitfield",
                                                    "role": "PRN"})
        assert added.status == 303, added.text[:300]
        parent = fhir.get("/RelatedPerson", params={"patient": f"Patient/{child.patient}"}).json()["entry"][-1]["resource"]["id"]
        # the same checks as the CLI: the user name's form, a RelatedPerson of this person only,
        # and how the coordinator checked who they are
        unchecked = agent.post(f"{base}/account", data={"csrf_token": csrf, "who": parent, "username": "pat.w"})
        assert unchecked.status == 400 and "Say how you checked" in unchecked.text
        spaced = agent.post(f"{base}/account", data={"csrf_token": csrf, "who": parent, "username": "pat w",
                                                     "checked": "photo-id"})
        assert spaced.status == 400 and "one word" in spaced.text
        elsewhere = related(fhir, other)
        wrong = agent.post(f"{base}/account", data={"csrf_token": csrf, "who": elsewhere,
                                                    "username": f"p-{uuid.uuid4().hex[:6]}", "checked": "photo-id"})
        assert wrong.status == 400 and "from the list" in wrong.text
        username = f"pat-{uuid.uuid4().hex[:6]}"
        linked = agent.post(f"{base}/account", data={"csrf_token": csrf, "who": parent, "username": username,
                                                     "name": "Pat Whitfield", "checked": "photo-id"})
        assert linked.status == 200 and "account-issued" in linked.text and username in linked.text
        password = re.search(r'id="issued-password">([^<]+)<', linked.text).group(1)
        taken = agent.post(f"{base}/account", data={"csrf_token": csrf, "who": parent, "username": username,
                                                    "checked": "known"})
        assert taken.status == 400 and "already exists" in taken.text
        # the link is audited: who, on what authority, how they checked
        audited = wait_for(lambda: _account_audit(pg_url, child.patient), 10, "the link's audit row")
        assert audited == (f"Practitioner/{coordinator.practitioner_id}", "QT1",
                           "https://ipc-hub.example.org/fhir/consent-authority#authorised-role",
                           f"RelatedPerson/{parent}", True)
        # a delegation: evidence required; written through the API on the coordinator's authority
        bare = agent.post(f"{base}/delegation", data={"csrf_token": csrf, "related": parent, "role": "PRN",
                                                      "parts": ["care-support-plan"]})
        assert bare.status == 400 and "evidence" in bare.text
        made = agent.post(f"{base}/delegation", data={"csrf_token": csrf, "related": parent, "role": "PRN",
                                                      "parts": ["demographics", "care-support-plan", "safeguarding"],
                                                      "evidence": "Birth certificate seen", "verified_with": "related"})
        assert made.status == 303, made.text[:300]
        consent = fhir.get("/Consent", params={"patient": f"Patient/{child.patient}", "status": "active",
                                               "category": "https://ipc-hub.example.org/fhir/CodeSystem/ipc-plan-category|proxy-delegation"}
                           ).json()["entry"][-1]["resource"]
        parts = {c["coding"][0]["code"] for c in consent["provision"]["code"]}
        assert parts == {"demographics", "care-support-plan"}  # safeguarding is never delegated
        # the parent signs in and sees the child's plan
        parent_agent = signed_in(hub_url, username, password)
        assert child.ids["goal"].split("/")[1] in parent_agent.get("/me").text
        # the coordinator ends it; the parent's next request is refused
        page = agent.get(base)
        ended = agent.post(f"{base}/delegation/{consent['id']}/end", data={"csrf_token": csrf_of(page.text)})
        assert ended.status == 303, re.search(r"access-error\">([^<]*)", ended.text)
        assert "You cannot see this record now" in parent_agent.get("/me").text
        assert fhir.get(f"/Consent/{consent['id']}").json()["status"] == "inactive"
        parent_agent.close()
    finally:
        agent.close()


def test_only_a_role_authorised_to_record_consent_gives_sign_in(hub_url, pg_url, fhir, two_people):
    child, _ = two_people
    agent = workspace(hub_url, add_user(pg_url, role="commissioner").username)
    try:
        page = agent.get(f"/app/people/{child.patient}/access")
        assert page.status == 200 and "not-authorised" in page.text and "Give sign-in" not in page.text
        refused = agent.post(f"/app/people/{child.patient}/access/account", data={
            "csrf_token": csrf_of(page.text), "who": "patient", "username": f"x-{uuid.uuid4().hex[:6]}",
            "checked": "photo-id"})
        assert refused.status == 403
    finally:
        agent.close()

    async def count() -> int:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT count(*) FROM hub_user WHERE patient_id = %s", (child.patient,))
            return (await cur.fetchone())[0]
    assert run(count()) == 0


def _account_audit(pg_url: str, patient_id: str):
    async def go():
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT user_ref, organisation, policy, entities[1], query LIKE '%%identity-checked=photo-id%%' "
                "FROM audit_event WHERE kind = 'account' AND %s = ANY(patients)", (patient_id,))
            return await cur.fetchone()
    return run(go())


def test_the_cli_lets_a_proxys_account_open_another_record_with_the_same_checks(pg_url, fhir, two_people):
    first, second = two_people
    parent = citizen(pg_url, related_person=related(fhir, first))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k == "HUB_ID_KEY_FILE"}
    env["HUB_DATABASE_URL"] = pg_url

    def link(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([IPC_HUB, "users", "link-person", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    other = related(fhir, second)
    done = link(parent.username, "--related-person", other)
    assert done.returncode == 0 and f"now also opens Patient/{second.patient}" in done.stdout, done.stderr
    again = link(parent.username, "--related-person", other)
    assert again.returncode == 2 and "already opens that person's record" in again.stderr
    missing = link(parent.username, "--related-person", "no-such-person")
    assert missing.returncode == 2 and "is not in the record" in missing.stderr
