"""Issue 20's red-team cases, kept: real HTTP against the real app over the real PostgreSQL, with
clients of broad scopes so that only consent (and who may change it) stands between them and a
veteran's record. Each test is one finding's case, asserting the safe outcome."""
from __future__ import annotations

import base64
import time
import uuid

import httpx
import pytest
from psycopg import connect

from hub.fhir import ids
from hub.fhir.identifiers import CHARITY_NUMBER, NHS_NUMBER
from hub.fhir.jsontext import dumps
from tests import factories
from tests.integration.access_cases import (
    IPC,
    JSON,
    OPT_IN,
    PART,
    give_consent,
    lead_charity_consent,
    make_person,
    permit,
    verified_with,
)
from tests.integration.conftest import FULL_ACCESS

EVERYTHING = ["system/*.cruds"]
PARTS = ["demographics", "care-support-plan", "budget", "carers", "health", "armed-forces-service",
         "care-team", "social-care", "mental-health", "safeguarding"]


@pytest.fixture()
def veteran(fhir):
    """A person with an NHS number (the veteran of the red-team run) and a record in each part."""
    person = make_person(fhir)
    patient = fhir.get(f"/Patient/{person.patient}").json()
    person.nhs_number = factories.test_nhs_number()
    patient["identifier"] = [{"system": NHS_NUMBER, "value": person.nhs_number}]
    assert fhir.put(f"/Patient/{person.patient}", content=dumps(patient), headers=JSON).status_code == 200
    return person


def sharing_consent(patient: str, provisions: list[dict], **extra) -> dict:
    return {"resourceType": "Consent", "status": "active",
            "meta": {"profile": [IPC + "StructureDefinition/ipc-consent"]},
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "record-sharing"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "dateTime": "2026-01-15T10:00:00Z",
            "policyRule": OPT_IN, "provision": {"type": "deny", "provision": provisions}, **extra}


def issue(response: httpx.Response) -> dict:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


# --- 1. A partner cannot write consent for itself ------------------------------------------


def test_a_charity_cannot_grant_itself_a_veterans_record(recorder, fhir_as, veteran):
    lead_charity_consent(recorder, veteran)  # it is his lead charity: it sees who he is and his plan
    charity = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=EVERYTHING)
    assert charity.get(f"/{veteran.ids['condition']}").status_code == 404
    consent = sharing_consent(veteran.patient, [permit("charity", ["health", "mental-health", "safeguarding"],
                                                       veteran.charity)])
    refused = charity.post("/Consent", content=dumps(consent), headers=JSON)
    assert refused.status_code == 403 and issue(refused)["code"] == "forbidden", refused.text
    # Filed under `demographics` (so that its own class could write it): refused for the tag.
    consent["meta"]["tag"] = [{"system": PART, "code": "demographics"}]
    tagged = charity.post("/Consent", content=dumps(consent), headers=JSON)
    assert tagged.status_code == 422 and issue(tagged)["code"] == "business-rule"
    assert charity.get(f"/{veteran.ids['condition']}").status_code == 404


def test_a_charity_cannot_lock_the_nhs_out(recorder, fhir, fhir_as, veteran):
    lead_charity_consent(recorder, veteran)
    charity = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=EVERYTHING)
    deny = sharing_consent(veteran.patient, [permit("nhs", PARTS, kind="deny")])
    refused = charity.post("/Consent", content=dumps(deny), headers=JSON)
    assert refused.status_code == 403 and issue(refused)["code"] == "forbidden", refused.text
    assert fhir.get(f"/{veteran.ids['condition']}").status_code == 200


def test_a_council_cannot_grant_itself_every_part_with_no_consent_on_file(fhir_as, veteran):
    council = fhir_as(partner_class="local-authority", scopes=EVERYTHING)
    assert council.get(f"/{veteran.ids['flag']}").status_code == 404
    consent = sharing_consent(veteran.patient, [permit("local-authority", PARTS)])
    refused = council.put(f"/Consent/c-{veteran.patient}", content=dumps({**consent, "id": f"c-{veteran.patient}"}),
                          headers=JSON)
    assert refused.status_code == 403 and issue(refused)["code"] == "forbidden"
    assert council.get(f"/{veteran.ids['flag']}").status_code == 404


def test_an_nhs_backend_client_cannot_change_consent_either(fhir, veteran):
    """Scopes are not an authority to decide for a person: even full access records no consent."""
    consent = sharing_consent(veteran.patient, [permit("charity", PARTS)])
    refused = fhir.post("/Consent", content=dumps(consent), headers=JSON)
    assert refused.status_code == 403 and issue(refused)["code"] == "forbidden"


