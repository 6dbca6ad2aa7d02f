"""Search over HTTP: every parameter type, modifiers, prefixes, paging, sorting, includes."""
from __future__ import annotations

import httpx
import pytest

from tests.factories import NHS_SYSTEM, care_plan, carer, goal, patient, unique

JSON = {"Content-Type": "application/fhir+json"}


def create(fhir, resource: dict) -> dict:
    r = fhir.post(f"/{resource['resourceType']}", json=resource, headers=JSON)
    assert r.status_code == 201, r.text
    return r.json()


def ids(bundle: dict, mode: str = "match") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


@pytest.fixture()
def person(fhir) -> dict:
    return create(fhir, patient(family=unique("Fam"), given="Robin"))


def test_token_search_by_identifier_system_and_code(fhir, person):
    nhs = person["identifier"][0]["value"]
    for value in (f"{NHS_SYSTEM}|{nhs}", nhs):
        found = fhir.get("/Patient", params={"identifier": value}).json()
        assert ids(found) == {person["id"]}, value
    assert fhir.get("/Patient", params={"identifier": f"http://other|{nhs}"}).json()["total"] == 0


def test_token_not_modifier_and_or_values(fhir, person):
    ref = f"Patient/{person['id']}"
    active = create(fhir, care_plan(ref, status="active"))
    draft = create(fhir, care_plan(ref, status="draft"))
    base = {"subject": ref}
    assert ids(fhir.get("/CarePlan", params=base | {"status": "active"}).json()) == {active["id"]}
    assert ids(fhir.get("/CarePlan", params=base | {"status": "active,draft"}).json()) == {active["id"], draft["id"]}
    assert ids(fhir.get("/CarePlan", params=base | {"status:not": "active"}).json()) == {draft["id"]}


def test_string_search_prefix_exact_and_contains(fhir):
    family = unique("Ahmed")
    siobhan = create(fhir, patient(family=family, given="Siobhán"))
    assert ids(fhir.get("/Patient", params={"family": family[:8].lower()}).json()) >= {siobhan["id"]}
    assert ids(fhir.get("/Patient", params={"given": "siobhan", "family": family}).json()) == {siobhan["id"]}
    assert fhir.get("/Patient", params={"family:exact": family.lower()}).json()["total"] == 0
    assert ids(fhir.get("/Patient", params={"family:exact": family}).json()) == {siobhan["id"]}
    assert ids(fhir.get("/Patient", params={"family:contains": family[3:]}).json()) == {siobhan["id"]}
    assert ids(fhir.get("/Patient", params={"name": family}).json()) == {siobhan["id"]}


def test_reference_search_forms(fhir, person):
    ref = f"Patient/{person['id']}"
    g = create(fhir, goal(ref))
    for params in ({"subject": ref}, {"subject": person["id"]}, {"patient": ref},
                   {"subject:Patient": person["id"]}):
        assert ids(fhir.get("/Goal", params=params).json()) == {g["id"]}, params


def test_date_prefixes(fhir, person):
    ref = f"Patient/{person['id']}"
    plan = create(fhir, care_plan(ref, period={"start": "2026-03-01", "end": "2026-06-30"}))
    cases = {
        # eq: the searched range must contain the plan's whole period (R4 search, date).
        "2026-04": False, "eq2026": True, "ge2026-03-01": True, "gt2026-07-01": False,
        "lt2026-03-15": True, "le2026-02-28": False, "sa2026-02-01": True, "eb2026-07-01": True,
        "ne2026-04-01": True, "ap2026-04-15": True,
    }
    for value, expected in cases.items():
        found = ids(fhir.get("/CarePlan", params={"subject": ref, "date": value}).json())
        assert (plan["id"] in found) == expected, value


def test_missing_modifier(fhir, person):
    ref = f"Patient/{person['id']}"
    with_period = create(fhir, care_plan(ref))
    without = create(fhir, {k: v for k, v in care_plan(ref).items() if k != "period"})
    assert ids(fhir.get("/CarePlan", params={"subject": ref, "date:missing": "true"}).json()) == {without["id"]}
    assert ids(fhir.get("/CarePlan", params={"subject": ref, "date:missing": "false"}).json()) == {with_period["id"]}


