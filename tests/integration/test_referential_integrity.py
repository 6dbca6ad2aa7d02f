"""Referential integrity on every write path (hub.store.integrity): REST create, update and
conditional update, transaction and batch entries; deletes refused while current resources refer
to the target; hidden treated as absent. (The recorder's path: tests/pipeline/test_write_rules.py.)"""
from __future__ import annotations

import httpx
import pytest

from tests.factories import goal, patient, unique
from tests.integration.access_cases import make_person

JSON = {"Content-Type": "application/fhir+json"}
MARK = "https://example.org/test-marks"


def marked(subject: str, mark: str, **extra) -> dict:
    """A Goal findable by `identifier=<mark>`."""
    return goal(subject, text=mark, identifier=[{"system": MARK, "value": mark}], **extra)


def _post(fhir: httpx.Client, resource: dict) -> httpx.Response:
    return fhir.post(f"/{resource['resourceType']}", json=resource, headers=JSON)


def _count(fhir: httpx.Client, res_type: str, **params) -> int:
    return fhir.get(f"/{res_type}", params={**params, "_summary": "count"}).json()["total"]


def _refused_for(response: httpx.Response, element: str, reference: str) -> None:
    assert response.status_code == 422, response.text
    issues = response.json()["issue"]
    assert any(i["code"] == "processing" and i["expression"] == [element] and reference in i["diagnostics"]
               for i in issues), issues


@pytest.fixture()
def person(fhir) -> str:
    r = _post(fhir, patient(family=unique("Ref")))
    assert r.status_code == 201
    return f"Patient/{r.json()['id']}"


def test_create_with_a_reference_to_nothing_is_422_naming_the_element_and_stores_nothing(fhir):
    text = unique("dangling-")
    r = _post(fhir, marked("Patient/does-not-exist", text))
    _refused_for(r, "Goal.subject", "Patient/does-not-exist")
    assert _count(fhir, "Goal", identifier=text) == 0


def test_update_and_conditional_update_with_a_reference_to_nothing_are_422(fhir, person):
    text = unique("upd-")
    r = fhir.put(f"/Goal/{unique('g-')}", json={**marked("Patient/nobody", text), "id": "x"}, headers=JSON)
    assert r.status_code == 400  # the id check comes first; now with the right id:
    gid = unique("g-")
    r = fhir.put(f"/Goal/{gid}", json={**marked("Patient/nobody", text), "id": gid}, headers=JSON)
    _refused_for(r, "Goal.subject", "Patient/nobody")
    r = fhir.put("/Goal", params={"identifier": f"{MARK}|{text}"}, json=marked(person, text,
                                                                   addresses=[{"reference": "Condition/gone"}]),
                 headers=JSON)
    _refused_for(r, "Goal.addresses[0]", "Condition/gone")
    assert _count(fhir, "Goal", identifier=text) == 0


def test_a_deleted_target_and_a_missing_version_do_not_resolve_but_an_existing_version_does(fhir, person):
    other = _post(fhir, patient(family=unique("Gone"))).json()
    assert fhir.delete(f"/Patient/{other['id']}").status_code == 204
    _refused_for(_post(fhir, goal(f"Patient/{other['id']}")), "Goal.subject", f"Patient/{other['id']}")
    _refused_for(_post(fhir, goal(f"{person}/_history/9")), "Goal.subject", f"{person}/_history/9")
    assert _post(fhir, goal(f"{person}/_history/1")).status_code == 201


def test_contained_absolute_and_logical_references_are_not_checked(fhir, person):
    resource = goal(person, contained=[{"resourceType": "Condition", "id": "c1",
                                        "subject": {"reference": person}, "code": {"text": "Back pain"}}],
                    addresses=[{"reference": "#c1"},
                               {"reference": "https://other.example.org/fhir/Condition/123"},
                               {"identifier": {"system": "https://example.org/conditions", "value": "77"}}])
    assert _post(fhir, resource).status_code == 201
    # A contained resource's own literal references are checked like any other.
    bad = goal(person, contained=[{"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/none"},
                                   "code": {"text": "x"}}], addresses=[{"reference": "#c1"}])
    _refused_for(_post(fhir, bad), "Goal.contained[0].subject", "Patient/none")


