"""The FHIR REST interactions over real HTTP against the real store."""
from __future__ import annotations

import threading

import httpx
import pytest

from tests.factories import NHS_SYSTEM, care_plan, goal, patient, unique
from tests.integration.conftest import MAX_BODY

JSON = "application/fhir+json"


def create(fhir: httpx.Client, resource: dict) -> dict:
    r = fhir.post(f"/{resource['resourceType']}", json=resource, headers={"Content-Type": JSON})
    assert r.status_code == 201, r.text
    return r.json()


def issue_codes(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [i["code"] for i in body["issue"]]


# --- create / read / vread / update / delete ------------------------------------------------


def test_create_assigns_id_version_and_location(fhir):
    r = fhir.post("/Patient", json=patient(id="client-chosen"), headers={"Content-Type": JSON})
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert r.headers["Content-Type"].startswith(JSON)


def test_read_returns_what_was_written(fhir):
    sent = patient(family="O'Brien", given="Siân")
    created = create(fhir, sent)
    r = fhir.get(f"/Patient/{created['id']}")
    assert r.status_code == 200
    got = r.json()
    assert got["name"] == sent["name"]
    assert got["identifier"] == sent["identifier"]
    assert list(got)[0] == "resourceType"
    assert r.headers["ETag"] == 'W/"1"'
    assert "Last-Modified" in r.headers


def test_read_unknown_is_404_outcome(fhir):
    r = fhir.get("/Patient/does-not-exist")
    assert r.status_code == 404
    assert issue_codes(r) == ["not-found"]


def test_unknown_type_is_404(fhir):
    r = fhir.get("/Spaceship/1")
    assert r.status_code == 404
    assert issue_codes(r) == ["not-supported"]


def test_update_makes_new_version_and_vread_keeps_old(fhir):
    created = create(fhir, patient(family="Before"))
    pid = created["id"]
    changed = dict(created, name=[{"family": "After", "given": ["Alex"]}])
    r = fhir.put(f"/Patient/{pid}", json=changed, headers={"Content-Type": JSON})
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert fhir.get(f"/Patient/{pid}").json()["name"][0]["family"] == "After"
    old = fhir.get(f"/Patient/{pid}/_history/1")
    assert old.status_code == 200
    assert old.json()["name"][0]["family"] == "Before"
    assert old.headers["ETag"] == 'W/"1"'
    assert fhir.get(f"/Patient/{pid}/_history/9").status_code == 404


def test_update_as_create_with_client_id(fhir):
    pid = unique("pt-")
    r = fhir.put(f"/Patient/{pid}", json=patient(id=pid), headers={"Content-Type": JSON})
    assert r.status_code == 201
    assert r.headers["Location"].endswith(f"/Patient/{pid}/_history/1")


def test_update_with_stale_if_match_is_412_and_changes_nothing(fhir):
    created = create(fhir, patient(family="Original"))
    pid = created["id"]
    ok = fhir.put(f"/Patient/{pid}", json=dict(created, gender="female"),
                  headers={"Content-Type": JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = fhir.put(f"/Patient/{pid}", json=dict(created, gender="other"),
                     headers={"Content-Type": JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert fhir.get(f"/Patient/{pid}").json()["gender"] == "female"


def test_two_concurrent_writers_with_same_version_one_gets_412(fhir, hub_url):
    person = create(fhir, patient())
    plan = create(fhir, care_plan(f"Patient/{person['id']}"))
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def write(description: str) -> None:
        with httpx.Client(base_url=f"{hub_url}/fhir", timeout=30, headers=fhir.headers) as client:
            barrier.wait()
            r = client.put(f"/CarePlan/{plan['id']}", json=dict(plan, description=description),
                           headers={"Content-Type": JSON, "If-Match": 'W/"1"'})
            statuses.append(r.status_code)

    threads = [threading.Thread(target=write, args=(d,)) for d in ("coordinator A", "coordinator B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 412]
    history = fhir.get(f"/CarePlan/{plan['id']}/_history").json()
    assert history["total"] == 2


def test_concurrent_writers_without_if_match_all_get_distinct_versions(fhir, hub_url):
    created = create(fhir, patient())
    results: list[str] = []

    def write(n: int) -> None:
        with httpx.Client(base_url=f"{hub_url}/fhir", timeout=30, headers=fhir.headers) as client:
            r = client.put(f"/Patient/{created['id']}", json=dict(created, gender="unknown"),
                           headers={"Content-Type": JSON})
            assert r.status_code == 200
            results.append(r.json()["meta"]["versionId"])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=int) == [str(v) for v in range(2, 8)]


def test_update_id_mismatch_and_missing_id_are_400_and_change_nothing(fhir):
    created = create(fhir, patient(family="Kept"))
    pid = created["id"]
    r = fhir.put(f"/Patient/{pid}", json=dict(created, id="other", gender="female"),
                 headers={"Content-Type": JSON})
    assert r.status_code == 400
    assert "does not match" in r.json()["issue"][0]["diagnostics"]
    no_id = {k: v for k, v in created.items() if k != "id"}
    r = fhir.put(f"/Patient/{pid}", json=no_id, headers={"Content-Type": JSON})
    assert r.status_code == 400
    assert fhir.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_delete_then_read_is_410_and_history_keeps_versions(fhir):
    created = create(fhir, patient())
    pid = created["id"]
    r = fhir.delete(f"/Patient/{pid}")
    assert r.status_code == 204
    gone = fhir.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert issue_codes(gone) == ["deleted"]
    assert fhir.get(f"/Patient/{pid}/_history/1").status_code == 200
    history = fhir.get(f"/Patient/{pid}/_history").json()
    assert history["total"] == 2
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in history["entry"][0]
    # Deleting again is harmless; recreating by PUT continues the version numbers.
    assert fhir.delete(f"/Patient/{pid}").status_code == 204
    r = fhir.put(f"/Patient/{pid}", json=created, headers={"Content-Type": JSON})
    assert r.status_code == 201
    assert r.json()["meta"]["versionId"] == "3"


def test_deleted_resource_leaves_search_results(fhir):
    marker = unique("del-")
    created = create(fhir, patient(family=marker))
    assert fhir.get("/Patient", params={"family": marker}).json()["total"] == 1
    fhir.delete(f"/Patient/{created['id']}")
    assert fhir.get("/Patient", params={"family": marker}).json()["total"] == 0


def test_conditional_read_not_modified(fhir):
    created = create(fhir, patient())
    r = fhir.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304


def test_prefer_return_minimal_and_outcome(fhir):
    r = fhir.post("/Patient", json=patient(), headers={"Content-Type": JSON, "Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "Location" in r.headers
    r = fhir.post("/Patient", json=patient(),
                  headers={"Content-Type": JSON, "Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.json()["resourceType"] == "OperationOutcome"


# --- conditional create / update ------------------------------------------------------------


def test_conditional_create_if_none_exist(fhir):
    p = patient()
    nhs = p["identifier"][0]["value"]
    condition = f"identifier={NHS_SYSTEM}|{nhs}"
    first = fhir.post("/Patient", json=p, headers={"Content-Type": JSON, "If-None-Exist": condition})
    assert first.status_code == 201
    second = fhir.post("/Patient", json=p, headers={"Content-Type": JSON, "If-None-Exist": condition})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert fhir.get("/Patient", params={"identifier": f"{NHS_SYSTEM}|{nhs}"}).json()["total"] == 1


def test_conditional_create_with_several_matches_is_412(fhir):
    family = unique("twin-")
    create(fhir, patient(family=family))
    create(fhir, patient(family=family))
    r = fhir.post("/Patient", json=patient(family=family),
                  headers={"Content-Type": JSON, "If-None-Exist": f"family={family}"})
    assert r.status_code == 412
    assert issue_codes(r) == ["multiple-matches"]


def test_concurrent_conditional_creates_make_one_resource(fhir, hub_url):
    p = patient()
    nhs = p["identifier"][0]["value"]
    condition = f"identifier={NHS_SYSTEM}|{nhs}"
    barrier = threading.Barrier(4)
    ids: list[str] = []

    def post() -> None:
        with httpx.Client(base_url=f"{hub_url}/fhir", timeout=30, headers=fhir.headers) as client:
            barrier.wait()
            r = client.post("/Patient", json=p, headers={"Content-Type": JSON, "If-None-Exist": condition})
            assert r.status_code in (200, 201)
            ids.append(r.json()["id"])

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1


def test_conditional_update_creates_then_updates(fhir):
    p = patient()
    nhs = p["identifier"][0]["value"]
    url = f"/Patient?identifier={NHS_SYSTEM}|{nhs}"
    first = fhir.put(url, json=p, headers={"Content-Type": JSON})
    assert first.status_code == 201
    second = fhir.put(url, json=dict(p, gender="female"), headers={"Content-Type": JSON})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "2"


# --- history --------------------------------------------------------------------------------


def test_type_and_system_history_page_with_next_links(fhir):
    family = unique("hist-")
    person = create(fhir, patient())
    for _ in range(3):
        create(fhir, goal(f"Patient/{person['id']}", text=family))
    page = fhir.get("/Goal/_history", params={"_count": 2}).json()
    assert page["type"] == "history"
    assert len(page["entry"]) == 2
    nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert nxt
    second = fhir.get(nxt[0]).json()
    assert second["entry"]
    assert {e["fullUrl"] for e in second["entry"]}.isdisjoint({e["fullUrl"] for e in page["entry"]})
    system = fhir.get("/_history", params={"_count": 1}).json()
    assert system["total"] >= 3


def test_history_since(fhir):
    created = create(fhir, patient())
    since = created["meta"]["lastUpdated"]
    fhir.put(f"/Patient/{created['id']}", json=dict(created, gender="female"), headers={"Content-Type": JSON})
    page = fhir.get(f"/Patient/{created['id']}/_history", params={"_since": since}).json()
    assert page["total"] == 2
    later = fhir.get(f"/Patient/{created['id']}/_history", params={"_since": "2999-01-01T00:00:00Z"}).json()
    assert later["total"] == 0


# --- errors: every refusal is an OperationOutcome and changes nothing -------------------------


def test_malformed_json_is_400(fhir):
    r = fhir.post("/Patient", content=b'{"resourceType": "Patient", ', headers={"Content-Type": JSON})
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["issue"][0]["diagnostics"]


def test_wrong_resource_type_is_400(fhir):
    r = fhir.post("/Patient", json=goal("Patient/x"), headers={"Content-Type": JSON})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["resourceType"]


def test_structurally_invalid_resource_is_400_with_location(fhir):
    marker = unique("bad-")
    bad = patient(family=marker, birthDate="14/03/1985")
    bad["nmae"] = []
    r = fhir.post("/Patient", json=bad, headers={"Content-Type": JSON})
    assert r.status_code == 400
    expressions = {e for i in r.json()["issue"] for e in i.get("expression", [])}
    assert {"Patient.birthDate", "Patient.nmae"} <= expressions
    assert fhir.get("/Patient", params={"family": marker}).json()["total"] == 0


def test_oversized_body_is_413(fhir):
    big = patient(text={"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">"
                        + "x" * (MAX_BODY + 10) + "</div>"})
    r = fhir.post("/Patient", json=big, headers={"Content-Type": JSON})
    assert r.status_code == 413
    assert issue_codes(r) == ["too-long"]


def test_unsupported_content_type_is_415(fhir):
    r = fhir.post("/Patient", content=b"name=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_method_not_allowed_is_405(fhir):
    r = fhir.patch("/Patient/abc", content=b"[]", headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 405
    assert r.json()["resourceType"] == "OperationOutcome"


def test_period_start_after_end_is_422(fhir):
    bad = care_plan("Patient/x", period={"start": "2026-12-31", "end": "2026-01-01"})
    r = fhir.post("/CarePlan", json=bad, headers={"Content-Type": JSON})
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["CarePlan.period"]


def test_invalid_if_match_is_400(fhir):
    created = create(fhir, patient())
    r = fhir.put(f"/Patient/{created['id']}", json=created,
                 headers={"Content-Type": JSON, "If-Match": "yesterday"})
    assert r.status_code == 400


@pytest.mark.parametrize("bad_id", ["has space", "x" * 65, "bad!id", "under_score"])
def test_invalid_ids_are_refused(fhir, bad_id):
    r = fhir.put(f"/Patient/{bad_id}", json=patient(id=bad_id), headers={"Content-Type": JSON})
    assert r.status_code == 400


# --- capability and health ------------------------------------------------------------------


def test_capability_statement_lists_what_is_implemented(fhir):
    r = fhir.get("/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    by_type = {res["type"]: res for res in cs["rest"][0]["resource"]}
    for required in ("Patient", "CarePlan", "Goal", "RelatedPerson", "CareTeam", "Consent",
                     "Provenance", "AuditEvent", "Organization", "Practitioner", "Encounter",
                     "Flag", "Task", "ServiceRequest", "EpisodeOfCare"):
        assert required in by_type
    plan_params = {p["name"]: p["type"] for p in by_type["CarePlan"]["searchParam"]}
    assert plan_params["subject"] == "reference"
    assert plan_params["status"] == "token"
    assert all(p["type"] not in ("composite", "special") for res in by_type.values()
               for p in res["searchParam"])
    assert {i["code"] for i in cs["rest"][0]["interaction"]} == {"transaction", "batch", "history-system"}
    assert "patch" not in {i["code"] for res in by_type.values() for i in res["interaction"]}
    # The audit trail is the hub's own: clients read and search it, and nothing else.
    assert {i["code"] for i in by_type["AuditEvent"]["interaction"]} == {"read", "search-type"}
    assert {"patient", "agent", "date"} <= {p["name"] for p in by_type["AuditEvent"]["searchParam"]}
    assert fhir.post("/AuditEvent", json={"resourceType": "AuditEvent"}).status_code == 405


def test_health_and_readiness(hub_url):
    assert httpx.get(f"{hub_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{hub_url}/readyz").json()["status"] == "ready"


def test_openapi_document_is_served(hub_url):
    r = httpx.get(f"{hub_url}/openapi.json")
    assert r.status_code == 200
    assert "/fhir/{res_type}/{res_id}" in r.json()["paths"]


# --- formats --------------------------------------------------------------------------------


def test_xml_by_accept_and_format_and_json_alias(fhir):
    created = create(fhir, patient(family="Xml"))
    by_accept = fhir.get(f"/Patient/{created['id']}", headers={"Accept": "application/fhir+xml"})
    assert by_accept.headers["Content-Type"].startswith("application/fhir+xml")
    assert b"<family value=\"Xml\"/>" in by_accept.content
    by_param = fhir.get(f"/Patient/{created['id']}", params={"_format": "xml"},
                        headers={"Accept": "application/fhir+json"})
    assert by_param.content == by_accept.content
    as_json = fhir.get(f"/Patient/{created['id']}", params={"_format": "application/json"})
    assert as_json.json()["id"] == created["id"]
    bundle = fhir.get("/Patient", params={"_id": created["id"], "_format": "xml"})
    assert bundle.content.lstrip().startswith(b"<?xml") and b"<Bundle" in bundle.content


def test_xml_errors_come_back_as_xml_outcomes(fhir):
    r = fhir.post("/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'><nmae/></Patient>",
                  headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"})
    assert r.status_code == 400
    assert b"<OperationOutcome" in r.content and b"Patient.nmae" in r.content


def test_xml_with_entities_is_refused(fhir):
    evil = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<Patient xmlns="http://hl7.org/fhir"><id value="&e;"/></Patient>')
    r = fhir.post("/Patient", content=evil, headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 400
    assert b"root:" not in r.content


def test_pretty_output_and_unknown_format(fhir):
    created = create(fhir, patient())
    pretty = fhir.get(f"/Patient/{created['id']}", params={"_pretty": "true"})
    assert b"\n  " in pretty.content and pretty.json()["id"] == created["id"]
    assert fhir.get(f"/Patient/{created['id']}", params={"_format": "yaml"}).status_code == 406
    assert fhir.get(f"/Patient/{created['id']}", headers={"Accept": "text/csv"}).status_code == 406


def test_decimal_precision_is_kept(fhir):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
           "valueQuantity": {"value": 70.50, "unit": "kg"}}
    body = b'{"resourceType":"Observation","status":"final","code":{"text":"weight"},' \
           b'"valueQuantity":{"value":70.50,"unit":"kg"}}'
    r = fhir.post("/Observation", content=body, headers={"Content-Type": JSON})
    assert r.status_code == 201
    assert b'"value":70.50' in fhir.get(f"/Observation/{r.json()['id']}").content
    assert b'<value value="70.50"/>' in fhir.get(f"/Observation/{r.json()['id']}",
                                                 params={"_format": "xml"}).content
    assert obs["valueQuantity"]["value"] == 70.5


# --- $everything ----------------------------------------------------------------------------


def test_everything_returns_the_persons_record_only(fhir):
    from tests.factories import carer

    gp = create(fhir, {"resourceType": "Organization", "name": "Station Road Surgery"})
    person = create(fhir, patient(generalPractitioner=[{"reference": f"Organization/{gp['id']}"}]))
    other = create(fhir, patient())
    ref = f"Patient/{person['id']}"
    mine = {create(fhir, r)["id"] for r in (care_plan(ref), goal(ref), carer(ref))}
    create(fhir, goal(f"Patient/{other['id']}"))
    bundle = fhir.get(f"/Patient/{person['id']}/$everything").json()
    got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    # The Provenance naming who wrote the person comes with them (it references them); nothing
    # about anyone else does.
    proofs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"]
    record = got - {("Provenance", p["id"]) for p in proofs}
    assert record == {("Patient", person["id"]), ("Organization", gp["id"])} | {
        (t, i) for t, i in record if i in mine}
    assert {i for _, i in record} >= mine
    assert [t["reference"] for p in proofs for t in p["target"]] == [f"{ref}/_history/1"]
    assert bundle["total"] == 5 + len(proofs)
    only_goals = fhir.get(f"/Patient/{person['id']}/$everything", params={"_type": "Goal"}).json()
    assert [e["resource"]["resourceType"] for e in only_goals["entry"]] == ["Goal"]
    paged = fhir.get(f"/Patient/{person['id']}/$everything", params={"_count": 2}).json()
    assert len(paged["entry"]) == 2 and any(link["relation"] == "next" for link in paged["link"])


def test_everything_for_unknown_person_is_404(fhir):
    assert fhir.get("/Patient/nobody-here/$everything").status_code == 404
