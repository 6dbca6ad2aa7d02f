"""Audit records and the AuditEvents rendered from them: pure functions, no I/O."""
from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime

import pytest

from hub.audit.events import CLIENT_ID_SYSTEM, PARTNER_CLASS_SYSTEM, audit_event
from hub.audit.record import AuditRecord, build_record, classify, is_audited, outcome_of, target_of
from hub.auth.principal import Principal
from hub.fhir.errors import FhirError
from hub.store.audit import COLUMNS, parse_audit_query

MOMENT = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
PRINCIPAL = Principal(client_id="gp-system", organisation="RX1",
                      organisation_system="https://fhir.nhs.uk/Id/ods-organization-code",
                      partner_class="nhs", scopes=frozenset({"system/*.rs"}), token_id="jti-1",
                      expires_at=0, purpose_of_use="TREAT")


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/fhir/Patient/1", ("read", "R")),
    ("GET", "/fhir/Patient/1/_history/2", ("vread", "R")),
    ("GET", "/fhir/Patient/1/_history", ("history-instance", "R")),
    ("GET", "/fhir/Patient/_history", ("history-type", "R")),
    ("GET", "/fhir/_history", ("history-system", "R")),
    ("GET", "/fhir/Patient", ("search-type", "E")),
    ("POST", "/fhir/Patient/_search", ("search-type", "E")),
    ("POST", "/fhir/Patient", ("create", "C")),
    ("PUT", "/fhir/Patient/1", ("update", "U")),
    ("PUT", "/fhir/Patient", ("update", "U")),
    ("DELETE", "/fhir/Patient/1", ("delete", "D")),
    ("POST", "/fhir", ("transaction", "E")),
    ("GET", "/fhir/Patient/1/$everything", ("operation", "E")),
])
def test_each_interaction_gets_its_restful_code_and_action(method, path, expected):
    assert classify(method, path) == expected


def test_only_fhir_interactions_that_can_disclose_a_record_are_audited():
    assert is_audited("/fhir/Patient/1") and is_audited("/fhir") and is_audited("/fhir/AuditEvent")
    assert not is_audited("/fhir/metadata")
    assert not is_audited("/healthz") and not is_audited("/auth/token") and not is_audited("/fhirx")


def test_outcome_codes_follow_the_http_status():
    assert [outcome_of(s) for s in (200, 201, 304, 401, 403, 404, 500, 503, 0)] == [0, 0, 0, 4, 4, 4, 8, 8, 12]


def test_target_is_the_instance_a_path_names():
    assert target_of("/fhir/Patient/abc-1") == "Patient/abc-1"
    assert target_of("/fhir/Patient/abc-1/_history/3") == "Patient/abc-1"
    assert target_of("/fhir/Patient/_history") is None
    assert target_of("/fhir/Patient/_search") is None
    assert target_of("/fhir/Patient") is None


def test_a_record_joins_what_the_access_layer_noted_with_what_the_request_named():
    state = {"principal": PRINCIPAL, "audit_patients": {"p2"}, "audit_entities": ["CarePlan/c1"]}
    record = build_record(method="GET", path="/fhir/Patient/p1", query="", status=200, recorded=MOMENT,
                          state=state, address="10.0.0.7")
    assert record.patients == ["p1", "p2"]
    assert record.entities == ["Patient/p1", "CarePlan/c1"]
    assert (record.client_id, record.organisation, record.partner_class) == ("gp-system", "RX1", "nhs")
    assert (record.interaction, record.action, record.outcome) == ("read", "R", 0)


def test_a_create_is_recorded_against_the_resource_its_location_names():
    record = build_record(method="POST", path="/fhir/Patient", query="", status=201, recorded=MOMENT,
                          state={"principal": PRINCIPAL}, address=None,
                          location="https://hub.example/base/fhir/Patient/new-1/_history/1")
    assert record.patients == ["new-1"] and record.entities == ["Patient/new-1"]


