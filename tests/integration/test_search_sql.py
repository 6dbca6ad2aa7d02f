"""hub.search against the real schema: resources and their index rows are loaded once per
module (through a local stand-in for the repository), then each search must return exactly the
expected ids."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Json

from hub.search.extract import TABLE_COLUMNS, index_rows
from hub.search.parse import parse_search
from hub.search.sql import (

    build_count_sql,
    build_include_sql,
    build_revinclude_sql,
    build_search_sql,
    known_total,
)
from hub.search.access import Access

SYSTEM = Access.system()

pytestmark = pytest.mark.integration

NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
SCT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
UKCORE_PATIENT = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"


def patient(res_id: str, family: str, given: list[str], **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": res_id, "name": [{"family": family, "given": given}], **more}


RESOURCES: list[tuple[dict[str, Any], str]] = [  # (resource, last_updated)
    (patient("p1", "Brontë", ["Zoë"], gender="female", birthDate="1968-03-21", active=True,
             identifier=[{"system": NHS, "value": "9000000009"}],
             telecom=[{"system": "phone", "value": "01632 960587"}],
             address=[{"line": ["1 Trevelyan Square"], "city": "Leeds", "postalCode": "LS1 6AE"}],
             generalPractitioner=[{"reference": "Organization/org1", "identifier": {"system": ODS, "value": "Y12345"}}],
             meta={"profile": [UKCORE_PATIENT], "tag": [{"system": "http://example.org/tags", "code": "ipc"}]}),
     "2024-01-01T10:00:00Z"),
    (patient("p2", "Smith", ["John"], gender="male", birthDate="1980",
             identifier=[{"system": NHS, "value": "9000000017"}],
             address=[{"city": "London"}],
             generalPractitioner=[{"reference": "Organization/org2"}],
             managingOrganization={"reference": "Organization/org1"}),
     "2024-02-01T00:00:00Z"),
    (patient("p3", "Smithson", ["Jane", "100 Xr"], gender="female", birthDate="1980-06-15",
             deceasedDateTime="2023-05-01T08:30:00+01:00"),
     "2024-03-01T00:00:00Z"),
    (patient("p4", "100%_Real", ["Al"], gender="unknown", birthDate="2001-01-01"),
     "2024-04-01T00:00:00Z"),
    ({"resourceType": "Organization", "id": "org1", "name": "Leeds GP",
      "identifier": [{"system": ODS, "value": "Y12345"}]}, "2023-01-01T00:00:00Z"),
    ({"resourceType": "Organization", "id": "org2", "name": "London GP"}, "2023-01-01T00:00:00Z"),
    ({"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Jones"}]}, "2023-01-01T00:00:00Z"),
    ({"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan",
      "subject": {"reference": "Patient/p1"},
      "category": [{"coding": [{"system": SCT, "code": "734163000", "display": "Care plan"}],
                    "text": "Personalised care and support plan"}],
      "period": {"start": "2024-02-01", "end": "2025-01-31"},
      "instantiatesCanonical": ["https://example.org/PlanDefinition/ipc|1.0"],
      "goal": [{"reference": "Goal/goal1"}]}, "2024-02-01T00:00:00Z"),
    ({"resourceType": "CarePlan", "id": "cp2", "status": "completed", "intent": "plan",
      "subject": {"reference": "Patient/p2"}, "period": {"start": "2022-01-01", "end": "2022-12-31"}},
     "2024-02-02T00:00:00Z"),
    ({"resourceType": "CarePlan", "id": "cp3", "status": "draft", "intent": "proposal",
      "subject": {"reference": "Patient/p1"}, "period": {"start": "2025-06-01"}}, "2024-02-03T00:00:00Z"),
    ({"resourceType": "Goal", "id": "goal1", "lifecycleStatus": "active", "subject": {"reference": "Patient/p1"},
      "description": {"text": "Walk daily"}, "startDate": "2024-02-01",
      "target": [{"dueDate": "2024-06-30"}]}, "2024-02-01T00:00:00Z"),
    ({"resourceType": "Goal", "id": "goal2", "lifecycleStatus": "proposed",
      "subject": {"reference": "https://other.example/fhir/Patient/p1"},
      "description": {"text": "Sleep"}}, "2024-02-01T00:00:00Z"),
    ({"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
      "valueQuantity": {"value": 72.5, "unit": "kg", "system": UCUM, "code": "kg"}}, "2024-01-01T00:00:00Z"),
    ({"resourceType": "Observation", "id": "o2", "status": "final", "subject": {"reference": "Patient/p1"},
      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
      "valueQuantity": {"value": 80, "unit": "kg", "system": UCUM, "code": "kg"}}, "2024-01-01T00:00:00Z"),
    ({"resourceType": "Observation", "id": "o3", "status": "final", "subject": {"reference": "Patient/p2"},
      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
      "valueQuantity": {"value": 72.5, "unit": "lb", "system": UCUM, "code": "[lb_av]"}}, "2024-01-01T00:00:00Z"),
    ({"resourceType": "Observation", "id": "o4", "status": "final", "subject": {"reference": "Patient/p2"},
      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
      "valueQuantity": {"value": 5, "comparator": "<", "unit": "kg", "system": UCUM, "code": "kg"}},
     "2024-01-01T00:00:00Z"),  # an open range: (-infinity, 5.5) in numeric
    ({"resourceType": "RiskAssessment", "id": "ra1", "status": "final", "subject": {"reference": "Patient/p1"},
      "prediction": [{"probabilityDecimal": 0.25}]}, "2024-01-01T00:00:00Z"),
    ({"resourceType": "RiskAssessment", "id": "ra2", "status": "final", "subject": {"reference": "Patient/p2"},
      "prediction": [{"probabilityDecimal": 0.7}]}, "2024-01-01T00:00:00Z"),
    ({"resourceType": "Provenance", "id": "prov1", "target": [{"reference": "CarePlan/cp1"}],
      "recorded": "2024-02-01T10:00:00Z", "agent": [{"who": {"reference": "Practitioner/pr1"}}]},
     "2024-02-01T10:00:00Z"),
]

# Deleted: its index rows are still present (as if the repository were late removing them),
# and it must never be found.
DELETED = patient("p5", "Smith", ["Deleted"], gender="male")


def store(conn: psycopg.Connection, resource: dict[str, Any], last_updated: str, deleted: bool = False) -> None:
    """What the repository does on a write: the current version plus its index rows."""
    res_type, res_id = resource["resourceType"], resource["id"]
    conn.execute(
        "INSERT INTO resource (res_type, res_id, version, last_updated, deleted, content) "
        "VALUES (%s, %s, 1, %s, %s, %s)",
        (res_type, res_id, datetime.fromisoformat(last_updated), deleted, None if deleted else Json(resource)),
    )
    for table, rows in index_rows(resource).tables().items():
        if rows:
            columns = ("res_type", "res_id", *TABLE_COLUMNS[table])
            placeholders = ", ".join(["%s"] * len(columns))
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
                    [(res_type, res_id, *row) for row in rows],
                )


@pytest.fixture(scope="module")
def db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migration'"
        )]
        conn.execute("TRUNCATE " + ", ".join(tables))
        for resource, last_updated in RESOURCES:
            store(conn, resource, last_updated)
        store(conn, DELETED, "2024-05-01T00:00:00Z", deleted=True)
    return pg_url


@pytest.fixture(scope="module")
def conn(db: str):
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


def search(conn: psycopg.Connection, res_type: str, query: str, **kwargs: Any) -> list[str]:
    """Ids of the page for `query` ("a=b&c=d"), in result order."""
    req = parse_search(res_type, _pairs(query), strict=True)
    sql, params = build_search_sql(req, access=SYSTEM, **kwargs)
    return [row[0] for row in conn.execute(sql, params)]


def _pairs(query: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in query.split("&") if p]  # type: ignore[misc]


def ids(conn: psycopg.Connection, res_type: str, query: str) -> set[str]:
    return set(search(conn, res_type, query))


@pytest.mark.parametrize(("res_type", "query", "expected"), [
    # token
    ("Patient", "gender=female", {"p1", "p3"}),
    ("Patient", "gender=male,unknown", {"p2", "p4"}),
    ("Patient", "gender:not=female", {"p2", "p4"}),
    ("Patient", f"identifier={NHS}|9000000009", {"p1"}),
    ("Patient", "identifier=9000000009", {"p1"}),
    ("Patient", "identifier=|9000000009", set()),
    ("Patient", f"identifier={NHS}|", {"p1", "p2"}),
    ("Patient", "active=true", {"p1"}),
    ("Patient", "phone=01632 960587", {"p1"}),
    ("Patient", "_tag=http://example.org/tags|ipc", {"p1"}),
    ("Patient", "_id=p1,p3", {"p1", "p3"}),
    ("Patient", "_id:not=p1", {"p2", "p3", "p4"}),
    ("CarePlan", "category:text=personal", {"cp1"}),
    ("CarePlan", "category:text=support", {"cp1"}),
    ("CarePlan", "category:text=care plan", {"cp1"}),
    ("CarePlan", "category:text=plan", {"cp1"}),
    ("CarePlan", "category:text=xyz", set()),
    ("CarePlan", f"category={SCT}|734163000", {"cp1"}),
    ("CarePlan", "status=active,draft", {"cp1", "cp3"}),
    ("Observation", "code=http://loinc.org|29463-7", {"o1", "o2", "o3", "o4"}),
    # string
    ("Patient", "name=smi", {"p2", "p3"}),
    ("Patient", "name=SMITH", {"p2", "p3"}),
    ("Patient", "name:exact=Smith", {"p2"}),
    ("Patient", "name:exact=smith", set()),
    ("Patient", "name:contains=hso", {"p3"}),
    ("Patient", "name:contains=0%_r", {"p4"}),
    ("Patient", "family=bronte", {"p1"}),
    ("Patient", "given=zoe", {"p1"}),
    ("Patient", "address-city=leeds", {"p1"}),
    ("Patient", "address=1 trev", {"p1"}),
    ("Patient", "address=trevelyan", set()),  # string search matches the start of a value
    ("Patient", "address=ls1", {"p1"}),
    ("Patient", "name=smi&gender=female", {"p3"}),
    ("Patient", "name=jane,zoe", {"p1", "p3"}),
    # date
    ("Patient", "birthdate=1980", {"p2", "p3"}),
    ("Patient", "birthdate=1980-06", {"p3"}),
    ("Patient", "birthdate=1980-06-15", {"p3"}),
    ("Patient", "birthdate=ge1980", {"p2", "p3", "p4"}),
    ("Patient", "birthdate=gt1980", {"p4"}),
    ("Patient", "birthdate=lt1980", {"p1"}),
    ("Patient", "birthdate=le1980", {"p1", "p2", "p3"}),
    ("Patient", "birthdate=sa1980", {"p4"}),
    ("Patient", "birthdate=eb1980", {"p1"}),
    ("Patient", "birthdate=ne1980", {"p1", "p4"}),
    ("Patient", "birthdate=ap1980-06-15", {"p2", "p3"}),
    ("Patient", "birthdate=ge1970&birthdate=lt2000", {"p2", "p3"}),
    ("Patient", "death-date=2023-05-01", {"p3"}),
    ("Patient", "death-date=2023-05-01T07:30:00Z", {"p3"}),
    ("Patient", "death-date=2023-05-01T07:30:00+00:00", {"p3"}),
    ("Patient", "death-date=2023-05-01T07:30:00 00:00", {"p3"}),  # '+' lost to URL decoding
    ("Patient", "deceased=true", {"p3"}),
    ("Patient", "deceased=false", {"p1", "p2", "p4"}),
    ("CarePlan", "date=2024", set()),
    ("CarePlan", "date=ap2024", {"cp1"}),
    ("CarePlan", "date=gt2025-01-01", {"cp1", "cp3"}),
    ("CarePlan", "date=sa2024", {"cp3"}),
    ("CarePlan", "date=sa2025", set()),
    ("CarePlan", "date=eb2023", {"cp2"}),
    ("CarePlan", "date=2022", {"cp2"}),
    ("Goal", "target-date=2024-06", {"goal1"}),
    ("Goal", "start-date=2024-02-01", {"goal1"}),
    ("Provenance", "recorded=2024-02-01", {"prov1"}),
    # _lastUpdated
    ("Patient", "_lastUpdated=gt2024-02-01", {"p3", "p4"}),
    ("Patient", "_lastUpdated=2024-02", {"p2"}),
    ("Patient", "_lastUpdated=le2024-02-01", {"p1", "p2"}),
    ("Patient", "_lastUpdated=ge2024-03-01&_lastUpdated=lt2024-04", {"p3"}),
    ("Patient", "_lastUpdated=ne2024-02", {"p1", "p3", "p4"}),
    # reference
    ("CarePlan", "subject=Patient/p1", {"cp1", "cp3"}),
    ("CarePlan", "subject=p1", {"cp1", "cp3"}),
    ("CarePlan", "subject:Patient=p1", {"cp1", "cp3"}),
    ("CarePlan", "patient=p2", {"cp2"}),
    ("CarePlan", "subject=Patient/p1,Patient/p2", {"cp1", "cp2", "cp3"}),
    ("CarePlan", "goal=Goal/goal1", {"cp1"}),
    ("Patient", "general-practitioner=Organization/org1", {"p1"}),
    ("Patient", "organization=org1", {"p2"}),
    ("Patient", f"general-practitioner:identifier={ODS}|Y12345", {"p1"}),
    ("CarePlan", "instantiates-canonical=https://example.org/PlanDefinition/ipc", {"cp1"}),
    ("CarePlan", "instantiates-canonical=https://example.org/PlanDefinition/ipc|1.0", {"cp1"}),
    ("CarePlan", "instantiates-canonical=https://example.org/PlanDefinition/ipc|2.0", set()),
    ("Goal", "subject=https://other.example/fhir/Patient/p1", {"goal2"}),
    ("Goal", "patient=p1", {"goal1", "goal2"}),
    ("Provenance", "target=CarePlan/cp1", {"prov1"}),
    ("Provenance", "agent=Practitioner/pr1", {"prov1"}),
    # :missing
    ("Patient", "identifier:missing=true", {"p3", "p4"}),
    ("Patient", "identifier:missing=false", {"p1", "p2"}),
    ("Patient", "general-practitioner:missing=true", {"p3", "p4"}),
    ("Patient", "death-date:missing=false", {"p3"}),
    ("Patient", "name:missing=true", set()),
    ("Patient", "_profile:missing=false", {"p1"}),
    ("CarePlan", "instantiates-canonical:missing=true", {"cp2", "cp3"}),
    # quantity
    ("Observation", "value-quantity=72.5", {"o1", "o3"}),
    ("Observation", f"value-quantity=72.5|{UCUM}|kg", {"o1"}),
    ("Observation", "value-quantity=72.5||kg", {"o1"}),
    ("Observation", "value-quantity=72.5||lb", {"o3"}),
    ("Observation", "value-quantity=gt75||kg", {"o2"}),
    ("Observation", "value-quantity=ap75", {"o1", "o2", "o3"}),
    ("Observation", "value-quantity=ap80", {"o2", "o1", "o3"}),
    ("Observation", "value-quantity=ap88", {"o2"}),
    ("Observation", "value-quantity=ap95", set()),
    ("Observation", f"value-quantity=lt73|{UCUM}|kg", {"o1", "o4"}),
    ("Observation", "value-quantity=lt3||kg", {"o4"}),
    ("Observation", "value-quantity=ne72.5", {"o2", "o4"}),
    ("Observation", "value-quantity=80.0", {"o2"}),  # stored 80 is the centre; [79.95, 80.05) holds it
    # number
    ("RiskAssessment", "probability=0.25", {"ra1"}),
    ("RiskAssessment", "probability=0.3", {"ra1"}),  # 0.3 means [0.25, 0.35)
    ("RiskAssessment", "probability=0.30", set()),
    ("RiskAssessment", "probability=gt0.5", {"ra2"}),
    ("RiskAssessment", "probability=ge0.25", {"ra1", "ra2"}),
    ("RiskAssessment", "probability=lt0.25", set()),
    ("RiskAssessment", "probability=le0.25", {"ra1"}),
    # uri
    ("Patient", f"_profile={UKCORE_PATIENT}", {"p1"}),
    ("Patient", "_profile:below=https://fhir.hl7.org.uk/", {"p1"}),
    ("Patient", f"_profile:above={UKCORE_PATIENT}/extra", {"p1"}),
    ("Patient", "_profile=https://fhir.hl7.org.uk/", set()),
])
def test_search_matches(conn: psycopg.Connection, res_type: str, query: str, expected: set[str]) -> None:
    assert ids(conn, res_type, query) == expected


def test_deleted_resources_are_never_found(conn: psycopg.Connection) -> None:
    assert ids(conn, "Patient", "name=smith") == {"p2", "p3"}
    assert "p5" not in ids(conn, "Patient", "")


def test_values_are_parameters_not_sql(conn: psycopg.Connection) -> None:
    assert ids(conn, "Patient", "name=' OR 1=1 --") == set()
    assert ids(conn, "Patient", "_id=p1' OR 'a'='a") == set()


@pytest.mark.parametrize(("query", "expected"), [
    ("", ["p4", "p3", "p2", "p1"]),  # default: newest first
    ("_sort=_id", ["p1", "p2", "p3", "p4"]),
    ("_sort=-_id", ["p4", "p3", "p2", "p1"]),
    ("_sort=_lastUpdated", ["p1", "p2", "p3", "p4"]),
    ("_sort=birthdate", ["p1", "p2", "p3", "p4"]),
    ("_sort=-birthdate", ["p4", "p2", "p3", "p1"]),  # descending uses each one's latest end
    ("_sort=family", ["p4", "p1", "p2", "p3"]),
    ("_sort=-family", ["p3", "p2", "p1", "p4"]),
    ("_sort=gender,-birthdate", ["p3", "p1", "p2", "p4"]),
    ("_sort=identifier", ["p1", "p2", "p3", "p4"]),  # no value sorts last, then by id
    ("_sort=-identifier", ["p2", "p1", "p3", "p4"]),
])
def test_sort(conn: psycopg.Connection, query: str, expected: list[str]) -> None:
    assert search(conn, "Patient", query) == expected


def test_paging_and_totals(conn: psycopg.Connection) -> None:
    assert search(conn, "Patient", "_sort=_id&_count=2") == ["p1", "p2"]
    assert search(conn, "Patient", "_sort=_id&_count=2&_offset=2") == ["p3", "p4"]
    assert search(conn, "Patient", "_sort=_id&_count=2&_offset=4") == []
    assert search(conn, "Patient", "_sort=_id&_count=2", extra_row=True) == ["p1", "p2", "p3"]

    req = parse_search("Patient", _pairs("gender=female&_count=1"))
    sql, params = build_search_sql(req, with_total=True, access=SYSTEM)
    rows = conn.execute(sql, params).fetchall()
    assert [(r[0], r[-1]) for r in rows] == [("p3", 2)]
    assert rows[0][1] == 1 and isinstance(rows[0][2], datetime) and '"Smithson"' in rows[0][3]

    sql, params = build_count_sql(req, access=SYSTEM)
    assert conn.execute(sql, params).fetchone()[0] == 2
    assert known_total(req, 1) is None
    assert known_total(parse_search("Patient", _pairs("_count=10")), 4) == 4


def test_summary_count(conn: psycopg.Connection) -> None:
    req = parse_search("Patient", [("_summary", "count"), ("gender", "female,male")])
    sql, params = build_search_sql(req, access=SYSTEM)
    assert conn.execute(sql, params).fetchall() == [(3,)]


def _included(conn: psycopg.Connection, built: tuple[str, list] | None) -> set[str]:
    assert built is not None
    return {f"{row[0]}/{row[1]}" for row in conn.execute(*built)}


def test_include(conn: psycopg.Connection) -> None:
    req = parse_search("Patient", _pairs("_include=Patient:general-practitioner&_include=Patient:organization"))
    assert _included(conn, build_include_sql("Patient", ["p1", "p2"], req.include, access=SYSTEM)) == {
        "Organization/org1", "Organization/org2"}
    req = parse_search("CarePlan", _pairs("_include=CarePlan:subject:Patient"))
    assert _included(conn, build_include_sql("CarePlan", ["cp1", "cp3"], req.include, access=SYSTEM)) == {"Patient/p1"}
    req = parse_search("CarePlan", _pairs("_include=*"))
    assert _included(conn, build_include_sql("CarePlan", ["cp1"], req.include, access=SYSTEM)) == {"Patient/p1", "Goal/goal1"}
    req = parse_search("CarePlan", _pairs("_include=CarePlan:subject:Group"))
    assert _included(conn, build_include_sql("CarePlan", ["cp1"], req.include, access=SYSTEM)) == set()
    # An include for another source type does not apply; nothing to run.
    req = parse_search("CarePlan", _pairs("_include=Goal:subject"))
    assert build_include_sql("CarePlan", ["cp1"], req.include, access=SYSTEM) is None
    assert build_include_sql("CarePlan", [], parse_search("CarePlan", _pairs("_include=*")).include, access=SYSTEM) is None
    row = conn.execute(*build_include_sql("Patient", ["p2"], [req.include[0].__class__("Patient", "organization")], access=SYSTEM)).fetchone()
    assert row[:3] == ("Organization", "org1", 1) and '"Leeds GP"' in row[4]


def test_revinclude(conn: psycopg.Connection) -> None:
    req = parse_search("CarePlan", _pairs("_revinclude=Provenance:target"))
    assert _included(conn, build_revinclude_sql("CarePlan", ["cp1", "cp2"], req.revinclude, access=SYSTEM)) == {"Provenance/prov1"}
    req = parse_search("Patient", _pairs("_revinclude=CarePlan:subject&_revinclude=Goal:patient"))
    assert _included(conn, build_revinclude_sql("Patient", ["p1"], req.revinclude, access=SYSTEM)) == {
        "CarePlan/cp1", "CarePlan/cp3", "Goal/goal1", "Goal/goal2"}
    req = parse_search("Patient", _pairs("_revinclude=*"))
    assert _included(conn, build_revinclude_sql("Patient", ["p2"], req.revinclude, access=SYSTEM)) == {
        "CarePlan/cp2", "Observation/o3", "Observation/o4", "RiskAssessment/ra2"}
    req = parse_search("Patient", _pairs("_revinclude=Provenance:target:CarePlan"))
    assert build_revinclude_sql("Patient", ["p1"], req.revinclude, access=SYSTEM) is None
