"""The hub as real FHIR client libraries see it: fhirclient (SMART on FHIR's Python client) and
fhirpy. What they send — criteria on a POST URL for get-or-create, `_summary`, `_elements`,
following `next` links, POSTing an operation — does what the CapabilityStatement says."""
from __future__ import annotations

import pytest
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.patient import Patient
from fhirpy import SyncFHIRClient

from tests.factories import NHS_SYSTEM, patient, test_nhs_number, unique


@pytest.fixture()
def smart(hub_url, admin_token):
    found = smart_client.FHIRClient(settings={"app_id": "ipc-hub-tests", "api_base": f"{hub_url}/fhir/"})
    found.server.session.headers["Authorization"] = f"Bearer {admin_token}"
    return found


@pytest.fixture()
def fhirpy_client(hub_url, admin_token) -> SyncFHIRClient:
    return SyncFHIRClient(f"{hub_url}/fhir", authorization=f"Bearer {admin_token}")


def test_fhirclient_reads_the_capability_statement_and_subsets_with_summary_and_elements(smart, fhirpy_client):
    statement = CapabilityStatement.read_from("metadata", smart.server)
    assert statement.fhirVersion == "4.0.1"
    assert statement.implementationGuide
    family = unique("Lib")
    fhirpy_client.resource("Patient", **patient(family=family, photo=[{"contentType": "image/png", "data": "aGk="}])).save()
    found = Patient.where(struct={"family": family, "_summary": "true"}).perform(smart.server)
    assert isinstance(found, Bundle) and found.total == 1
    summary = found.entry[0].resource
    assert summary.name[0].family == family and summary.photo is None
    assert any(tag.code == "SUBSETTED" for tag in summary.meta.tag)
    only = list(Patient.where(struct={"family": family, "_elements": "gender"}).perform_resources_iter(smart.server))
    assert only[0].gender == "male" and only[0].name is None


def test_fhirpy_get_or_create_sends_criteria_on_the_post_url_and_gets_one_person(fhirpy_client):
    nhs = test_nhs_number()
    person = patient(family=unique("Once"), identifier=[{"system": NHS_SYSTEM, "value": nhs}])
    search = fhirpy_client.resources("Patient").search(identifier=f"{NHS_SYSTEM}|{nhs}")
    first, created = search.get_or_create(fhirpy_client.resource("Patient", **person))
    again, created_again = search.get_or_create(fhirpy_client.resource("Patient", **person))
    assert created and not created_again and again.id == first.id
    assert fhirpy_client.resources("Patient").search(identifier=f"{NHS_SYSTEM}|{nhs}").count() == 1


def test_fhirpy_follows_next_links_to_the_end_and_count_zero_is_not_a_loop(fhirpy_client):
    family = unique("Page")
    for given in ("Ann", "Bea", "Cat"):
        fhirpy_client.resource("Patient", **patient(family=family, given=given)).save()
    everyone = fhirpy_client.resources("Patient").search(family=family).limit(1).fetch_all()
    assert sorted(p.name[0].given[0] for p in everyone) == ["Ann", "Bea", "Cat"]
    assert fhirpy_client.resources("Patient").search(family=family).limit(0).fetch_all() == []
    assert [p.gender for p in fhirpy_client.resources("Patient").search(family=family).elements("gender").fetch()] \
        == ["male"] * 3


def test_fhirpy_posts_everything_and_reads_it_back(fhirpy_client):
    person = fhirpy_client.resource("Patient", **patient(family=unique("Ops")))
    person.save()
    record = fhirpy_client.execute(f"Patient/{person.id}/$everything", method="post")
    assert record["resourceType"] == "Bundle"
    assert f"Patient/{person.id}" in {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in record["entry"]}
