"""The person and their family through the API (issue 18), over real HTTP against the real API and
PostgreSQL: a SMART standalone patient launch by a citizen account (authlib-free: the sign-in form,
then fhirclient's own patient launch), patient scopes that never reach another person's data
(search, `_include`, `_revinclude`, history, `$everything`, writes), what is withheld from the
person (safeguarding), a proxy who sees exactly what the delegation allows and nothing once it
expires, is withdrawn or the child comes of age, who may write a delegation, and the trail of who
looked, less what is withheld."""
from __future__ import annotations

import json
import uuid
from datetime import date

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from psycopg import AsyncConnection

from hub.auth.citizens import link_citizen
from hub.fhir.jsontext import dumps
from tests.integration.access_cases import IPC, JSON, PART, Person, make_person, permit
from tests.integration.signin import Agent, add_app, add_user, authorize_url, pkce, query_of, run, sign_in
from tests.pipeline.conftest import wait_for

pytestmark = pytest.mark.integration

REDIRECT = "http://127.0.0.1:9/person-app"  # never contacted: the tests read the Location
PATIENT_APP = ("openid fhirUser profile launch/patient patient/*.cruds patient/AuditEvent.rs")
PERSON_SCOPES = ["patient/*.rs", "patient/AuditEvent.rs", "patient/Goal.u", "patient/Consent.cu", "patient/Task.c"]
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
PASSWORD = "my own long passphrase"


def citizen(pg_url: str, *, patient: str | None = None, related_person: str | None = None):
    async def go():
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return await link_citizen(conn, username=f"citizen-{uuid.uuid4().hex[:8]}", display_name="Dan Whitfield",
                                      patient=patient, related_person=related_person, password=PASSWORD)

    user, why = run(go())
    assert user is not None, why
    return user


def ids(bundle: dict, res_type: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] != "OperationOutcome"
            and (res_type is None or e["resource"]["resourceType"] == res_type)}


@pytest.fixture()
def two_people(fhir) -> tuple[Person, Person]:
    """Two people, each with a record in several parts; the first's Goal addresses the second's
    Condition (a reference across records, for `_include`)."""
    first, second = make_person(fhir), make_person(fhir)
    goal = fhir.get(f"/{first.ids['goal']}").json()
    goal["addresses"] = [{"reference": second.ids["condition"]}]
    assert fhir.put(f"/{first.ids['goal']}", content=dumps(goal), headers=JSON).status_code == 200
    return first, second


def person_client(fhir_as, who: Person) -> httpx.Client:
    return fhir_as(partner_class="nhs", organisation=f"citizen-{who.patient}", scopes=PERSON_SCOPES,
                   user=f"Patient/{who.patient}", user_role="person", patient=who.patient)


# --- signing in: a SMART standalone patient launch -------------------------------------------------

