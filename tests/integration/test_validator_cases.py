"""HL7's own validator test cases for a plain R4 server (../shared/testdata/fhir-validator-cases,
193 of them, read at test time): over real HTTP, the hub accepts every valid one and refuses every
invalid one with a 400 or 422 OperationOutcome and stores nothing, and $validate says the same."""
from __future__ import annotations

import pytest

from hub.fhir.errors import FhirError
from hub.fhir.resources import ID_PATTERN, examine
from tests.fhir_corpus import Case, parse_case, validator_cases

CASES = validator_cases()


def test_all_the_cases_are_there():
    assert len(CASES) == 193
    assert sum(c.expect == "valid" for c in CASES) == 114      # 93 for R4, 21 unversioned (README)
    assert sum(c.expect == "invalid" for c in CASES) == 79


def _count(fhir, res_type: str) -> int:
    return fhir.get(f"/{res_type}", params={"_summary": "count"}).json()["total"]


def _send(fhir, case: Case):
    headers = {"Content-Type": case.media_type, "Accept": "application/fhir+json"}
    body = case.path.read_bytes()
    if case.method == "put":
        resource_id = _id_of(case)
        return fhir.put(f"/{case.resource_type}/{resource_id}", content=body, headers=headers)
    return fhir.post(f"/{case.resource_type}", content=body, headers=headers)


def _id_of(case: Case) -> str:
    """The body's id for the URL, or (when it is no FHIR id, which is the fault these cases test)
    a valid one, so the refusal is for the body's id rather than for an unknown URL."""
    try:
        found = parse_case(case).get("id")
    except (FhirError, ValueError):              # unreadable: any id will do, the write is refused
        found = None
    return found if isinstance(found, str) and ID_PATTERN.match(found) else "case-id"


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == "invalid"], ids=lambda c: c.file)
def test_an_invalid_case_is_refused_and_nothing_is_stored(fhir, case):
    before = _count(fhir, case.resource_type)
    r = _send(fhir, case)
    assert r.status_code in (400, 422), (case.wrong, r.status_code, r.text[:300])
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(i["severity"] == "error" for i in outcome["issue"])
    assert _count(fhir, case.resource_type) == before
    if case.method == "put":
        assert "not a valid FHIR id" in outcome["issue"][0]["diagnostics"]
    validated = fhir.post(f"/{case.resource_type}/$validate", content=case.path.read_bytes(),
                          headers={"Content-Type": case.media_type})
    if validated.status_code == 200:        # a body that is not FHIR at all is a 400 before $validate
        assert any(i["severity"] == "error" for i in validated.json()["issue"]), case.wrong
    else:
        assert validated.status_code == 400 and r.status_code == 400


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == "valid"], ids=lambda c: c.file)
def test_a_valid_case_is_accepted_and_reads_back_valid(fhir, hold_referenced, case):
    # The cases name resources outside the set (Patient/example…): the record must hold them, or the
    # hub rightly refuses the dangling reference (hub.store.integrity) — not what these cases test.
    hold_referenced([parse_case(case)])
    r = _send(fhir, case)
    assert r.status_code in (200, 201), r.text[:600]
    stored = r.json()
    again = fhir.get(f"/{case.resource_type}/{stored['id']}")
    assert again.status_code == 200
    validated = fhir.get(f"/{case.resource_type}/{stored['id']}/$validate").json()
    assert [i for i in validated["issue"] if i["severity"] == "error"] == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_every_case_gets_its_verdict_from_the_entry_point(case):
    """The same verdicts from hub.fhir.resources.examine, which every write path calls."""
    try:
        resource = parse_case(case)
    except (FhirError, ValueError) as exc:       # not FHIR JSON or XML at all: refused as the API reads it
        assert case.expect == "invalid", (case.file, exc)
        return
    _, status = examine(resource)
    assert (status is None) == (case.expect == "valid"), (case.file, case.wrong)