def test_a_refusal_without_a_principal_is_still_a_record():
    record = build_record(method="GET", path="/fhir/Patient/p1", query="", status=401, recorded=MOMENT,
                          state={}, address="10.0.0.9")
    assert record.client_id is None and record.outcome == 4 and record.patients == ["p1"]
    event = audit_event(record, site="https://hub/fhir")
    assert event["agent"][0]["who"] == {"display": "unauthenticated caller"}
    assert event["agent"][0]["network"] == {"address": "10.0.0.9", "type": "2"}


def test_entities_are_capped_at_one_hundred():
    state = {"principal": PRINCIPAL, "audit_entities": [f"Goal/g{i}" for i in range(150)]}
    record = build_record(method="GET", path="/fhir/Patient/p1", query="", status=200, recorded=MOMENT,
                          state=state, address=None)
    assert len(record.entities) == 100 and record.entities[0] == "Patient/p1"


def test_the_audit_event_carries_the_standard_codes_and_the_agent():
    state = {"principal": PRINCIPAL, "audit_patients": {"p1"}}
    record = build_record(method="GET", path="/fhir/CarePlan", query="subject=Patient/p1", status=200,
                          recorded=MOMENT, state=state, address="10.0.0.7")
    event = audit_event(record, site="https://hub/fhir")
    assert event["resourceType"] == "AuditEvent" and event["id"] == record.id
    assert event["type"]["code"] == "rest"
    assert event["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type"}]
    assert event["action"] == "E" and event["outcome"] == "0"
    assert event["recorded"] == "2026-11-24T09:30:00.000000Z"
    client, organisation = event["agent"]
    assert client["requestor"] is True
    assert client["who"]["identifier"] == {"system": CLIENT_ID_SYSTEM, "value": "gp-system"}
    assert client["role"][0]["coding"][0] == {"system": PARTNER_CLASS_SYSTEM, "code": "nhs"}
    assert client["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert organisation["who"]["identifier"]["value"] == "RX1" and organisation["requestor"] is False
    assert event["source"]["site"] == "https://hub/fhir"
    patient, query = event["entity"]
    assert patient["what"] == {"reference": "Patient/p1"} and patient["role"]["code"] == "1"
    assert base64.b64decode(query["query"]).decode() == "subject=Patient/p1"


def test_the_audit_event_is_valid_r4():
    from fhir.resources.R4B.auditevent import AuditEvent

    state = {"principal": PRINCIPAL, "audit_patients": {"p1"}, "audit_entities": ["Goal/g1"]}
    record = build_record(method="GET", path="/fhir/Goal", query="patient=p1", status=403,
                          recorded=MOMENT, state=state, address="10.0.0.7")
    AuditEvent.model_validate(audit_event(record, site="https://hub/fhir"))


def test_record_fields_are_the_table_columns_in_order():
    assert tuple(f.name for f in dataclasses.fields(AuditRecord)) == COLUMNS


def test_audit_search_parameters_become_conditions():
    query = parse_audit_query([("patient", "Patient/p1,p2"), ("date", "ge2026-01-01"), ("agent", "gp"),
                               ("_count", "5"), ("_summary", "count"), ("colour", "red")],
                              default_count=20, max_count=100)
    assert query.params[0] == ["p1", "p2"]
    assert query.count == 5 and query.summary_count and query.ignored == ["colour"]
    assert len(query.conditions) == 3


@pytest.mark.parametrize("pairs", [[("date", "yesterday")], [("date", "xx2026")], [("patient", "Goal/1")],
                                   [("_count", "-1")], [("entity", "nothing")], [("_summary", "text")]])
def test_bad_audit_search_values_are_refused(pairs):
    with pytest.raises(FhirError):
        parse_audit_query(pairs, default_count=20, max_count=100)


def test_a_nul_character_is_recorded_as_it_came_on_the_wire():
    """The API refuses a NUL in a path or form (400), and the refusal is audited: the record must
    be storable (PostgreSQL text holds no NUL), or it would hold up the writer's queue."""
    record = build_record(method="POST", path="/fhir/Patient/a\x00b", query="name=x\x00y", status=400,
                          recorded=MOMENT, state={}, address=None)
    stored = [record.path, record.query, *record.entities, *record.patients]
    assert all("\x00" not in value for value in stored)
    assert record.path == "/fhir/Patient/a%00b" and record.query == "name=x%00y"