def test_a_citizen_signs_in_with_a_patient_launch_and_the_token_names_their_record(hub_url, hub_api, pg_url,
                                                                                     fhir, two_people):
    mine, theirs = two_people
    user = citizen(pg_url, patient=mine.patient)
    app = add_app(pg_url, REDIRECT, scopes=PATIENT_APP)
    audience = hub_api.settings.token_audience()
    agent = Agent(hub_url)
    try:
        verifier, challenge = pkce()
        answer = sign_in(agent, authorize_url(hub_url, app, REDIRECT, audience=audience, challenge=challenge,
                                              scope="openid fhirUser launch/patient patient/*.rs patient/AuditEvent.rs",
                                              nonce="n-1"), user.username, PASSWORD)
        assert answer.status == 302 and answer.location.startswith(REDIRECT), answer.text[:300]
        code = query_of(answer.location)["code"]
    finally:
        agent.close()
    token = httpx.post(f"{hub_url}/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                      "redirect_uri": REDIRECT, "client_id": app.record.client_id,
                                                      "code_verifier": verifier}).json()
    assert token["patient"] == mine.patient, token
    granted = token["scope"].split()
    assert {"launch/patient", "patient/*.rs", "patient/AuditEvent.rs", "openid", "fhirUser"} <= set(granted)
    assert not any(s.startswith(("user/", "system/")) for s in granted)
    keys = KeySet.import_key_set(httpx.get(f"{hub_url}/.well-known/jwks.json").json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims
    assert id_token["fhirUser"] == f"{audience}/Patient/{mine.patient}" and id_token["nonce"] == "n-1"
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    assert httpx.get(f"{hub_url}/fhir/Patient/{mine.patient}", headers=auth).status_code == 200
    assert httpx.get(f"{hub_url}/fhir/Patient/{theirs.patient}", headers=auth).status_code == 404
    # patient/*.rs reads; writing is not in what this app asked for
    assert httpx.put(f"{hub_url}/fhir/{mine.ids['goal']}", headers={**auth, **JSON},
                     content=dumps(fhir.get(f"/{mine.ids['goal']}").json())).status_code == 403


def test_staff_get_no_patient_scopes_and_a_citizen_no_user_scopes(hub_url, hub_api, pg_url, two_people):
    mine, _ = two_people
    audience = hub_api.settings.token_audience()
    patient_app = add_app(pg_url, REDIRECT, scopes=PATIENT_APP)
    staff_app = add_app(pg_url, REDIRECT)  # user/ scopes only
    staff, person = add_user(pg_url), citizen(pg_url, patient=mine.patient)
    for app, who, password, scope in ((patient_app, staff, "a long demo passphrase", "launch/patient patient/*.rs"),
                                      (staff_app, person, PASSWORD, "openid user/*.cruds")):
        agent = Agent(hub_url)
        try:
            _, challenge = pkce()
            answer = sign_in(agent, authorize_url(hub_url, app, REDIRECT, audience=audience, challenge=challenge,
                                                  scope=scope), who.username, password)
        finally:
            agent.close()
        assert answer.status == 302 and query_of(answer.location).get("error") == "invalid_scope", answer.location


def test_fhirclient_patient_launch_reads_the_persons_own_record(hub_url, pg_url, two_people):
    from fhirclient import client as fhir_client
    from fhirclient.models.goal import Goal

    mine, theirs = two_people
    user = citizen(pg_url, patient=mine.patient)
    app = add_app(pg_url, REDIRECT, public=False, scopes=PATIENT_APP)
    smart = fhir_client.FHIRClient(settings={
        "app_id": app.record.client_id, "app_secret": app.secret, "api_base": f"{hub_url}/fhir",
        "redirect_uri": REDIRECT, "scope": "launch/patient patient/*.rs openid fhirUser"})
    agent = Agent(hub_url)
    try:
        answer = sign_in(agent, smart.authorize_url, user.username, PASSWORD)
    finally:
        agent.close()
    assert answer.status == 302, answer.text[:300]
    smart.handle_callback(answer.location)
    assert smart.ready and smart.patient_id == mine.patient
    assert smart.patient.id == mine.patient
    goals = Goal.where({"_count": "50"}).perform(smart.server)
    found = {e.resource.id for e in goals.entry or []}
    assert found == {mine.ids["goal"].split("/")[1]}
    assert theirs.ids["goal"].split("/")[1] not in found


# --- the person's compartment ---------------------------------------------------------------------

def test_patient_scopes_never_reach_another_persons_data(fhir, fhir_as, two_people):
    mine, theirs = two_people
    me = person_client(fhir_as, mine)
    p, q = f"Patient/{mine.patient}", f"Patient/{theirs.patient}"
    # read and search
    assert me.get(f"/{theirs.ids['goal']}").status_code == 404
    assert me.get(f"/{theirs.ids['patient']}").status_code == 404
    assert ids(me.get("/Goal", params={"_count": "100"}).json()) == {mine.ids["goal"]}
    assert me.get("/Goal", params={"subject": q, "_summary": "count"}).json()["total"] == 0
    assert me.get("/Patient", params={"_id": f"{mine.patient},{theirs.patient}"}).json()["total"] == 1
    # _include across records, _revinclude onto the other person
    included = me.get("/Goal", params={"_include": "Goal:addresses", "_count": "100"}).json()
    assert theirs.ids["condition"] not in ids(included) and mine.ids["goal"] in ids(included)
    revincluded = me.get("/Patient", params={"_id": f"{mine.patient},{theirs.patient}",
                                             "_revinclude": "Goal:subject"}).json()
    assert ids(revincluded) == {p, mine.ids["goal"]}
    wildcard = me.get("/Condition", params={"_include": "*", "_revinclude": "*"}).json()
    assert all(not r.endswith(theirs.patient) and theirs.ids["condition"] != r for r in ids(wildcard))
    # history: instance, type, system
    assert me.get(f"/{theirs.ids['goal']}/_history").status_code == 404
    assert theirs.ids["goal"] not in ids(me.get("/Goal/_history", params={"_count": "100"}).json())
    system = ids(me.get("/_history", params={"_count": "1000"}).json())
    assert mine.ids["goal"] in system and not system & set(theirs.ids.values())
    # $everything
    assert me.get(f"/Patient/{theirs.patient}/$everything").status_code == 404
    everything = ids(me.get(f"/Patient/{mine.patient}/$everything", params={"_count": "200"}).json())
    assert {mine.ids["goal"], mine.ids["condition"], p} <= everything
    assert not everything & set(theirs.ids.values())
    # writes into someone else's record answer as if it were absent, and change nothing
    before = fhir.get(f"/{theirs.ids['goal']}").json()["meta"]["versionId"]
    their_goal = me.get(f"/{mine.ids['goal']}").json() | {"id": theirs.ids["goal"].split("/")[1],
                                                        "subject": {"reference": q}}
    their_goal.pop("addresses", None)
    refused = me.put(f"/{theirs.ids['goal']}", content=dumps(their_goal), headers=JSON)
    assert refused.status_code in (404, 422) and theirs.patient not in refused.text.replace(q, ""), refused.text
    assert fhir.get(f"/{theirs.ids['goal']}").json()["meta"]["versionId"] == before
    asked = me.post("/Task", content=dumps({"resourceType": "Task", "status": "requested", "intent": "proposal",
                                            "for": {"reference": q}, "description": "review please"}),
                    headers=JSON)
    assert asked.status_code == 422, asked.text


def test_what_is_withheld_from_the_person_and_what_they_may_write(fhir_as, two_people):
    mine, _ = two_people
    me = person_client(fhir_as, mine)
    assert me.get(f"/{mine.ids['flag']}").status_code == 404  # a safeguarding Flag
    everything = ids(me.get(f"/Patient/{mine.patient}/$everything", params={"_count": "200"}).json())
    assert mine.ids["flag"] not in everything and mine.ids["observation"] in everything
    goal = me.get(f"/{mine.ids['goal']}").json()
    goal["note"] = [{"text": "I walked to the shop on my own", "authorReference": {"reference": f"Patient/{mine.patient}"}}]
    assert me.put(f"/{mine.ids['goal']}", content=dumps(goal), headers=JSON).status_code == 200
    # ...and only add notes: the goal itself, or an earlier note, is changed with the coordinator
    noted = me.get(f"/{mine.ids['goal']}").json()
    for change in ({"description": {"text": "Something else"}}, {"note": [{"text": "rewritten"}]},
                   {"lifecycleStatus": "cancelled"}):
        refused = me.put(f"/{mine.ids['goal']}", content=dumps({**noted, **change}), headers=JSON)
        assert refused.status_code == 403, change
    added = {**noted, "note": [*noted["note"], {"text": "And to the café"}]}
    assert me.put(f"/{mine.ids['goal']}", content=dumps(added), headers=JSON).status_code == 200
    assert me.get(f"/{mine.ids['goal']}").json()["description"] == noted["description"]
    # the person cannot delete, nor create what their role does not allow
    assert me.delete(f"/{mine.ids['goal']}").status_code == 403
    assert me.post("/Condition", content=dumps({"resourceType": "Condition", "code": {"text": "x"},
                                                "subject": {"reference": f"Patient/{mine.patient}"}}),
                   headers=JSON).status_code == 403


def test_the_person_changes_their_own_sharing_and_the_next_request_obeys(fhir_as, two_people):
    mine, _ = two_people
    me = person_client(fhir_as, mine)
    charity = fhir_as(partner_class="charity", organisation=mine.charity_number, scopes=["system/*.rs"])
    consent = {"resourceType": "Consent", "status": "active",
               "meta": {"profile": [IPC + "StructureDefinition/ipc-consent"]},
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "record-sharing"}]}],
               "patient": {"reference": f"Patient/{mine.patient}"}, "dateTime": "2026-01-15T10:00:00Z",
               "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "code": "OPTIN"}]},
               "provision": {"type": "deny", "provision": [permit("lead-charity", ["care-support-plan"], mine.charity)]}}
    made = me.post("/Consent", content=dumps(consent), headers=JSON)
    assert made.status_code == 201, made.text
    assert charity.get(f"/{mine.ids['goal']}").status_code == 200
    withdrawn = made.json() | {"status": "inactive"}
    assert me.put(f"/Consent/{withdrawn['id']}", content=dumps(withdrawn), headers=JSON).status_code == 200
    assert charity.get(f"/{mine.ids['goal']}").status_code == 404


