"""The store keeps each resource's patient and record part on every write path (REST, the
recorder's batch path), the grants of a Consent in the Consent's own transaction, and puts the
patient and part on each change event (headers ipc-patient / ipc-record-part)."""
from __future__ import annotations

import asyncio
import uuid

import psycopg

from hub.auth.organisations import CHARITY_NUMBER

from hub.consent.parts import PARTS
from hub.fhir.errors import FhirError
from hub.fhir.jsontext import dumps
from hub.search.access import Access
from hub.store import batch, outbox, resources
from tests.integration.access_cases import JSON, lead_charity_consent, make_person


def _place(pg_url: str, reference: str) -> tuple:
    res_type, res_id = reference.split("/")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute("SELECT patient_id, part FROM resource WHERE res_type = %s AND res_id = %s",
                            (res_type, res_id)).fetchone()


def test_rest_writes_are_placed_and_events_carry_the_place(fhir, pg_url):
    person = make_person(fhir)
    assert _place(pg_url, person.ids["flag"]) == (person.patient, "safeguarding")
    assert _place(pg_url, person.ids["observation"]) == (person.patient, "mental-health")
    assert _place(pg_url, person.ids["patient"]) == (person.patient, "demographics")
    assert _place(pg_url, f"Organization/{person.icb}") == (None, None)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT seq, res_type, res_id, version, method, patient_id, part FROM outbox "
                           "WHERE res_type = 'Flag' AND res_id = %s", (person.ids["flag"].split("/")[1],)).fetchone()
        version = conn.execute("SELECT patient_id, part FROM resource_version WHERE res_type = 'Flag' "
                               "AND res_id = %s", (person.ids["flag"].split("/")[1],)).fetchone()
    event = outbox.ChangeEvent(*row)
    assert event.headers() == [("ipc-patient", person.patient.encode()), ("ipc-record-part", b"safeguarding")]
    assert version == (person.patient, "safeguarding")
    assert outbox.ChangeEvent(1, "Organization", "o", 1, "PUT").headers() == []
    # A delete keeps the place on its version and event, so history and events stay filtered.
    assert fhir.delete(f"/{person.ids['flag']}").status_code == 204
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT method, patient_id, part FROM outbox WHERE res_type = 'Flag' AND res_id = %s "
                            "ORDER BY seq", (person.ids["flag"].split("/")[1],)).fetchall()
    assert rows[-1] == ("DELETE", person.patient, "safeguarding")


def test_consent_grants_follow_the_consent(recorder, fhir, pg_url):
    person = make_person(fhir)
    lead_charity_consent(recorder, person)

    def grants() -> set:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return set(conn.execute("SELECT role, org_system, org_code, part, permit FROM consent_grant "
                                    "WHERE consent_id = %s", (person.consent,)).fetchall())
    # Bound to the identifier the charity's Organization carried when the Consent was written.
    assert ("lead-charity", CHARITY_NUMBER, person.charity_number, "care-support-plan", True) in grants()
    assert len(grants()) == 5
    lead_charity_consent(recorder, person, status="inactive")
    assert grants() == set()
    # A transaction that fails after the Consent leaves no grants behind.
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": f"Consent/{person.consent}"},
         "resource": {**fhir.get(f"/Consent/{person.consent}").json(), "status": "active"}},
        {"request": {"method": "PUT", "url": f"Goal/{person.ids['goal'].split('/')[1]}", "ifMatch": 'W/"99"'},
         "resource": fhir.get(f"/{person.ids['goal']}").json()},
    ]}
    assert recorder.post("", content=dumps(bundle), headers=JSON).status_code == 412
    assert grants() == set()


def test_the_recorders_batch_path_places_resources_and_writes_grants(pg_url):
    patient_id = f"batch-{uuid.uuid4().hex[:8]}"
    consent_id = f"consent-{patient_id}"
    subject = {"reference": f"Patient/{patient_id}"}
    written = [
        {"resourceType": "Patient", "id": patient_id},
        {"resourceType": "Condition", "id": f"c-{patient_id}", "subject": subject, "code": {"text": "x"}},
        {"resourceType": "Provenance", "id": f"prov-{patient_id}", "recorded": "2026-01-01T00:00:00Z",
         "target": [{"reference": f"Condition/c-{patient_id}"}],
         "agent": [{"who": {"display": "a feed"}}]},
        {"resourceType": "Consent", "id": consent_id, "status": "active",
         "category": [{"coding": [{"system": "https://ipc-hub.example.org/fhir/CodeSystem/ipc-plan-category",
                                   "code": "record-sharing"}]}],
         "patient": subject, "provision": {"type": "deny", "provision": [
             {"type": "permit", "actor": [{"role": {"coding": [
                 {"system": "https://ipc-hub.example.org/fhir/CodeSystem/ipc-consent-partner", "code": "charity"}]},
                 "reference": {"display": "any charity"}}],
              "code": [{"coding": [{"system": "https://ipc-hub.example.org/fhir/CodeSystem/ipc-record-part",
                                    "code": "health"}]}]}]}},
    ]

    async def run() -> tuple:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            async with conn.transaction():
                staged = [batch.stage(r["resourceType"], r["id"], r, None) for r in written]
                await batch.write_staged(conn, staged, set())
            charity = Access("charity", "1234567", None, (), {"*": frozenset("rs")})
            seen = await resources.read(conn, "Condition", f"c-{patient_id}", access=charity)
            try:
                await resources.read(conn, "Patient", patient_id, access=charity)
                hidden = False
            except FhirError as exc:
                hidden = exc.status == 404
            education = Access("education", "E1", None, PARTS, {"*": frozenset("rs")})
            shown = await resources.read(conn, "Patient", patient_id, access=education)
            return seen, hidden, shown

    seen, hidden, shown = asyncio.run(run())
    assert seen.patient_id == patient_id  # health was shared with every charity
    assert hidden  # demographics was not: as if absent
    assert shown.res_id == patient_id  # not named by the consent: education's (configured) default
    assert _place(pg_url, f"Condition/c-{patient_id}") == (patient_id, "health")
    assert _place(pg_url, f"Provenance/prov-{patient_id}") == (patient_id, "health")  # its target's place


def test_provenance_sits_where_its_target_does(recorder, fhir, fhir_as, pg_url):
    person = make_person(fhir)
    lead_charity_consent(recorder, person)
    provenance = {"resourceType": "Provenance", "recorded": "2026-01-01T00:00:00Z",
                  "target": [{"reference": person.ids["flag"]}], "agent": [{"who": {"display": "a feed"}}]}
    created = fhir.post("/Provenance", content=dumps(provenance), headers=JSON)
    assert created.status_code == 201, created.text
    reference = f"Provenance/{created.json()['id']}"
    assert _place(pg_url, reference) == (person.patient, "safeguarding")
    charity = fhir_as(partner_class="charity", organisation=person.charity_number, scopes=["system/*.rs"])
    assert charity.get(f"/{reference}").status_code == 404
    assert charity.get("/Provenance", params={"target": person.ids["flag"]}).json()["total"] == 0
    # This one, and the one the hub wrote when the flag was written over the API.
    assert fhir.get("/Provenance", params={"target": person.ids["flag"]}).json()["total"] == 2
