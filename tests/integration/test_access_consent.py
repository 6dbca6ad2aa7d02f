"""Consent enforced over the real API: what each partner sees of a person follows their
record-sharing Consent (or the configured default), on read, search (results and totals),
_include, history, $everything and writes, and a withdrawal takes effect on the next request."""
from __future__ import annotations

import httpx
import pytest

from hub.fhir.jsontext import dumps
from tests.integration.access_cases import (
    JSON,
    OPT_IN,
    give_consent,
    ids_in,
    lead_charity_consent,
    make_person,
    permit,
)
from tests.integration.conftest import bearer

READ_ALL = ["system/*.rs"]


def without_provenance(bundle: dict) -> set[str]:
    """The bundle's resources apart from Provenance, having checked that each Provenance names
    only resources in the bundle (a Provenance is exactly as private as what it is about)."""
    found = ids_in(bundle)
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Provenance":
            targets = {t["reference"].split("/_history")[0] for t in resource["target"]}
            assert targets <= found, targets
    return {i for i in found if not i.startswith("Provenance/")}


@pytest.fixture()
def person(fhir):
    return make_person(fhir)


def charity(fhir_as, person, **claims):
    claims.setdefault("scopes", READ_ALL)
    return fhir_as(partner_class="charity", organisation=person.charity_number, **claims)


def test_charity_without_consent_sees_nothing_of_the_person(fhir_as, person):
    client = charity(fhir_as, person)
    assert client.get(f"/{person.ids['patient']}").status_code == 404
    assert client.get(f"/{person.ids['goal']}").status_code == 404
    found = client.get("/Goal", params={"patient": person.patient}).json()
    assert found["total"] == 0 and "entry" not in found
    # Records outside anyone's compartment stay readable with the scope.
    assert client.get(f"/Organization/{person.charity}").status_code == 200