def test_a_reference_the_client_may_not_see_is_refused_exactly_as_a_missing_one(fhir, fhir_as):
    person = make_person(fhir)  # the charity sees nothing of this person (no consent)
    charity = fhir_as(partner_class="charity", organisation=person.charity_number, scopes=["system/*.cruds"])
    hidden = charity.post("/Goal", json=goal(f"Patient/{person.patient}"), headers=JSON)
    missing = charity.post("/Goal", json=goal("Patient/acc-none"), headers=JSON)
    assert hidden.status_code == missing.status_code == 422
    said = [r.json()["issue"][0]["diagnostics"] for r in (hidden, missing)]
    assert said[0].replace(person.patient, "X") == said[1].replace("acc-none", "X")


def test_a_transaction_resolves_its_own_entries_in_any_order_and_refuses_a_dangling_one(fhir):
    text = unique("tx-")
    ok = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:goal", "resource": marked("urn:uuid:person", text),
         "request": {"method": "POST", "url": "Goal"}},
        {"fullUrl": "urn:uuid:person", "resource": patient(family=unique("Tx")),
         "request": {"method": "POST", "url": "Patient"}}]}
    r = fhir.post("", json=ok, headers=JSON)
    assert r.status_code == 200, r.text
    bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p2", "resource": patient(family=unique("Tx")), "request": {"method": "POST", "url": "Patient"}},
        {"resource": marked("Patient/not-here", text + "-bad"), "request": {"method": "POST", "url": "Goal"}}]}
    r = fhir.post("", json=bad, headers=JSON)
    _refused_for(r, "Bundle.entry[1].resource.subject", "Patient/not-here")
    assert _count(fhir, "Goal", identifier=text + "-bad") == 0
    assert _count(fhir, "Patient", family=bad["entry"][0]["resource"]["name"][0]["family"]) == 0


def test_a_batch_refuses_only_the_dangling_entry(fhir, person):
    text = unique("batch-")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": marked("Patient/not-here", text), "request": {"method": "POST", "url": "Goal"}},
        {"resource": marked(person, text), "request": {"method": "POST", "url": "Goal"}}]}
    r = fhir.post("", json=batch, headers=JSON)
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0] == "422" and statuses[1].startswith("201")
    issue = r.json()["entry"][0]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["Bundle.entry[0].resource.subject"]
    assert _count(fhir, "Goal", identifier=text) == 1


def test_deleting_a_referenced_resource_is_409_naming_the_referrers_and_keeps_it(fhir, person):
    referrers = [_post(fhir, goal(person)).json()["id"] for _ in range(2)]
    r = fhir.delete(f"/{person}")
    assert r.status_code == 409
    said = r.json()["issue"][0]["diagnostics"]
    assert all(f"Goal/{g}" in said for g in referrers)
    assert fhir.get(f"/{person}").status_code == 200
    # Once nothing refers to it, it goes.
    for g in referrers:
        assert fhir.delete(f"/Goal/{g}").status_code == 204
    assert fhir.delete(f"/{person}").status_code == 204


def test_a_transaction_may_delete_a_resource_and_what_refers_to_it_together(fhir, person):
    g = _post(fhir, goal(person)).json()["id"]
    both = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": person}},
        {"request": {"method": "DELETE", "url": f"Goal/{g}"}}]}
    assert fhir.post("", json=both, headers=JSON).status_code == 200
    assert fhir.get(f"/{person}").status_code == 410
    only = _post(fhir, patient(family=unique("Kept"))).json()["id"]
    _post(fhir, goal(f"Patient/{only}"))
    r = fhir.post("", json={"resourceType": "Bundle", "type": "transaction",
                            "entry": [{"request": {"method": "DELETE", "url": f"Patient/{only}"}}]}, headers=JSON)
    assert r.status_code == 409 and r.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert fhir.get(f"/Patient/{only}").status_code == 200


def test_the_operator_may_let_deletes_leave_references_dangling(start_api, admin_token, fhir, person):
    _post(fhir, goal(person))
    api = start_api(referential_integrity_on_delete=False)
    with httpx.Client(base_url=f"{api.url}/fhir", headers={"Authorization": f"Bearer {admin_token}"}) as other:
        assert other.delete(f"/{person}").status_code == 204