# --- proxies -------------------------------------------------------------------------------------

def related(fhir, child: Person, code: str = "PRN") -> str:
    made = fhir.post("/RelatedPerson", content=dumps({
        "resourceType": "RelatedPerson", "active": True, "patient": {"reference": f"Patient/{child.patient}"},
        "relationship": [{"coding": [{"system": ROLE, "code": code}]}], "name": [{"family": "Parent"}]}), headers=JSON)
    assert made.status_code == 201, made.text
    return made.json()["id"]


def evidence(fhir, child: Person) -> str:
    made = fhir.post("/DocumentReference", content=dumps({
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{child.patient}"},
        "type": {"text": "Lasting power of attorney (health and welfare), registered"},
        "content": [{"attachment": {"contentType": "application/pdf", "title": "LPA registration"}}]}), headers=JSON)
    assert made.status_code == 201, made.text
    return made.json()["id"]


def delegation(child: Person, proxy: str, parts: list[str], *, code: str = "PRN", end: str = "2099-01-01",
               document: str | None = None, status: str = "active") -> dict:
    found = {"resourceType": "Consent", "status": status,
             "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                   "code": "patient-privacy"}]},
             "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "proxy-delegation"}]}],
             "patient": {"reference": f"Patient/{child.patient}"}, "dateTime": "2026-01-15T10:00:00Z",
             "policyRule": {"text": "Acting for the person"},
             "verification": [{"verified": True, "verifiedWith": {"reference": f"RelatedPerson/{proxy}"},
                               "verificationDate": "2026-01-15"}],
             "provision": {"type": "permit", "period": {"start": "2020-01-01", "end": end},
                           "actor": [{"role": {"coding": [{"system": ROLE, "code": code}]},
                                      "reference": {"reference": f"RelatedPerson/{proxy}"}}],
                           "code": [{"coding": [{"system": PART, "code": p}]} for p in parts]}}
    if document:
        found["sourceReference"] = {"reference": f"DocumentReference/{document}"}
    return found


