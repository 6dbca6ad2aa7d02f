"""Staff accounts: `ipc-hub users add|list|disable|enable|reset-password` through the real
command; a person's Practitioner and PractitionerRole in the record; what a signed-in person's
app may see (the consent rules of their organisation's partner class, exactly as for that
class's clients); AuditEvent and Provenance naming the person as well as the app."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.integration.access_cases import lead_charity_consent, make_person
from tests.integration.signin import Agent, add_app, add_user, authorize_url, pkce, query_of, sign_in
from tests.pipeline.conftest import wait_for

pytestmark = pytest.mark.integration

IPC_HUB = str(Path(sys.executable).with_name("ipc-hub"))
REDIRECT = "http://127.0.0.1:9/callback"


def users(pg_url: str, *args: str, ok: bool = True, key_file: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k == "HUB_ID_KEY_FILE"}
    env["HUB_DATABASE_URL"] = pg_url
    if key_file is not None:  # the API's signing key, which also seals TOTP secrets
        env["HUB_AUTH_SIGNING_KEY_FILE"] = str(key_file)
    done = subprocess.run([IPC_HUB, "users", *args], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def app_token(hub_url: str, audience: str, pg_url: str, username: str, password: str, code: str = "") -> dict:
    app = add_app(pg_url, REDIRECT)
    verifier, challenge = pkce()
    agent = Agent(hub_url)
    try:
        answer = sign_in(agent, authorize_url(hub_url, app, REDIRECT, audience=audience, challenge=challenge),
                         username, password, code)
        assert answer.status == 302, answer.text[:300]
        tokens = httpx.post(f"{hub_url}/auth/token", data={
            "grant_type": "authorization_code", "code": query_of(answer.location)["code"], "redirect_uri": REDIRECT,
            "client_id": app.record.client_id, "code_verifier": verifier}).json()
    finally:
        agent.close()
    return {"app": app.record.client_id, **tokens}


def test_add_list_disable_enable_reset(hub_url, hub_api, pg_url, fhir, signing_key_file):
    name = f"k.hughes-{uuid.uuid4().hex[:6]}"
    added = users(pg_url, "add", name, "--name", "Karen Hughes", "--role", "coordinator", "--partner-class", "nhs",
                  "--organisation", "QT1", "--totp", key_file=signing_key_file).stdout
    password = re.search(r"password:\s+(\S+)", added).group(1)
    secret = re.search(r"secret=([A-Z2-7]+)", added).group(1)
    practitioner = re.search(r"practitioner:\s+(Practitioner/\S+)", added).group(1)
    audience = hub_api.settings.token_audience()
    # The person is in the record: a Practitioner, and a PractitionerRole naming the organisation.
    assert fhir.get(f"/{practitioner}").json()["name"][0]["family"] == "Hughes"
    role = fhir.get("/PractitionerRole", params={"practitioner": practitioner}).json()["entry"][0]["resource"]
    assert role["organization"]["identifier"]["value"] == "QT1"
    assert {c["code"] for concept in role["code"] for c in concept["coding"]} == {"coordinator", "nhs"}
    listed = {u["username"]: u for u in json.loads(users(pg_url, "list", "--json").stdout)}
    assert listed[name]["sign_in"] == "password+totp" and "password" not in json.dumps(listed[name]).replace(
        '"password+totp"', "")
    assert app_token(hub_url, audience, pg_url, name, password, pyotp.TOTP(secret).now())["access_token"]
    users(pg_url, "disable", name)
    with pytest.raises(AssertionError):
        app_token(hub_url, audience, pg_url, name, password, pyotp.TOTP(secret).now())
    users(pg_url, "enable", name)
    reset = users(pg_url, "reset-password", name, "--no-totp").stdout
    new_password = re.search(r"password:\s+(\S+)", reset).group(1)
    assert new_password != password
    assert app_token(hub_url, audience, pg_url, name, new_password)["access_token"]


def test_add_refuses_weak_passwords_and_unknown_roles(pg_url):
    assert "12 characters" in users(pg_url, "add", "x.y", "--role", "coordinator", "--partner-class", "nhs",
                                    "--organisation", "QT1", "--password", "short", ok=False).stderr
    users(pg_url, "add", "x.z", "--role", "admin", "--partner-class", "nhs", "--organisation", "QT1", ok=False)


def test_the_user_is_named_in_audit_and_provenance(hub_url, hub_api, pg_url, fhir):
    user = add_user(pg_url, name="Alex Morgan")
    tokens = app_token(hub_url, hub_api.settings.token_audience(), pg_url, user.username, "a long demo passphrase")
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "Content-Type": "application/fhir+json"}
    created = httpx.post(f"{hub_url}/fhir/Patient", headers=headers, json={
        "resourceType": "Patient", "name": [{"family": "Audit", "given": ["Test"]}]})
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    provenance = fhir.get("/Provenance", params={"target": f"Patient/{patient_id}"}).json()["entry"][0]["resource"]
    author = next(a for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "author")
    enterer = next(a for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "enterer")
    assert author["who"]["reference"] == user.practitioner and author["onBehalfOf"]["identifier"]["value"] == "QT1"
    assert enterer["who"]["identifier"]["value"] == tokens["app"]
    auditor = {"Authorization": f"Bearer {tokens['access_token']}"}

    def trail() -> dict:
        return httpx.get(f"{hub_url}/fhir/AuditEvent", headers=auditor,
                         params={"entity": f"Patient/{patient_id}", "agent": user.practitioner}).json()

    # The audit trail is written by a background writer, off the request path: wait for it.
    wait_for(lambda: trail()["total"], 20, "the create in the audit trail")
    events = trail()
    event = events["entry"][0]["resource"]
    person = next(a for a in event["agent"] if a.get("who", {}).get("reference") == user.practitioner)
    app = next(a for a in event["agent"] if a.get("who", {}).get("identifier", {}).get("value") == tokens["app"])
    assert person["requestor"] is True and app["requestor"] is False


def test_a_charity_user_sees_exactly_what_a_charity_client_sees(recorder, hub_url, hub_api, pg_url, fhir, fhir_as):
    """Consent applies by the person's organisation and partner class, as for that class's clients."""
    person = make_person(fhir)
    lead_charity_consent(recorder, person)
    charity = add_user(pg_url, partner_class="charity", organisation=person.charity_number)
    tokens = app_token(hub_url, hub_api.settings.token_audience(), pg_url, charity.username, "a long demo passphrase")
    as_user = {"Authorization": f"Bearer {tokens['access_token']}"}
    as_client = fhir_as(partner_class="charity", organisation=person.charity_number, scopes=["system/*.rs"])
    subject = {"subject": f"Patient/{person.patient}"}
    for res_type in ("Condition", "Goal", "Flag", "Observation"):
        mine = httpx.get(f"{hub_url}/fhir/{res_type}", headers=as_user, params=subject).json()["total"]
        theirs = as_client.get(f"/{res_type}", params=subject).json()["total"]
        assert mine == theirs, res_type
    assert httpx.get(f"{hub_url}/fhir/Goal", headers=as_user, params=subject).json()["total"] == 1
    assert httpx.get(f"{hub_url}/fhir/Condition", headers=as_user, params=subject).json()["total"] == 0
    assert httpx.get(f"{hub_url}/fhir/{person.ids['condition']}", headers=as_user).status_code == 404
    assert fhir.get("/Condition", params=subject).json()["total"] == 1