def test_id_and_last_updated(fhir, person):
    assert ids(fhir.get("/Patient", params={"_id": person["id"]}).json()) == {person["id"]}
    stamp = person["meta"]["lastUpdated"]
    assert person["id"] in ids(fhir.get("/Patient", params={"_id": person["id"], "_lastUpdated": f"ge{stamp}"}).json())
    assert fhir.get("/Patient", params={"_id": person["id"], "_lastUpdated": "lt2000-01-01"}).json()["total"] == 0


def test_paging_follows_next_links_without_repeats(fhir):
    family = unique("Page")
    made = {create(fhir, patient(family=family))["id"] for _ in range(7)}
    seen: list[str] = []
    page = fhir.get("/Patient", params={"family": family, "_count": 3}).json()
    assert page["total"] == 7
    while True:
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = fhir.get(nxt[0]).json()
    assert len(seen) == 7 and set(seen) == made


def test_sort_by_parameter_and_last_updated(fhir):
    family = unique("Sort")
    for given, born in (("Cara", "1990-01-01"), ("Abe", "1970-01-01"), ("Bea", "1980-01-01")):
        create(fhir, patient(family=family, given=given, birthDate=born))
    by_birth = fhir.get("/Patient", params={"family": family, "_sort": "birthdate"}).json()
    assert [e["resource"]["birthDate"] for e in by_birth["entry"]] == ["1970-01-01", "1980-01-01", "1990-01-01"]
    desc = fhir.get("/Patient", params={"family": family, "_sort": "-birthdate"}).json()
    assert [e["resource"]["birthDate"] for e in desc["entry"]] == ["1990-01-01", "1980-01-01", "1970-01-01"]
    newest = fhir.get("/Patient", params={"family": family, "_sort": "-_lastUpdated"}).json()
    assert newest["entry"][0]["resource"]["name"][0]["given"] == ["Bea"]


def test_include_and_revinclude(fhir, person):
    ref = f"Patient/{person['id']}"
    plan = create(fhir, care_plan(ref))
    c = create(fhir, carer(ref))
    found = fhir.get("/CarePlan", params={"_id": plan["id"], "_include": "CarePlan:subject"}).json()
    assert ids(found) == {plan["id"]}
    assert ids(found, "include") == {person["id"]}
    assert found["total"] == 1
    rev = fhir.get("/Patient", params={"_id": person["id"], "_revinclude": "RelatedPerson:patient"}).json()
    assert ids(rev, "include") == {c["id"]}


def test_summary_count(fhir, person):
    ref = f"Patient/{person['id']}"
    create(fhir, goal(ref))
    create(fhir, goal(ref))
    r = fhir.get("/Goal", params={"subject": ref, "_summary": "count"}).json()
    assert r["total"] == 2
    assert not r.get("entry")


def test_post_search_matches_get(fhir, person):
    r = fhir.post("/Patient/_search", data={"_id": person["id"]},
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert ids(r.json()) == {person["id"]}


def test_unknown_parameter_lenient_warns_strict_refuses(fhir, person):
    lenient = fhir.get("/Patient", params={"_id": person["id"], "shoe-size": "9"}).json()
    assert ids(lenient) == {person["id"]}
    outcomes = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "shoe-size" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    strict = fhir.get("/Patient", params={"shoe-size": "9"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_bad_search_values_are_400(fhir):
    assert fhir.get("/CarePlan", params={"date": "yesterday"}).status_code == 400
    assert fhir.get("/Patient", params={"_count": "lots"}).status_code == 400
    assert fhir.get("/Patient", params={"birthdate:exact": "2020"}).status_code == 400


def test_an_empty_result_has_no_entry_array(fhir):
    """FHIR JSON never carries an empty array: no matches means no `entry` at all."""
    empty = fhir.get("/Patient", params={"family": unique("nobody-")})
    assert empty.json()["total"] == 0 and "entry" not in empty.json()
    assert b'"entry"' not in fhir.get("/Patient", params={"_summary": "count"}).content