def test_a_backend_client_can_neither_withdraw_nor_delete_a_persons_consent(recorder, fhir, fhir_as, veteran):
    """Changing a consent includes ending it: an NHS backend client that sees the whole record
    (and the Consent) is refused 403 for a withdrawal and for a delete, over REST and in a
    transaction, and the consent keeps working; the coordinator who recorded it may withdraw it."""
    consent_id = lead_charity_consent(recorder, veteran)
    stored = fhir.get(f"/Consent/{consent_id}")
    assert stored.status_code == 200
    withdrawn = {**stored.json(), "status": "inactive"}
    assert fhir.put(f"/Consent/{consent_id}", content=dumps(withdrawn), headers=JSON).status_code == 403
    assert fhir.delete(f"/Consent/{consent_id}").status_code == 403
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "DELETE", "url": f"Consent/{consent_id}"}}]}
    assert fhir.post("", content=dumps(bundle), headers=JSON).status_code == 403
    charity = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=EVERYTHING)
    assert charity.get(f"/{veteran.ids['goal']}").status_code == 200   # still granted
    assert fhir.get(f"/Consent/{consent_id}").json()["status"] == "active"
    assert recorder.delete(f"/Consent/{consent_id}").status_code == 204
    assert charity.get(f"/{veteran.ids['goal']}").status_code == 404   # withdrawn: the class default again


def test_a_coordinator_records_consent_only_with_the_conversation_and_it_is_audited(recorder, fhir_as, veteran,
                                                                                     pg_url):
    consent = sharing_consent(veteran.patient, [permit("lead-charity", ["care-support-plan"], veteran.charity)])
    unverified = recorder.post("/Consent", content=dumps(consent), headers=JSON)
    assert unverified.status_code == 422 and issue(unverified)["code"] == "business-rule"
    assert issue(unverified)["expression"] == ["Consent.verification"]
    consent["verification"] = [verified_with(veteran.patient)]
    made = recorder.post("/Consent", content=dumps(consent), headers=JSON)
    assert made.status_code == 201, made.text
    charity = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=EVERYTHING)
    assert charity.get(f"/{veteran.ids['goal']}").status_code == 200
    consent_id = made.json()["id"]
    with connect(pg_url) as conn:  # written in the Consent's own transaction: there already
        rows = conn.execute("SELECT method, user_ref, policy, client_id, patients FROM audit_event "
                            "WHERE kind = 'consent' AND entities && %s", ([f"Consent/{consent_id}"],)).fetchall()
    assert rows == [("POST", "Practitioner/test-coordinator", IPC + "consent-authority#authorised-role",
                     "test-workspace", [veteran.patient])]


def test_the_person_and_their_proxy_may_record_their_own_consent(fhir, fhir_as, veteran):
    mine = fhir_as(partner_class="nhs", scopes=["user/Consent.cruds"], user=f"Patient/{veteran.patient}")
    consent = sharing_consent(veteran.patient, [permit("nhs", [*PARTS, "consent"])])
    assert mine.post("/Consent", content=dumps(consent), headers=JSON).status_code == 201
    someone_else = fhir_as(partner_class="nhs", scopes=["user/Consent.cruds"], user="Patient/not-them")
    other = someone_else.post("/Consent", content=dumps(consent), headers=JSON)
    assert other.status_code == 403, other.text
    attorney = {"resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{veteran.patient}"},
                "active": True, "name": [{"family": "Attorney"}],
                "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                              "code": "POWATT"}]}]}
    made = fhir.post("/RelatedPerson", content=dumps(attorney), headers=JSON)
    assert made.status_code == 201
    proxy = fhir_as(partner_class="nhs", scopes=["user/Consent.cruds"], user=f"RelatedPerson/{made.json()['id']}")
    assert proxy.post("/Consent", content=dumps(consent), headers=JSON).status_code == 201
    neighbour = fhir.post("/RelatedPerson", content=dumps({**attorney, "relationship": [{"text": "neighbour"}]}),
                          headers=JSON).json()["id"]
    not_proxy = fhir_as(partner_class="nhs", scopes=["user/Consent.cruds"], user=f"RelatedPerson/{neighbour}")
    assert not_proxy.post("/Consent", content=dumps(consent), headers=JSON).status_code == 403


# --- 2. Taking over an organisation ----------------------------------------------------------


