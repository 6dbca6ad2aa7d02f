"""What a client writes over the API is attributed as the recorder attributes a feed: a
Provenance per request (per kind of write) naming the client, its organisation and partner
class, written in the same transaction, found from the version it targets."""
from __future__ import annotations

from tests import factories

FHIR_JSON = {"Content-Type": "application/fhir+json"}
CLIENT_IDS = "https://ipc-hub.example.org/fhir/Id/client-id"


def _provenance_of(fhir, version: str) -> list[dict]:
    """The Provenance naming exactly this version (the search matches the resource's every version)."""
    bundle = fhir.get("/Provenance", params={"target": version.split("/_history")[0]}).json()
    return [entry["resource"] for entry in bundle.get("entry", [])
            if version in {t["reference"] for t in entry["resource"]["target"]}]


def test_a_write_over_the_api_names_the_client_and_its_organisation(fhir, fhir_as):
    writer = fhir_as(partner_class="nhs", organisation="QT1", client_id="icb-commissioner",
                     scopes=("system/*.cruds",))
    created = writer.post("/Patient", json=factories.patient(), headers=FHIR_JSON)
    assert created.status_code == 201
    patient = created.json()
    [proof] = _provenance_of(fhir, f"Patient/{patient['id']}/_history/1")
    [author] = proof["agent"]
    assert author["who"]["identifier"] == {"system": CLIENT_IDS, "value": "icb-commissioner"}
    assert author["onBehalfOf"]["identifier"]["value"] == "QT1"
    assert author["role"][0]["coding"][0]["code"] == "nhs"
    assert proof["activity"]["coding"][0]["code"] == "CREATE"

    updated = writer.put(f"/Patient/{patient['id']}", json={**patient, "gender": "female"},
                         headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert updated.status_code == 200
    [proof] = _provenance_of(fhir, f"Patient/{patient['id']}/_history/2")
    assert proof["activity"]["coding"][0]["code"] == "UPDATE"
    assert writer.delete(f"/Patient/{patient['id']}").status_code == 204
    [proof] = _provenance_of(fhir, f"Patient/{patient['id']}/_history/3")
    assert proof["activity"]["coding"][0]["code"] == "DELETE"


def test_a_transaction_is_attributed_once_per_kind_of_write_and_a_refused_one_not_at_all(fhir):
    patient = fhir.post("/Patient", json=factories.patient(), headers=FHIR_JSON).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:7d1b2f0e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Flag", "status": "active", "code": {"text": "Prefers phone calls"},
                      "subject": {"reference": f"Patient/{patient['id']}"}},
         "request": {"method": "POST", "url": "Flag"}},
        {"resource": {**patient, "gender": "male"}, "request": {"method": "PUT", "url": f"Patient/{patient['id']}"}},
    ]}
    reply = fhir.post("/", json=bundle, headers=FHIR_JSON)
    assert reply.status_code == 200, reply.text
    flag = reply.json()["entry"][0]["response"]["location"].split("/_history")[0]
    [made] = _provenance_of(fhir, f"{flag}/_history/1")
    [changed] = _provenance_of(fhir, f"Patient/{patient['id']}/_history/2")
    assert made["activity"]["coding"][0]["code"] == "CREATE"
    assert changed["activity"]["coding"][0]["code"] == "UPDATE"
    assert made["agent"][0]["who"]["identifier"]["value"] == "test-admin"

    before = fhir.get("/Provenance", params={"_summary": "count"}).json()["total"]
    bundle["entry"][1]["request"]["ifMatch"] = 'W/"1"'  # stale now: the whole transaction fails
    assert fhir.post("/", json=bundle, headers=FHIR_JSON).status_code == 412
    assert fhir.get("/Provenance", params={"_summary": "count"}).json()["total"] == before
