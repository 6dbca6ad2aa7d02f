"""Errors driven with a person's details in every part of the request (path, query, headers,
body) leave no trace of those details in the hub's logs, and no stack trace in any answer."""
from __future__ import annotations

import logging

import pytest

from tests import factories

NAME = "Zebedee-Quixotic"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture()
def all_logs(caplog: pytest.LogCaptureFixture):
    """Every log record from every logger, uvicorn's own (which do not propagate) included."""
    caplog.set_level(logging.DEBUG)
    extra = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    for logger in extra:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in extra:
        logger.removeHandler(caplog.handler)


def test_errors_carrying_personal_data_leave_none_in_logs_or_traces_in_answers(fhir, fhir_as, hub_url, all_logs):
    import httpx

    nhs = factories.test_nhs_number()
    person = factories.patient(family=NAME, given=NAME)
    person["identifier"][0]["value"] = nhs
    answers = [
        fhir.post("/Patient", json={**person, "birthDate": f"{nhs}-{NAME}"}, headers=FHIR_JSON),  # 400/422
        fhir.post("/Patient", content=f'{{"resourceType":"Patient","name":[{{"family":"{NAME}"'.encode(),
                  headers=FHIR_JSON),  # broken JSON
        fhir.post("/Patient", content=f"<Patient><name value='{NAME}'".encode(),
                  headers={"Content-Type": "application/fhir+xml"}),  # broken XML
        fhir.post("/Patient", json=person, headers={"Content-Type": f"text/{NAME}"}),  # 415
        fhir.put(f"/Patient/{nhs}", json={**person, "id": NAME}, headers=FHIR_JSON),  # id mismatch
        fhir.put(f"/Patient/{nhs}", json={**person, "id": nhs}, headers={**FHIR_JSON, "If-Match": NAME}),
        fhir.get("/Patient", params={"birthdate": f"{NAME}{nhs}"}),  # bad date value
        fhir.get("/Patient", params={f"{NAME}": nhs}, headers={"Prefer": "handling=strict"}),
        fhir.get("/Patient", params={"identifier": f"https://fhir.nhs.uk/Id/nhs-number|{nhs}",
                                     "_count": NAME}),
        fhir.get(f"/Patient/{nhs}/_history/{NAME}"),
        fhir.get(f"/{NAME}/{nhs}"),
        fhir.get("/Patient", params={"name": NAME}, headers={"Accept": f"application/{NAME}"}),  # 406
        fhir.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": person, "request": {"method": NAME, "url": f"Patient/{nhs}"}}]}, headers=FHIR_JSON),
        httpx.get(f"{hub_url}/fhir/Patient", params={"identifier": nhs, "name": NAME}),  # no token
        httpx.get(f"{hub_url}/fhir/Patient", params={"name": NAME},
                  headers={"Authorization": f"Bearer {NAME}.{nhs}.x"}),  # a forged token
        fhir_as(partner_class="charity", scopes=("system/Goal.rs",)).get("/Patient", params={"name": NAME}),
    ]
    assert all(400 <= a.status_code < 500 for a in answers), str([a.status_code for a in answers])
    for answer in answers:
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert "Traceback" not in answer.text and 'File "' not in answer.text

    # The test's own HTTP client (httpx, httpcore) logs the URLs it calls; the hub is everything else.
    hub_records = [r for r in all_logs.records if r.name.split(".")[0] not in ("httpx", "httpcore")]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in hub_records)
    assert nhs not in logged
    assert "Traceback" not in logged
    assert NAME.lower() not in logged.lower()