def test_a_charity_cannot_take_over_the_organisation_a_consent_names(recorder, fhir, fhir_as, veteran):
    lead_charity_consent(recorder, veteran)  # names his lead charity by Organization/<id>
    outsider = fhir_as(partner_class="charity", organisation="1333333", scopes=EVERYTHING)
    assert outsider.get(f"/{veteran.ids['goal']}").status_code == 404
    charity = fhir.get(f"/Organization/{veteran.charity}").json()
    charity["identifier"].append({"system": CHARITY_NUMBER, "value": "1333333"})
    refused = outsider.put(f"/Organization/{veteran.charity}", content=dumps(charity), headers=JSON)
    assert refused.status_code == 403 and issue(refused)["code"] == "forbidden", refused.text
    assert issue(refused)["expression"] == ["Organization.identifier"]
    # Even an operator's change of identifiers does not move what the consent granted: the grant
    # is bound to the identifier it was made with.
    operator = fhir_as(partner_class="nhs", scopes=EVERYTHING, user="Practitioner/op", user_role="operator")
    assert operator.put(f"/Organization/{veteran.charity}", content=dumps(charity), headers=JSON).status_code == 200
    assert outsider.get(f"/{veteran.ids['goal']}").status_code == 404
    lead = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=EVERYTHING)
    assert lead.get(f"/{veteran.ids['goal']}").status_code == 200


def test_a_grant_to_an_organisation_without_an_identifier_grants_nothing(recorder, fhir, fhir_as, veteran):
    school = fhir.post("/Organization", content=dumps({"resourceType": "Organization", "name": "A school"}),
                       headers=JSON).json()["id"]
    give_consent(recorder, veteran, [permit("education", ["care-support-plan"], school)])
    teacher = fhir_as(partner_class="education", scopes=EVERYTHING)
    assert teacher.get(f"/{veteran.ids['goal']}").status_code == 404


# --- 3. Existence through writes -------------------------------------------------------------


def test_writes_answer_alike_for_hidden_and_absent_resources(fhir_as, veteran):
    charity = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=EVERYTHING)
    hidden = veteran.ids["condition"]
    absent = f"Condition/{uuid.uuid4()}"
    assert charity.delete(f"/{hidden}").status_code == charity.delete(f"/{absent}").status_code == 204
    provenance = {"resourceType": "Provenance", "recorded": "2026-01-15T10:00:00Z",
                  "agent": [{"who": {"display": "charity"}}]}
    answers = [charity.post("/Provenance", content=dumps({**provenance, "target": [{"reference": ref}]}),
                            headers=JSON) for ref in (hidden, absent)]
    assert answers[0].status_code == answers[1].status_code == 422
    assert issue(answers[0])["code"] == issue(answers[1])["code"]


def test_update_as_create_cannot_probe_the_hubs_ids(recorder, fhir, fhir_as, veteran):
    lead_charity_consent(recorder, veteran)  # the charity sees him, not his health
    made = fhir.post("/Condition", content=dumps({"resourceType": "Condition", "code": {"text": "PTSD"},
                                                  "subject": {"reference": f"Patient/{veteran.patient}"}}),
                     headers=JSON).json()["id"]
    absent = ids.new_id()  # an id of the same form that nothing holds
    charity = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=EVERYTHING)
    answers = []
    for res_id in (made, absent):
        body = {"resourceType": "Condition", "id": res_id, "code": {"text": "x"},
                "subject": {"reference": f"Patient/{veteran.patient}"}}
        answers.append(charity.put(f"/Condition/{res_id}", content=dumps(body), headers=JSON))
    assert [a.status_code for a in answers] == [404, 404], answers[0].text
    assert issue(answers[0])["code"] == issue(answers[1])["code"] == "not-found"


def test_derived_ids_cannot_be_computed_outside_the_hub():
    name = ids.legacy_source_name("MOD", "Condition", "service-number-X|PTSD")
    assert ids.source_id("MOD", "Condition", "service-number-X|PTSD") != str(name)
    assert ids.source_id("MOD", "Condition", "service-number-X|PTSD") == ids.source_id(
        "MOD", "Condition", "service-number-X|PTSD")  # still the same every time, inside the hub


# --- 4. Person data the hub does not place ---------------------------------------------------


