"""The CapabilityStatement tells the truth: every search parameter and operation it advertises
does something, `_summary`/`_elements` subset (tagged SUBSETTED), `_count=0` has no next page,
If-None-Match takes the strong form, operations that change nothing answer POST, and requests
carrying a NUL character are refused with 400 rather than failing."""
from __future__ import annotations

import httpx
import pytest

from hub.fhir.subsetting import SUBSETTED
from tests.factories import goal, patient, unique

JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def statement(hub_url, admin_token) -> dict:
    with httpx.Client(base_url=f"{hub_url}/fhir", headers={"Accept": "application/fhir+json"}) as open_client:
        return open_client.get("/metadata").json()


def _create(fhir, resource) -> dict:
    r = fhir.post(f"/{resource['resourceType']}", json=resource, headers=JSON)
    assert r.status_code == 201, r.text
    return r.json()


def _tagged(resource: dict) -> bool:
    return any(t.get("code") == SUBSETTED["code"] for t in resource.get("meta", {}).get("tag", []))


def test_summary_true_and_elements_subset_search_results_and_reads(fhir):
    family = unique("Sum")
    person = _create(fhir, patient(family=family, photo=[{"contentType": "image/png", "data": "aGk="}],
                                   text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">hi</div>'}))
    summary = fhir.get("/Patient", params={"family": family, "_summary": "true"}).json()["entry"][0]["resource"]
    assert _tagged(summary) and "name" in summary and "photo" not in summary and "text" not in summary
    elements = fhir.get("/Patient", params={"family": family, "_elements": "gender"}).json()["entry"][0]["resource"]
    assert _tagged(elements) and set(elements) == {"resourceType", "id", "meta", "gender"}
    data = fhir.get(f"/Patient/{person['id']}", params={"_summary": "data"}).json()
    assert _tagged(data) and "text" not in data and "photo" in data
    text = fhir.get(f"/Patient/{person['id']}", params={"_summary": "text"}).json()
    assert _tagged(text) and "text" in text and "name" not in text
    whole = fhir.get(f"/Patient/{person['id']}", params={"_summary": "false"}).json()
    assert not _tagged(whole) and "photo" in whole
    assert fhir.get("/Patient", params={"_summary": "nonsense"}).status_code == 400


def test_count_zero_gives_the_total_and_no_next_page(fhir):
    family = unique("Zero")
    for _ in range(2):
        _create(fhir, patient(family=family))
    page = fhir.get("/Patient", params={"family": family, "_count": 0}).json()
    assert page["total"] == 2 and "entry" not in page
    relations = {link["relation"]: link["url"] for link in page["link"]}
    assert "next" not in relations
    history = fhir.get("/Patient/_history", params={"_count": 0}).json()
    assert "next" not in {link["relation"] for link in history["link"]}


def test_if_none_match_takes_the_weak_and_the_strong_form(fhir):
    person = _create(fhir, patient(family=unique("Etag")))
    for tag in ('W/"1"', '"1"', "*"):
        assert fhir.get(f"/Patient/{person['id']}", headers={"If-None-Match": tag}).status_code == 304
    assert fhir.get(f"/Patient/{person['id']}", headers={"If-None-Match": '"2"'}).status_code == 200


def test_everything_answers_post_as_well_as_get_and_is_not_a_system_operation(fhir, statement):
    person = _create(fhir, patient(family=unique("Everything")))
    _create(fhir, goal(f"Patient/{person['id']}"))
    got = fhir.get(f"/Patient/{person['id']}/$everything").json()
    posted = fhir.post(f"/Patient/{person['id']}/$everything").json()
    with_params = fhir.post(f"/Patient/{person['id']}/$everything", headers=JSON, json={
        "resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Goal"}]}).json()
    assert got["total"] == posted["total"] >= 2  # the Patient, the Goal, the Provenance of each write
    assert [e["resource"]["resourceType"] for e in with_params["entry"]] == ["Goal"]
    assert fhir.post("/$everything").status_code == 404
    assert "operation" not in statement["rest"][0] or all(o["name"] != "everything"
                                                           for o in statement["rest"][0]["operation"])
    assert statement["implementationGuide"]


