"""Property-based fuzzing of FHIR search: the parser (`hub.search.parse`) on its own, and the
search endpoint over real HTTP. Whatever the query, the parser either parses it or refuses it
with a FhirError of a 4xx status, and the endpoint answers 200 with a Bundle or a 4xx
OperationOutcome, never a 5xx. Deterministic (derandomize) and bounded."""
from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.fhir.errors import FhirError
from hub.search.definitions import params_for
from hub.search.parse import MODIFIERS, PREFIXES, SearchRequest, parse_search

TYPES = ["Patient", "CarePlan", "Goal", "RelatedPerson", "Observation", "Encounter", "Consent", "CareTeam"]
RESULT_PARAMS = ["_count", "_offset", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements",
                 "_id", "_lastUpdated", "_format", "_pretty", "_include:iterate", "_revinclude:iterate"]
ALL_MODIFIERS = sorted({m for ms in MODIFIERS.values() for m in ms} | {"above", "below", "in", "not-in",
                                                                       "of-type", "Patient", "bogus", ""})
AWKWARD_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
PARSER_SETTINGS = settings(max_examples=400, derandomize=True, deadline=None, database=None)
HTTP_SETTINGS = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))


def _value() -> st.SearchStrategy[str]:
    number = st.one_of(st.integers(-10**30, 10**30).map(str), st.decimals(allow_nan=False, allow_infinity=False,
                                                                          places=3).map(str))
    date = st.sampled_from(["2026", "2026-02", "2026-02-30", "2026-11-24", "2026-11-24T09:30",
                            "2026-11-24T09:30:00Z", "2026-11-24T09:30:00+01:00", "99999", "0000-01-01",
                            "2026-13-01", "2026-11-24T25:00:00Z"])
    prefixed = st.tuples(st.sampled_from(sorted(PREFIXES) + ["xx", ""]), st.one_of(date, number)).map("".join)
    token = st.tuples(AWKWARD_TEXT, st.sampled_from(["|", "", "\\|", ","]), AWKWARD_TEXT).map("".join)
    reference = st.tuples(st.sampled_from(TYPES + ["", "http://x/fhir/Patient", "urn:uuid:"]),
                          st.sampled_from(["/", ""]), AWKWARD_TEXT).map("".join)
    quantity = st.tuples(number, st.sampled_from(["", "|", "|http://unitsofmeasure.org|mg", "||kg"])).map("".join)
    huge = st.integers(0, 10**40).map(str)
    return st.one_of(prefixed, token, reference, quantity, AWKWARD_TEXT, huge,
                     st.sampled_from(["true", "false", "*", "count", "Patient:general-practitioner",
                                      "CarePlan:subject:Patient", "-date,_id", "¹", "٣"]))


@st.composite
def queries(draw) -> tuple[str, list[tuple[str, str]]]:
    res_type = draw(st.sampled_from(TYPES))
    names = sorted(params_for(res_type)) + RESULT_PARAMS
    name = st.tuples(st.sampled_from(names), st.sampled_from(ALL_MODIFIERS)).map(
        lambda nm: f"{nm[0]}:{nm[1]}" if nm[1] else nm[0])
    pairs = draw(st.lists(st.tuples(st.one_of(name, AWKWARD_TEXT), _value()), max_size=6))
    return res_type, pairs


@PARSER_SETTINGS
@given(queries(), st.booleans())
def test_the_parser_parses_or_refuses_with_a_client_error(query, strict):
    res_type, pairs = query
    try:
        parsed = parse_search(res_type, pairs, strict=strict, max_count=100)
    except FhirError as refusal:
        assert 400 <= refusal.status < 500
        return
    assert isinstance(parsed, SearchRequest) and 0 <= parsed.count <= 100
    again = parse_search(res_type, _pairs_of(parsed.to_query()), strict=strict, max_count=100)
    assert again.to_query() == parsed.to_query()  # links lead back to the same search


def _pairs_of(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)


def test_the_search_endpoint_answers_every_query_with_a_bundle_or_a_client_error(fhir):
    @HTTP_SETTINGS
    @given(queries())
    def search(query) -> None:
        res_type, pairs = query
        try:
            response = fhir.get(f"/{res_type}", params=pairs)
        except httpx.InvalidURL:
            return  # not a request any HTTP client would send
        assert response.status_code < 500, (pairs, response.status_code, response.text[:300])
        body = response.json()
        if response.status_code == 200:
            assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
        else:
            assert 400 <= response.status_code < 500 and body["resourceType"] == "OperationOutcome"

    search()