def test_data_pointing_at_a_person_any_way_lands_in_their_record(fhir, fhir_as, veteran):
    by_number = {"identifier": {"system": NHS_NUMBER, "value": veteran.nhs_number}}
    cases = {
        "DocumentReference": {"resourceType": "DocumentReference", "status": "current", "subject": by_number,
                              "content": [{"attachment": {"contentType": "text/plain",
                                                          "data": base64.b64encode(b"notes").decode()}}]},
        "Group": {"resourceType": "Group", "type": "person", "actual": True,
                  "member": [{"entity": {"reference": f"Patient/{veteran.patient}"}}]},
        "Bundle": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
            "resourceType": "Flag", "status": "active", "code": {"text": "Safeguarding concern"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                      "code": "safety"}]}],
            "subject": {"reference": f"Patient/{veteran.patient}"}}}]},
        "Condition": {"resourceType": "Condition", "code": {"text": "Tinnitus"}, "subject": {"reference": "#p"},
                      "contained": [{"resourceType": "Patient", "id": "p", "identifier": [by_number["identifier"]]}]},
        "List": {"resourceType": "List", "status": "current", "mode": "working", "title": "Problems",
                 "entry": [{"item": {"reference": veteran.ids["condition"]}}]},
    }
    stranger = fhir_as(partner_class="charity", organisation="1777777", scopes=EVERYTHING)
    # Another NHS organisation sees his record by default: it sees what was placed in the shared
    # record, not what was kept apart with its writer.
    other_nhs = fhir_as(partner_class="nhs", organisation="X99", scopes=EVERYTHING)
    for res_type, resource in cases.items():
        made = fhir.post(f"/{res_type}", content=dumps(resource), headers=JSON)
        assert made.status_code == 201, (res_type, made.text)
        assert stranger.get(f"/{res_type}/{made.json()['id']}").status_code == 404, res_type
        assert fhir.get(f"/{res_type}/{made.json()['id']}").status_code == 200, res_type
        assert other_nhs.get(f"/{res_type}/{made.json()['id']}").status_code == 200, res_type


def test_what_cannot_be_placed_is_seen_only_by_its_writer(fhir_as, veteran):
    writer = fhir_as(partner_class="charity", organisation="1666666", scopes=EVERYTHING)
    condition = {"resourceType": "Condition", "code": {"text": "PTSD"}, "subject": {"reference": "#p"},
                 "contained": [{"resourceType": "Patient", "id": "p", "name": [{"family": "Unknown"}]}]}
    made = writer.post("/Condition", content=dumps(condition), headers=JSON)
    assert made.status_code == 201, made.text
    assert writer.get(f"/Condition/{made.json()['id']}").status_code == 200
    other = fhir_as(partner_class="charity", organisation="1555555", scopes=EVERYTHING)
    assert other.get(f"/Condition/{made.json()['id']}").status_code == 404
    nhs = fhir_as(partner_class="nhs", scopes=EVERYTHING)
    assert nhs.get(f"/Condition/{made.json()['id']}").status_code == 404


# --- 5. Provenance and AuditEvent name only what the reader may see --------------------------


def test_a_provenance_names_only_what_its_reader_may_see(recorder, fhir, fhir_as, veteran):
    lead_charity_consent(recorder, veteran)
    subject = {"reference": f"Patient/{veteran.patient}"}
    batch = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Goal"}, "resource": {
            "resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Walk"}, "subject": subject}},
        {"request": {"method": "POST", "url": "Procedure"}, "resource": {
            "resourceType": "Procedure", "status": "completed", "code": {"text": "Social care assessment"},
            "category": {"text": "Social care"}, "subject": subject}},
    ]}
    answer = fhir.post("", content=dumps(batch), headers=JSON)
    assert answer.status_code == 200, answer.text
    goal = answer.json()["entry"][0]["response"]["location"].split("/_history")[0]
    procedure = answer.json()["entry"][1]["response"]["location"].split("/_history")[0]
    charity = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=["system/*.rs"])
    found = charity.get("/Provenance", params={"target": goal}).json()
    assert found["total"] >= 1
    for entry in found["entry"]:
        targets = {t["reference"].split("/_history")[0] for t in entry["resource"]["target"]}
        assert procedure not in targets
    assert charity.get("/Provenance", params={"target": procedure}).json()["total"] == 0