def proxy_client(fhir_as, child: Person, proxy: str) -> httpx.Client:
    return fhir_as(partner_class="nhs", organisation=f"citizen-{proxy}", scopes=PERSON_SCOPES,
                   user=f"RelatedPerson/{proxy}", user_role="proxy", patient=child.patient)


def with_birth_date(fhir, person: Person, born: str) -> None:
    patient = fhir.get(f"/Patient/{person.patient}").json() | {"birthDate": born}
    assert fhir.put(f"/Patient/{person.patient}", content=dumps(patient), headers=JSON).status_code == 200


def test_a_parent_sees_exactly_what_the_delegation_allows_until_it_is_withdrawn(fhir, recorder, fhir_as, two_people):
    child, other = two_people
    with_birth_date(fhir, child, f"{date.today().year - 9}-05-01")
    parent = related(fhir, child)
    as_parent = proxy_client(fhir_as, child, parent)
    unproven = recorder.post("/Consent", content=dumps(delegation(child, parent, ["care-support-plan"])), headers=JSON)
    assert unproven.status_code == 201, unproven.text
    assert as_parent.get(f"/{child.ids['goal']}").status_code == 404  # no evidence: no delegation
    made = recorder.post("/Consent", content=dumps(delegation(child, parent, ["care-support-plan", "demographics"],
                                                              document=evidence(fhir, child))), headers=JSON)
    assert made.status_code == 201, made.text
    assert as_parent.get(f"/{child.ids['goal']}").status_code == 200
    assert as_parent.get(f"/Patient/{child.patient}").status_code == 200
    for beyond in ("condition", "observation", "carer", "flag"):  # health, mental health, carers, safeguarding
        assert as_parent.get(f"/{child.ids[beyond]}").status_code == 404, beyond
    assert as_parent.get(f"/{other.ids['goal']}").status_code == 404
    everything = ids(as_parent.get(f"/Patient/{child.patient}/$everything", params={"_count": "200"}).json())
    assert child.ids["goal"] in everything and child.ids["condition"] not in everything
    assert ids(as_parent.get("/Goal", params={"_count": "100"}).json()) == {child.ids["goal"]}
    # withdrawn: the very next request is refused
    withdrawn = made.json() | {"status": "inactive"}
    assert recorder.put(f"/Consent/{withdrawn['id']}", content=dumps(withdrawn), headers=JSON).status_code == 200
    assert as_parent.get(f"/{child.ids['goal']}").status_code == 404


