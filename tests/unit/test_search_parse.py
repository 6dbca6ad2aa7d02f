"""hub.search.parse: query pairs to a SearchRequest, errors, and links rendered back."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest

from hub.fhir.errors import FhirError
from hub.search.parse import (
    DateValue,
    Include,
    MissingValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    parse_search,
    split_unescaped,
    unescape,
)
from hub.search.sql import build_search_sql
from hub.search.access import Access

SYSTEM = Access.system()



def parse(res_type: str, query: str, **kwargs) -> object:
    return parse_search(res_type, parse_qsl(query, keep_blank_values=True), **kwargs)


def only_values(res_type: str, query: str) -> tuple:
    req = parse(res_type, query)
    assert len(req.clauses) == 1
    return req.clauses[0].values


def test_clauses_or_and_and() -> None:
    req = parse("Patient", "gender=male,female&name=smith&name=jo")
    assert [(c.param.code, c.modifier) for c in req.clauses] == [("gender", None), ("name", None), ("name", None)]
    assert req.clauses[0].values == (TokenValue(None, "male", True), TokenValue(None, "female", True))
    assert req.clauses[2].values == (StringValue("jo", "jo"),)


@pytest.mark.parametrize(("raw", "expected"), [
    ("http://loinc.org|1234-5", TokenValue("http://loinc.org", "1234-5", False)),
    ("|1234-5", TokenValue(None, "1234-5", False)),
    ("http://loinc.org|", TokenValue("http://loinc.org", None, False)),
    ("1234-5", TokenValue(None, "1234-5", True)),
    (r"a\|b", TokenValue(None, "a|b", True)),
    (r"sys|a\,b", TokenValue("sys", "a,b", False)),
])
def test_token_values(raw: str, expected: TokenValue) -> None:
    req = parse_search("Observation", [("code", raw)])
    assert req.clauses[0].values == (expected,)


def test_escaping() -> None:
    assert split_unescaped(r"a\,b,c", ",") == [r"a\,b", "c"]
    assert unescape(r"a\,b\|c\$d\\e") == "a,b|c$d\\e"
    values = parse_search("Patient", [("name", r"O\,Neil,Zoë")]).clauses[0].values
    assert values == (StringValue("O,Neil", "o,neil"), StringValue("Zoë", "zoe"))


def test_string_modifiers() -> None:
    req = parse("Patient", "name:exact=Zoë&family:contains=ront&name:missing=true")
    assert [c.modifier for c in req.clauses] == ["exact", "contains", "missing"]
    assert req.clauses[0].values == (StringValue("Zoë", "zoe"),)
    assert req.clauses[2].values == (MissingValue(True),)


def test_token_modifiers() -> None:
    req = parse("Patient", "gender:not=male&language:text=english&identifier:missing=false")
    assert [c.modifier for c in req.clauses] == ["not", "text", "missing"]
    assert req.clauses[1].values == (StringValue("english", "english"),)
    assert req.clauses[2].values == (MissingValue(False),)


@pytest.mark.parametrize(("raw", "prefix", "low", "high"), [
    ("2020", "eq", datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)),
    ("ge2020-03", "ge", datetime(2020, 3, 1, tzinfo=UTC), datetime(2020, 4, 1, tzinfo=UTC)),
    ("lt2020-03-04T10:00", "lt", datetime(2020, 3, 4, 10, tzinfo=UTC), datetime(2020, 3, 4, 10, 1, tzinfo=UTC)),
    ("sa2020-03-04T10:00:00+02:00", "sa", datetime(2020, 3, 4, 8, tzinfo=UTC), datetime(2020, 3, 4, 8, 0, 1, tzinfo=UTC)),
    ("eb2020-03-04T10:00:00 02:00", "eb", datetime(2020, 3, 4, 8, tzinfo=UTC), datetime(2020, 3, 4, 8, 0, 1, tzinfo=UTC)),
    ("ap2020-03-04T10:00:00Z", "ap", datetime(2020, 3, 4, 10, tzinfo=UTC), datetime(2020, 3, 4, 10, 0, 1, tzinfo=UTC)),
])
def test_date_values(raw: str, prefix: str, low: datetime, high: datetime) -> None:
    assert parse_search("Patient", [("birthdate", raw)]).clauses[0].values == (DateValue(prefix, low, high),)


def test_lost_plus_is_restored_in_links_too() -> None:
    req = parse_search("Patient", [("_lastUpdated", "gt2020-03-04T10:00:00 02:00")])
    assert req.to_query() == "_lastUpdated=gt2020-03-04T10:00:00%2B02:00&_count=20"


def test_number_and_quantity_values() -> None:
    assert only_values("RiskAssessment", "probability=gt0.5") == (
        NumberValue("gt", Decimal("0.5"), Decimal("0.45"), Decimal("0.55")),)
    assert only_values("Observation", "value-quantity=5.4|http://unitsofmeasure.org|mg") == (
        QuantityValue("eq", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), "http://unitsofmeasure.org", "mg"),)
    assert only_values("Observation", "value-quantity=le5.4||mg") == (
        QuantityValue("le", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), None, "mg"),)
    assert only_values("Observation", "value-quantity=1e2") == (
        QuantityValue("eq", Decimal("1e2"), Decimal("50"), Decimal("150"), None, None),)


def test_reference_values() -> None:
    assert only_values("CarePlan", "subject=Patient/p1") == (ReferenceValue("Patient", "p1", None),)
    assert only_values("CarePlan", "subject=p1") == (ReferenceValue(None, "p1", None),)
    assert only_values("CarePlan", "subject:Patient=p1") == (ReferenceValue("Patient", "p1", None),)
    assert only_values("CarePlan", "subject=Patient/p1/_history/3") == (ReferenceValue("Patient", "p1", None),)
    absolute = "https://other.example/fhir/Patient/p1"
    assert only_values("CarePlan", f"subject={absolute}") == (ReferenceValue(None, None, absolute),)
    assert only_values("CarePlan", "subject=urn:uuid:1234") == (ReferenceValue(None, None, "urn:uuid:1234"),)
    canonical = "https://example.org/PlanDefinition/ipc|1.0"
    assert only_values("CarePlan", f"instantiates-canonical={canonical}") == (ReferenceValue(None, None, canonical),)
    req = parse("CarePlan", "subject=https://hub.example/fhir/Patient/p1", base_url="https://hub.example/fhir/")
    assert req.clauses[0].values == (ReferenceValue("Patient", "p1", None),)
    req = parse("Patient", "general-practitioner:identifier=https://fhir.nhs.uk/Id/ods-organization-code|Y1")
    assert req.clauses[0].values == (TokenValue("https://fhir.nhs.uk/Id/ods-organization-code", "Y1", False),)


def test_uri_values() -> None:
    req = parse("Patient", "_profile:below=https://fhir.hl7.org.uk/&_source=urn:a")
    assert [(c.modifier, c.values) for c in req.clauses] == [
        ("below", (UriValue("https://fhir.hl7.org.uk/"),)), (None, (UriValue("urn:a"),))]


def test_id_and_last_updated() -> None:
    req = parse("Patient", "_id=a,b&_id:not=c&_lastUpdated=ge2024")
    assert req.clauses[0].values == (TokenValue(None, "a", True), TokenValue(None, "b", True))
    assert req.clauses[1].modifier == "not"
    assert req.clauses[2].values[0].prefix == "ge"


def test_empty_values_are_no_criteria() -> None:
    req = parse("Patient", "name=&gender=male&_sort=")
    assert [c.param.code for c in req.clauses] == ["gender"]
    assert req.sort == [] and req.ignored == []


def test_paging() -> None:
    assert (parse("Patient", "").count, parse("Patient", "").offset) == (20, 0)
    assert parse("Patient", "", default_count=5).count == 5
    assert parse("Patient", "_count=50&_offset=100").count == 50
    assert parse("Patient", "_count=5000", max_count=100).count == 100
    assert parse("Patient", "_count=0").count == 0
    assert parse("Patient", "_offset=40").offset == 40


@pytest.mark.parametrize("query", ["_count=-1", "_count=ten", "_offset=1.5"])
def test_bad_paging(query: str) -> None:
    with pytest.raises(FhirError) as err:
        parse("Patient", query)
    assert err.value.code == "invalid" and query.split("=")[0] in str(err.value)


def test_sort() -> None:
    req = parse("Patient", "_sort=-birthdate,name,_id,-_lastUpdated")
    assert [(s.code, s.descending) for s in req.sort] == [
        ("birthdate", True), ("name", False), ("_id", False), ("_lastUpdated", True)]
    req = parse("Patient", "_sort=nonsense,name")
    assert [s.code for s in req.sort] == ["name"] and req.ignored == ["_sort=nonsense"]
    with pytest.raises(FhirError) as err:
        parse("Patient", "_sort=nonsense", strict=True)
    assert err.value.code == "not-supported" and "nonsense" in str(err.value)


def test_include_and_revinclude() -> None:
    req = parse("CarePlan", "_include=CarePlan:subject:Patient&_include=*&_include:iterate=Patient:general-practitioner"
                            "&_revinclude=Provenance:target&_revinclude=CarePlan:*")
    assert req.include == [Include("CarePlan", "subject", "Patient"), Include("*", "*"),
                           Include("Patient", "general-practitioner", None, iterate=True)]
    assert req.revinclude == [Include("Provenance", "target"), Include("CarePlan", "*")]


@pytest.mark.parametrize("value", ["CarePlan", "CarePlan:subject:Patient:x", "Nope:subject", "CarePlan:subject:Nope",
                                   "CarePlan:subject:Medication", ":subject"])
def test_bad_include(value: str) -> None:
    with pytest.raises(FhirError) as err:
        parse_search("CarePlan", [("_include", value)])
    assert err.value.code == "invalid" and value in str(err.value)


def test_include_of_unknown_or_non_reference_parameter() -> None:
    req = parse("CarePlan", "_include=CarePlan:status&_include=CarePlan:nope")
    assert req.include == [] and req.ignored == ["_include=CarePlan:status", "_include=CarePlan:nope"]
    with pytest.raises(FhirError):
        parse("CarePlan", "_include=CarePlan:status", strict=True)


def test_summary_total_elements_format() -> None:
    req = parse("Patient", "_summary=count&_total=accurate&_elements=id,name&_format=json&_pretty=true")
    assert (req.summary, req.total, req.elements) == ("count", "accurate", ["id", "name"])
    assert req.passthrough == [("_format", "json"), ("_pretty", "true")]
    for value in ("true", "text", "data", "false"):
        assert parse("Patient", f"_summary={value}").summary == value
    with pytest.raises(FhirError):
        parse("Patient", "_summary=all")
    with pytest.raises(FhirError):
        parse("Patient", "_total=some")


def test_unknown_parameters_lenient_and_strict() -> None:
    req = parse("Patient", "foo=1&name=x&subject.name=y&_has:Observation:patient:code=1&code-value-quantity=x")
    assert req.ignored == ["foo", "subject.name", "_has:Observation:patient:code", "code-value-quantity"]
    assert [c.param.code for c in req.clauses] == ["name"]
    assert "foo" not in req.to_query()
    with pytest.raises(FhirError) as err:
        parse("Patient", "name=x&foo=1", strict=True)
    assert err.value.code == "not-supported" and "'foo'" in str(err.value)
    with pytest.raises(FhirError) as err:
        parse("Patient", "_text=x", strict=True)
    assert err.value.code == "not-supported"


@pytest.mark.parametrize(("query", "fragment"), [
    ("birthdate=2020-13-01", "birthdate=2020-13-01"),
    ("birthdate=yesterday", "birthdate=yesterday"),
    ("birthdate=xx2020", "unknown prefix 'xx'"),
    ("birthdate=2020/01/01", "2020/01/01"),
    ("probability=abc", "probability=abc"),
    ("probability=zz5", "unknown prefix 'zz'"),
    ("value-quantity=5|kg", "value-quantity=5|kg"),
    ("value-quantity=five", "five"),
    ("gender=a|b|c", "gender=a|b|c"),
    ("gender=|", "gender=|"),
    ("name:missing=maybe", "name:missing=maybe"),
    ("name:text=x", ":text"),
    ("name:foo=x", ":foo"),
    ("birthdate:exact=2020", ":exact"),
    ("gender:contains=m", ":contains"),
    ("general-practitioner:Patient=1", "general-practitioner:Patient"),
    ("general-practitioner:Organization=Practitioner/1", "not to a Organization"),
    ("link=#contained", "contained"),
    ("_lastUpdated:missing=true", ":missing"),
])
def test_bad_values_are_invalid(query: str, fragment: str) -> None:
    with pytest.raises(FhirError) as err:
        parse_search("Patient" if not query.startswith(("probability", "value-quantity")) else
                     ("RiskAssessment" if query.startswith("probability") else "Observation"),
                     [tuple(query.split("=", 1))])
    assert err.value.code == "invalid", str(err.value)
    assert fragment in str(err.value)
    assert err.value.status == 400


@pytest.mark.parametrize("query", ["gender:in=http://x", "identifier:of-type=a|b|c", "gender:below=x"])
def test_known_but_unsupported_modifiers(query: str) -> None:
    with pytest.raises(FhirError) as err:
        parse_search("Patient", [tuple(query.split("=", 1))])
    assert err.value.code == "not-supported"


def test_to_query_round_trips() -> None:
    query = ("name:exact=O%5C,Neil&gender=male,female&identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009"
             "&birthdate=ge1960&_sort=-birthdate,name&_include=Patient:organization&_revinclude=CarePlan:subject"
             "&_summary=data&_total=accurate&_elements=id,name&_format=json&_count=10&_offset=30")
    req = parse("Patient", query)
    rendered = req.to_query()
    assert rendered == query
    again = parse("Patient", rendered)
    assert again.clauses == req.clauses and again.sort == req.sort and again.include == req.include
    assert build_search_sql(again, access=SYSTEM) == build_search_sql(req, access=SYSTEM)
    assert req.to_query(offset=40).endswith("&_count=10&_offset=40")
    assert req.to_query(offset=0).endswith("&_count=10")


def test_unknown_type_has_no_parameters() -> None:
    req = parse("NotAType", "name=x")
    assert req.clauses == [] and req.ignored == ["name"]
