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


def test_an_unexpected_failure_is_a_500_outcome_and_logs_neither_its_text_nor_a_traceback(pg_url, all_logs):
    """A failure nobody foresaw (here a route that raises with a person's details in its message,
    as a database error repeating a refused value would) answers 500 with an OperationOutcome, and
    the server logs only its kind and place — not its text, not a traceback."""
    import threading

    import httpx
    import uvicorn

    from hub.api.app import create_app
    from hub.config import Settings
    from tests.integration.conftest import free_port

    nhs = factories.test_nhs_number()
    port = free_port()
    app = create_app(Settings(database_url=pg_url, http_port=port, auth_enabled=False, audit_enabled=False,
                              db_pool_min=1, db_pool_max=2), pg_url)

    async def boom(res_id: str):
        raise RuntimeError(f"value {nhs} for {NAME} violates a constraint")

    app.add_api_route("/fhir/Boom/{res_id}", boom)
    app.router.routes.insert(0, app.router.routes.pop())  # before the generic /fhir/{type}/{id}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, loop="asyncio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        answer = None
        for _ in range(200):
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/fhir/Boom/1", timeout=5)
                break
            except httpx.TransportError:
                threading.Event().wait(0.05)
        assert answer is not None and answer.status_code == 500
        assert answer.json()["issue"][0]["code"] == "exception"
        assert nhs not in answer.text and NAME not in answer.text
    finally:
        server.should_exit = True
        thread.join(10)
    logged = all_logs.text  # formatted, tracebacks included
    assert "unhandled RuntimeError in GET /fhir/Boom/1" in logged
    assert nhs not in logged and NAME not in logged and "Traceback" not in logged