def test_an_expired_delegation_gives_nothing(fhir, recorder, fhir_as, two_people):
    child, _ = two_people
    with_birth_date(fhir, child, f"{date.today().year - 9}-05-01")
    attorney = related(fhir, child, "POWATT")
    document = evidence(fhir, child)
    made = recorder.post("/Consent", content=dumps(delegation(child, attorney, ["care-support-plan"], code="POWATT",
                                                              end="2021-01-01", document=document)), headers=JSON)
    assert made.status_code == 201, made.text
    assert proxy_client(fhir_as, child, attorney).get(f"/{child.ids['goal']}").status_code == 404


def test_a_childs_proxy_passes_to_the_young_person_at_the_configured_age(fhir, recorder, fhir_as, token_for,
                                                                         start_api, two_people):
    child, _ = two_people
    with_birth_date(fhir, child, f"{date.today().year - 17}-01-01")  # 17: past the default 16
    parent, attorney = related(fhir, child), related(fhir, child, "HPOWATT")
    document = evidence(fhir, child)
    for who, code in ((parent, "PRN"), (attorney, "HPOWATT")):
        made = recorder.post("/Consent", content=dumps(delegation(child, who, ["care-support-plan"], code=code,
                                                                  document=document)), headers=JSON)
        assert made.status_code == 201, made.text
    assert proxy_client(fhir_as, child, parent).get(f"/{child.ids['goal']}").status_code == 404
    # a lasting power of attorney does not end with age
    assert proxy_client(fhir_as, child, attorney).get(f"/{child.ids['goal']}").status_code == 200
    later = start_api(proxy_passes_at_age=18)  # HUB_PROXY_PASSES_AT_AGE
    token = token_for(partner_class="nhs", organisation=f"citizen-{parent}", scopes=PERSON_SCOPES,
                      user=f"RelatedPerson/{parent}", user_role="proxy", patient=child.patient)
    assert httpx.get(f"{later.url}/fhir/{child.ids['goal']}",
                     headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_only_the_person_or_an_authorised_recorder_writes_a_delegation(fhir, recorder, fhir_as, two_people):
    child, _ = two_people
    parent = related(fhir, child)
    document = evidence(fhir, child)
    first = dumps(delegation(child, parent, ["care-support-plan", "demographics", "consent", "carers"],
                             document=document))
    assert recorder.post("/Consent", content=first, headers=JSON).status_code == 201
    as_parent = proxy_client(fhir_as, child, parent)
    assert as_parent.get(f"/Patient/{child.patient}").status_code == 200
    wider = delegation(child, parent, ["care-support-plan", "health"])
    wider["sourceAttachment"] = {"contentType": "application/pdf", "title": "LPA registration"}
    body = dumps(wider)
    assert fhir.post("/Consent", content=body, headers=JSON).status_code == 403  # a partner's system
    assert as_parent.post("/Consent", content=body, headers=JSON).status_code == 403  # widening their own
    assert as_parent.get(f"/{child.ids['condition']}").status_code == 404
    assert person_client(fhir_as, child).post("/Consent", content=body, headers=JSON).status_code == 201


# --- who has looked at my record -------------------------------------------------------------------

def test_the_person_sees_who_looked_less_what_is_withheld(fhir_as, two_people):
    mine, theirs = two_people
    gp = fhir_as(partner_class="nhs", organisation="B86001", scopes=["system/*.rs"], client_id="gp-practice-app")
    assert gp.get(f"/{mine.ids['goal']}").status_code == 200
    enquiry = fhir_as(partner_class="nhs", organisation="QT1", scopes=["system/*.rs"], client_id="safeguarding-team")
    assert enquiry.get(f"/{mine.ids['flag']}").status_code == 200
    purpose = fhir_as(partner_class="nhs", organisation="QT2", scopes=["system/*.rs"], client_id="safety-lead",
                      purpose_of_use="PATSFTY")
    assert purpose.get(f"/Patient/{mine.patient}").status_code == 200
    assert gp.get(f"/{theirs.ids['goal']}").status_code == 200
    me = person_client(fhir_as, mine)

    def trail() -> list[dict]:
        bundle = me.get("/AuditEvent", params={"patient": f"Patient/{mine.patient}", "_count": "100"}).json()
        return [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "AuditEvent"]

    events = wait_for(lambda: [e for e in trail() if "gp-practice-app" in json.dumps(e)], 30,
                      "the GP's read in the trail")
    assert events
    shown = json.dumps(trail())
    assert "safeguarding-team" not in shown and "safety-lead" not in shown
    assert theirs.patient not in shown
    # another person's trail: nothing, however asked
    other = me.get("/AuditEvent", params={"patient": f"Patient/{theirs.patient}", "_summary": "count"}).json()
    assert other["total"] == 0