def test_phonetic_matches_names_that_sound_alike_and_only_those(fhir, statement, pg_url):
    patient_entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert "phonetic" in {p["name"] for p in patient_entry["searchParam"]}
    mark = unique("ph-")
    person = _create(fhir, patient(family="Smyth", given="Kathryn", identifier=[{"system": "https://example.org/m",
                                                                                  "value": mark}]))

    def found(value: str) -> bool:
        page = fhir.get("/Patient", params={"phonetic": value, "identifier": mark}).json()
        return page["total"] == 1

    assert found("smith") and found("Catherine") and found("smith katherine")
    assert not found("smart") and not found("jones") and not found("smith jones")
    assert fhir.get("/Patient", params={"phonetic": "123"}).status_code == 400
    # A resource stored before `phonetic` was indexed as sound keys gets its rows at start-up.
    import asyncio

    import psycopg
    from psycopg import AsyncConnection

    from hub.store import index

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM idx_string WHERE res_id = %s AND param = 'phonetic'", (person["id"],))
    assert not found("smith")

    async def backfill() -> int:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return await index.backfill(conn)

    assert asyncio.run(backfill()) >= 1
    assert found("smith")


@pytest.mark.parametrize("call", [
    lambda f: f.get("/Patient", params={"name": "a\x00b"}),
    lambda f: f.get("/Patient/ab%00c"),
    lambda f: f.post("/Patient/_search", content=b"name=a%00b",
                     headers={"Content-Type": "application/x-www-form-urlencoded"}),
    lambda f: f.get("/AuditEvent", params={"patient": "Patient/a\x00"}),
    lambda f: f.get("/Patient", headers={"If-None-Exist": "x"}, params={"_id": "\x00"}),
])
def test_a_nul_character_in_a_path_or_parameter_is_400_with_an_outcome(fhir, call):
    r = call(fhir)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_a_nul_character_in_a_bundle_entry_url_refuses_the_bundle_as_any_body_string(fhir):
    # A NUL anywhere in a body is refused before anything runs (hub.fhir.jsontext), entry URLs too.
    r = fhir.post("", headers=JSON, json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?name=a\x00b"}},
        {"request": {"method": "GET", "url": "Patient?_count=1"}}]})
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


# --- every advertised search parameter and operation does something ----------------------------

_VALUES = {"token": "zz-none", "string": "zz-none", "reference": "Patient/zz-none", "date": "ge1900-01-01",
           "number": "1", "quantity": "1", "uri": "http://example.org/zz-none"}


def test_every_advertised_search_parameter_is_understood_on_every_type(fhir, statement):
    """Strict handling refuses a parameter the server would ignore: none advertised is."""
    refused = []
    for entry in statement["rest"][0]["resource"]:
        if entry["type"] == "AuditEvent":
            continue  # its own scope (system/AuditEvent.rs): tests/integration/test_audit.py
        for param in entry.get("searchParam", []):
            if param["name"].startswith("_") and "definition" not in param:
                continue  # the result parameters, tried below
            value = _VALUES[param["type"]]
            r = fhir.get(f"/{entry['type']}", params={param["name"]: value, "_count": 0},
                         headers={"Prefer": "handling=strict"})
            if r.status_code != 200:
                refused.append((entry["type"], param["name"], r.status_code))
    assert refused == []


def test_advertised_search_parameters_select_what_they_say_on_the_record_s_main_types(fhir):
    """On a stored Patient, Goal and CarePlan: each advertised parameter with a value in the
    resource finds it with that value and not with another (the index is what search uses)."""
    from hub.search.extract import index_rows

    family = unique("Walk")
    person = _create(fhir, patient(family=family, gender="female"))
    ref = f"Patient/{person['id']}"
    stored = [person, _create(fhir, goal(ref, identifier=[{"system": "https://example.org/g", "value": family}])),
              _create(fhir, {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": ref},
                             "identifier": [{"system": "https://example.org/c", "value": family}],
                             "period": {"start": "2026-01-01"}})]
    checked = 0
    for resource in stored:
        rows = index_rows(resource)
        for param, system, code, _ in rows.tokens:
            if ":" in param or code is None:
                continue
            found = fhir.get(f"/{resource['resourceType']}", params={param: f"{system or ''}|{code}" if system else code,
                                                                     "_id": resource["id"]}).json()
            assert found["total"] == 1, (resource["resourceType"], param)
            none = fhir.get(f"/{resource['resourceType']}", params={param: "zz-none", "_id": resource["id"]}).json()
            assert none["total"] == 0, (resource["resourceType"], param)
            checked += 1
        for param, target_type, target_id, _ in rows.references:
            if target_id is None:
                continue
            found = fhir.get(f"/{resource['resourceType']}", params={param: f"{target_type}/{target_id}",
                                                                     "_id": resource["id"]}).json()
            assert found["total"] == 1, (resource["resourceType"], param)
            checked += 1
    assert checked >= 8