def test_an_audit_event_names_only_what_its_reader_may_see(recorder, fhir, fhir_as, veteran):
    consent_id = lead_charity_consent(recorder, veteran)  # the charity sees who he is and his plan only
    stranger = factories.patient()
    stranger_nhs = factories.test_nhs_number()
    stranger["identifier"] = [{"system": NHS_NUMBER, "value": stranger_nhs}]
    stranger_id = fhir.post("/Patient", content=dumps(stranger), headers=JSON).json()["id"]
    searcher_id = factories.unique("searcher-")
    searcher = fhir_as(partner_class="nhs", client_id=searcher_id, scopes=EVERYTHING)
    assert searcher.get(f"/{veteran.ids['condition']}").status_code == 200
    assert searcher.get(f"/Consent/{consent_id}").status_code == 200
    assert searcher.get("/Patient", params={"identifier": f"{NHS_NUMBER}|{stranger_nhs}"}).json()["total"] == 1
    auditor = fhir_as(partner_class="charity", organisation=veteran.charity_number, scopes=["system/AuditEvent.rs"])
    deadline = time.monotonic() + 20
    while True:  # written off the request path
        found = auditor.get("/AuditEvent", params={"agent": searcher_id, "_count": 100}).json()
        events = [e["resource"] for e in found.get("entry", [])]
        if len(events) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(events) == 3
    text = dumps(events).decode()
    for hidden in (veteran.ids["condition"], f"Consent/{consent_id}", stranger_id, stranger_nhs,
                   base64.b64encode(f"identifier={NHS_NUMBER}|{stranger_nhs}".encode()).decode()):
        assert hidden not in text, hidden
    named = {e["what"]["reference"] for ev in events for e in ev.get("entity", []) if "what" in e}
    assert named == {f"Patient/{veteran.patient}"}  # what it may see, it is shown
    # Searching by a person it may not see matches none of another organisation's records.
    assert auditor.get("/AuditEvent", params={"patient": stranger_id, "_summary": "count"}).json()["total"] == 0
    nhs_auditor = fhir_as(partner_class="nhs", organisation="X26", scopes=["system/AuditEvent.rs"])
    assert nhs_auditor.get("/AuditEvent", params={"patient": stranger_id, "_summary": "count"}).json()["total"] >= 1


# --- 6. A NUL in a URL never stops the audit trail -------------------------------------------


def test_a_nul_in_a_url_is_audited_and_the_trail_goes_on(start_api, pg_url, tmp_path, token_for):
    api = start_api(audit_spill_dir=tmp_path / "spill")
    marker = uuid.uuid4().hex
    refused = httpx.get(f"{api.url}/fhir/Patient/a%00b", params={"m": marker})
    assert refused.status_code == 401 and refused.json()["resourceType"] == "OperationOutcome"
    token = token_for(partner_class="nhs", scopes=FULL_ACCESS)
    later = httpx.get(f"{api.url}/fhir/Patient/{marker}", headers={"Authorization": f"Bearer {token}"})
    assert later.status_code == 404
    api.stop()  # bounded: RunningApi.stop waits at most 10 s, and shutdown drains the queue first
    with connect(pg_url) as conn:
        rows = conn.execute("SELECT path, status FROM audit_event WHERE query LIKE %s OR patients && %s",
                            (f"%{marker}%", [marker])).fetchall()
    assert sorted(rows) == sorted([("/fhir/Patient/a%00b", 401), (f"/fhir/Patient/{marker}", 404)])
    assert not (tmp_path / "spill").exists()  # nothing needed setting aside


def test_a_duplicate_of_someone_hidden_is_answered_as_new_and_held_apart(recorder, fhir, fhir_as, veteran, pg_url):
    """HAZ-026: a council his consent shuts out creates a Patient with his NHS number. It is told
    exactly what a new person gets, the record stays one (the copy is the council's alone), and an
    operator is asked to reconcile them in his record."""
    give_consent(recorder, veteran, [permit("local-authority", PARTS, kind="deny")])
    council = fhir_as(partner_class="local-authority", scopes=EVERYTHING)
    assert council.get(f"/Patient/{veteran.patient}").status_code == 404
    taken = council.post("/Patient", content=dumps({**factories.patient(), "identifier": [
        {"system": NHS_NUMBER, "value": veteran.nhs_number}]}), headers=JSON)
    fresh = council.post("/Patient", content=dumps({**factories.patient(), "identifier": [
        {"system": NHS_NUMBER, "value": factories.test_nhs_number()}]}), headers=JSON)
    assert taken.status_code == fresh.status_code == 201, taken.text
    assert sorted(taken.headers) == sorted(fresh.headers)
    held = taken.json()["id"]
    assert council.get(f"/Patient/{held}").status_code == 200  # its own record
    assert fhir.get(f"/Patient/{held}").status_code == 404  # nobody else's
    found = fhir.get("/Patient", params={"identifier": f"{NHS_NUMBER}|{veteran.nhs_number}"}).json()
    assert {e["resource"]["id"] for e in found.get("entry", [])} == {veteran.patient}  # still one person
    with connect(pg_url) as conn:
        assert conn.execute("SELECT duplicate_of FROM held_apart WHERE patient_id = %s", (held,)).fetchall() == [
            (veteran.patient,)]