def test_lead_charity_sees_exactly_the_consented_parts(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    client = charity(fhir_as, person)
    assert client.get(f"/{person.ids['patient']}").status_code == 200
    assert client.get(f"/{person.ids['goal']}").status_code == 200
    for hidden in ("condition", "flag", "observation", "carer"):
        r = client.get(f"/{person.ids[hidden]}")
        assert r.status_code == 404, hidden  # as if absent: existence is itself sensitive
        assert r.json()["issue"][0]["code"] == "not-found"


def test_wrong_organisation_of_the_right_class_sees_nothing(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    other = fhir_as(partner_class="charity", organisation="1999999", scopes=READ_ALL)
    assert other.get(f"/{person.ids['patient']}").status_code == 404
    assert other.get(f"/{person.ids['goal']}").status_code == 404


def test_consent_withdrawn_mid_session_applies_to_the_next_request(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    client = charity(fhir_as, person)  # one token, issued while consent stood
    assert client.get(f"/{person.ids['goal']}").status_code == 200
    lead_charity_consent(recorder, person, status="inactive")
    assert client.get(f"/{person.ids['goal']}").status_code == 404
    assert client.get("/Goal", params={"patient": person.patient}).json()["total"] == 0
    lead_charity_consent(recorder, person)  # given again
    assert client.get(f"/{person.ids['goal']}").status_code == 200
    assert recorder.delete(f"/Consent/{person.consent}").status_code == 204
    assert client.get(f"/{person.ids['goal']}").status_code == 404


def test_search_never_leaks_a_total(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    client = charity(fhir_as, person)
    for res_type in ("Condition", "Flag", "Observation"):
        params = {"patient": person.patient}
        assert fhir.get(f"/{res_type}", params={**params, "_summary": "count"}).json()["total"] == 1
        assert client.get(f"/{res_type}", params={**params, "_summary": "count"}).json()["total"] == 0
        page = client.get(f"/{res_type}", params={**params, "_count": 1, "_total": "accurate"}).json()
        assert page["total"] == 0 and "entry" not in page
    # A second goal in a part the charity may not see: totals count only what the page may show.
    fhir.put(f"/Goal/mh-{person.patient}", headers=JSON, content=dumps({
        "resourceType": "Goal", "id": f"mh-{person.patient}", "lifecycleStatus": "active",
        "category": [{"text": "Mental health"}], "description": {"text": "Sleep better"},
        "subject": {"reference": f"Patient/{person.patient}"}}))
    assert fhir.get("/Goal", params={"patient": person.patient, "_summary": "count"}).json()["total"] == 2
    page = client.get("/Goal", params={"patient": person.patient, "_count": 1}).json()
    assert page["total"] == 1 and ids_in(page) == {person.ids["goal"]}
    assert not any(link["relation"] == "next" for link in page.get("link", []))


def test_include_and_revinclude_add_only_what_may_be_seen(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    client = charity(fhir_as, person)
    page = client.get("/Patient", params={"_id": person.patient, "_revinclude": "*"}).json()
    assert without_provenance(page) == {person.ids["patient"], person.ids["goal"]}
    everything_as_admin = fhir.get("/Patient", params={"_id": person.patient, "_revinclude": "*"}).json()
    assert person.ids["condition"] in ids_in(everything_as_admin)
    # _include through a type the scopes do not allow reading is refused silently (not added).
    goal_only = charity(fhir_as, person, scopes=["system/Goal.rs"])
    page = goal_only.get("/Goal", params={"patient": person.patient, "_include": "Goal:subject"}).json()
    assert ids_in(page) == {person.ids["goal"]}


def test_history_follows_consent(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    client = charity(fhir_as, person)
    assert client.get(f"/{person.ids['condition']}/_history").status_code == 404
    assert client.get(f"/{person.ids['condition']}/_history/1").status_code == 404
    assert client.get(f"/{person.ids['goal']}/_history").json()["total"] == 1
    history = client.get("/Condition/_history", params={"_count": 100}).json()
    assert person.ids["condition"] not in ids_in(history)
    system = client.get("/_history", params={"_count": 1000}).json()
    seen = {e["fullUrl"].split("/fhir/")[1] for e in system.get("entry", [])}
    assert person.ids["goal"] in seen and person.ids["flag"] not in seen


def test_everything_returns_only_the_visible_record(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    client = charity(fhir_as, person)
    mine = client.get(f"/Patient/{person.patient}/$everything", params={"_count": 100}).json()
    assert without_provenance(mine) == {person.ids["patient"], person.ids["goal"]}
    assert mine["total"] == len(ids_in(mine))
    full = fhir.get(f"/Patient/{person.patient}/$everything", params={"_count": 100}).json()
    assert {person.ids["condition"], person.ids["flag"], person.ids["observation"], f"Consent/{person.consent}"} <= ids_in(full)
    stranger = fhir_as(partner_class="charity", organisation="1888888", scopes=READ_ALL)
    assert stranger.get(f"/Patient/{person.patient}/$everything").status_code == 404


def test_writes_only_into_parts_shared(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    client = charity(fhir_as, person, scopes=["system/*.cruds"])
    subject = {"reference": f"Patient/{person.patient}"}
    goal = {"resourceType": "Goal", "lifecycleStatus": "proposed", "description": {"text": "Join a club"},
            "subject": subject}
    assert client.post("/Goal", content=dumps(goal), headers=JSON).status_code == 201
    condition = {"resourceType": "Condition", "subject": subject, "code": {"text": "Back pain"}}
    r = client.post("/Condition", content=dumps(condition), headers=JSON)
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
    # Nor may it overwrite or delete what it cannot see, nor grant itself more.
    cond_id = person.ids["condition"].split("/")[1]
    r = client.put(f"/{person.ids['condition']}", headers=JSON, content=dumps(
        {"resourceType": "Condition", "id": cond_id, "subject": subject, "code": {"text": "x"},
         "meta": {"tag": [{"system": "https://ipc-hub.example.org/fhir/CodeSystem/ipc-record-part",
                           "code": "care-support-plan"}]}}))
    # To it the Condition is absent (issue 20): not found, and a delete deletes nothing.
    assert r.status_code == 404 and r.json()["issue"][0]["code"] == "not-found"
    assert client.delete(f"/{person.ids['condition']}").status_code == 204
    assert fhir.get(f"/{person.ids['condition']}").status_code == 200  # and nothing was deleted
    assert fhir.get(f"/{person.ids['condition']}").json()["code"]["text"] == "Asthma"
    # Its Consent is hidden from it too (the `consent` part is not shared): absent, to it.
    r = client.put(f"/Consent/{person.consent}", headers=JSON,
                   content=fhir.get(f"/Consent/{person.consent}").content)
    assert r.status_code == 404 and r.json()["issue"][0]["code"] == "not-found"


def test_defaults_for_a_person_without_consent(fhir, fhir_as, person, start_api, token_for):
    # NHS direct care (any NHS organisation) sees the record, a local authority who the person
    # is, other classes nothing.
    gp = fhir_as(partner_class="nhs", organisation="A12345", scopes=READ_ALL)
    assert gp.get(f"/{person.ids['flag']}").status_code == 200
    council = fhir_as(partner_class="local-authority", scopes=READ_ALL)
    assert council.get(f"/{person.ids['patient']}").status_code == 200
    assert council.get(f"/{person.ids['goal']}").status_code == 404
    assert fhir_as(partner_class="defence", scopes=READ_ALL).get(f"/{person.ids['patient']}").status_code == 404
    assert charity(fhir_as, person).get(f"/{person.ids['patient']}").status_code == 404
    # The defaults are configuration.
    api = start_api(consent_defaults="nhs=demographics;local-authority=demographics,care-support-plan")
    token = token_for(partner_class="local-authority", scopes=READ_ALL)
    with httpx.Client(base_url=f"{api.url}/fhir", headers=bearer(token)) as c:
        assert c.get(f"/{person.ids['goal']}").status_code == 200
        assert c.get(f"/{person.ids['condition']}").status_code == 404
    with httpx.Client(base_url=f"{api.url}/fhir", headers=bearer(token_for(partner_class="nhs", scopes=READ_ALL))) as c:
        assert c.get(f"/{person.ids['patient']}").status_code == 200
        assert c.get(f"/{person.ids['flag']}").status_code == 404


def test_a_consent_speaks_for_the_partners_it_names(recorder, fhir, fhir_as, person):
    lead_charity_consent(recorder, person)
    icb = fhir_as(partner_class="nhs", organisation=person.icb_code, scopes=READ_ALL)
    assert icb.get(f"/{person.ids['condition']}").status_code == 200
    assert icb.get(f"/{person.ids['flag']}").status_code == 404  # named: only what is permitted
    gp = fhir_as(partner_class="nhs", organisation="B81011", scopes=READ_ALL)
    assert gp.get(f"/{person.ids['flag']}").status_code == 200  # not named: direct-care default
    # A class-wide provision names every organisation of the class; a deny provision wins.
    give_consent(recorder, person, [permit("nhs", ["demographics", "health"]),
                                permit("nhs", ["health"], person.icb, kind="deny")])
    assert gp.get(f"/{person.ids['flag']}").status_code == 404
    assert gp.get(f"/{person.ids['condition']}").status_code == 200
    assert icb.get(f"/{person.ids['condition']}").status_code == 404
    assert icb.get(f"/{person.ids['patient']}").status_code == 200


def test_other_consents_do_not_change_access(fhir, fhir_as, person):
    treatment = {"resourceType": "Consent", "id": f"treat-{person.patient}", "status": "active",
                 "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                       "code": "treatment"}]},
                 "category": [{"text": "Treatment"}], "patient": {"reference": f"Patient/{person.patient}"},
                 "policyRule": OPT_IN,
                 "provision": {"type": "permit", "provision": [permit("charity", ["health"])]}}
    assert fhir.put(f"/Consent/{treatment['id']}", content=dumps(treatment), headers=JSON).status_code == 201
    client = charity(fhir_as, person)
    assert client.get(f"/{person.ids['condition']}").status_code == 404
    gp = fhir_as(partner_class="nhs", organisation="C81011", scopes=READ_ALL)
    assert gp.get(f"/{person.ids['condition']}").status_code == 200


def test_an_actor_the_hub_cannot_resolve_grants_nobody(recorder, fhir, fhir_as, person):
    provision = permit("charity", ["demographics", "care-support-plan"])
    provision["actor"][0]["reference"] = {"reference": "https://elsewhere.example/fhir/Organization/1"}
    give_consent(recorder, person, [provision])
    assert charity(fhir_as, person).get(f"/{person.ids['patient']}").status_code == 404