def test_every_advertised_result_parameter_and_operation_does_something(fhir, statement):
    family = unique("Result")
    people = [_create(fhir, patient(family=family, given=g)) for g in ("Ann", "Bea", "Cat")]
    goals = [_create(fhir, goal(f"Patient/{p['id']}")) for p in people]
    base = {"family": family}
    patient_entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    advertised = {p["name"] for p in patient_entry["searchParam"] if p["name"].startswith("_")}
    results = {
        "_count": lambda: len(fhir.get("/Patient", params={**base, "_count": 1}).json()["entry"]) == 1,
        "_offset": lambda: fhir.get("/Patient", params={**base, "_count": 1, "_offset": 1, "_sort": "given"}).json()
        ["entry"][0]["resource"]["name"][0]["given"] == ["Bea"],
        "_sort": lambda: [e["resource"]["name"][0]["given"][0] for e in
                          fhir.get("/Patient", params={**base, "_sort": "-given"}).json()["entry"]] == ["Cat", "Bea", "Ann"],
        "_include": lambda: len(fhir.get("/Goal", params={"_id": goals[0]["id"], "_include": "Goal:subject"}).json()
                                ["entry"]) == 2,
        "_revinclude": lambda: len(fhir.get("/Patient", params={**base, "_revinclude": "Goal:subject"}).json()["entry"]) == 6,
        "_summary": lambda: "entry" not in fhir.get("/Patient", params={**base, "_summary": "count"}).json(),
        "_elements": lambda: set(fhir.get("/Patient", params={**base, "_elements": "gender"}).json()["entry"][0]
                                 ["resource"]) == {"resourceType", "id", "meta", "gender"},
        "_total": lambda: "total" not in fhir.get("/Patient", params={**base, "_total": "none"}).json(),
        "_id": lambda: fhir.get("/Patient", params={"_id": people[0]["id"]}).json()["total"] == 1,
        "_lastUpdated": lambda: fhir.get("/Patient", params={**base, "_lastUpdated": "lt2000-01-01"}).json()["total"] == 0,
    }
    for name in sorted(advertised):
        if name in results:
            assert results[name](), name
    assert not advertised - set(results) - {"_profile", "_security", "_source", "_tag"}
    operations = {o["name"] for o in patient_entry["operation"]}
    assert operations == {"validate", "everything", "cost-of-care", "export"}
    kicked = fhir.get("/Patient/$export", params={"_type": "Patient"},
                      headers={"Accept": "application/fhir+json", "Prefer": "respond-async"})
    assert kicked.status_code == 202 and "/bulk-export/" in kicked.headers["Content-Location"]
    verdict = fhir.post("/Patient/$validate", json=patient(), headers=JSON).json()["issue"]
    assert not [i for i in verdict if i["severity"] == "error"] and verdict[-1]["severity"] == "information"
    everything = fhir.get(f"/Patient/{people[0]['id']}/$everything", params={"_type": "Patient,Goal"}).json()
    assert {e["resource"]["id"] for e in everything["entry"]} == {people[0]["id"], goals[0]["id"]}
    # $cost-of-care answers a period for the person (nothing costed: a total of £0.00).
    cost = fhir.get(f"/Patient/{people[0]['id']}/$cost-of-care", params={"period": "year:2025-04-01/2026-03-31"}).json()
    [period] = [p["part"] for p in cost["parameter"] if p["name"] == "period"]
    assert {p["name"]: p.get("valueMoney", p.get("valueString")) for p in period if p["name"] in ("label", "total")} == {
        "label": "year", "total": {"value": 0.0, "currency": "GBP"}}
