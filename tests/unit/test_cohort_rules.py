"""The pure parts of cohort finding and the linked dataset: reading a definition, the next member
Group, the offer, and de-identification (pseudonyms, age bands, suppression)."""
from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from hub.cohorts.definitions import read_definition
from hub.cohorts.membership import active_members, next_group, offer_task, withdrawn_offer
from hub.datasets.linked import age_band, pseudonym, suppress
from hub.fhir.errors import FhirError
from tests.pipeline.cohort_cases import FHIRPATH, QUERY, characteristic, definition, multiple_conditions

MONDAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
TUESDAY = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def test_a_definition_reads_its_criteria_and_review():
    found = read_definition(multiple_conditions(), 3)
    assert found.evaluated and found.label == "1.0" and found.reference == "Group/def-mltc/_history/3"
    assert [c.res_type for c in found.inclusions] == ["Condition"] and found.inclusions[0].minimum == 2
    assert [c.res_type for c in found.exclusions] == ["Patient"]
    assert not read_definition(multiple_conditions(status="draft"), 1).evaluated


@pytest.mark.parametrize(("language", "expression", "words"), [
    (QUERY, "Condition?cod=1", "characteristic 1"),
    (QUERY, "Condition?_count=5", "not a search criterion"),
    (QUERY, "Nonsense?code=1", "not a resource type"),
    (FHIRPATH, "Encounter.where(((", "not FHIRPath"),
    ("text/cql", "x", "neither"),
])
def test_a_wrong_criterion_is_refused_naming_it(language, expression, words):
    group = definition("d", "D", [characteristic("it", language, expression)])
    with pytest.raises(FhirError) as caught:
        read_definition(group, 1)
    assert words in caught.value.issues[0].diagnostics


def test_exclusions_alone_do_not_make_a_definition():
    group = definition("d", "D", [characteristic("dead", FHIRPATH, "Patient.where(deceased = true)", exclude=True)])
    with pytest.raises(FhirError):
        read_definition(group, 1)


def test_members_enter_leave_and_return_with_their_story():
    found = read_definition(multiple_conditions(), 1)
    first = next_group(found, None, {"a": ["two conditions"], "b": ["two conditions"]}, {}, None, MONDAY)
    assert sorted(first.entered) == ["a", "b"] and first.group["quantity"] == 2
    second = next_group(found, first.group, {"a": ["two conditions"]}, {"b": ["has died"]}, None, TUESDAY)
    assert second.left == {"b": "excluded: has died"} and not second.entered
    assert set(active_members(second.group)) == {"a"}
    left = [m for m in second.group["member"] if m["entity"]["reference"] == "Patient/b"][0]
    assert left["period"] == {"start": "2026-12-07T09:00:00Z", "end": "2026-12-08T09:00:00Z"}
    # Outside the evaluated scope, nobody is touched; b's return opens a new entry.
    third = next_group(found, second.group, {"b": ["two conditions"]}, {}, {"b"}, TUESDAY)
    assert third.entered == {"b": ["two conditions"]} and not third.left
    assert len(third.group["member"]) == 3 and set(active_members(third.group)) == {"a", "b"}


def test_an_offer_carries_language_and_format_and_can_be_withdrawn():
    found = read_definition(multiple_conditions(), 1)
    person = {"resourceType": "Patient", "id": "p1",
              "communication": [{"language": {"text": "Welsh"}, "preferred": True}],
              "extension": [{"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-ContactPreference",
                             "extension": [{"url": "PreferredWrittenCommunicationFormat",
                                            "valueCodeableConcept": {"text": "Large print"}}]}]}
    task = offer_task(found, person, ["two conditions"], MONDAY)
    assert task["for"] == {"reference": "Patient/p1"} and task["status"] == "requested"
    assert [i["type"]["text"] for i in task["input"]] == ["preferred language", "preferred written format"]
    assert "in Welsh" in task["note"][0]["text"] and "as large print" in task["note"][0]["text"]
    assert offer_task(found, person, ["x"], MONDAY)["id"] == task["id"]  # the same offer, not a second
    withdrawn = withdrawn_offer(task, "no longer meets the definition", TUESDAY)
    assert withdrawn["status"] == "cancelled" and "no longer meets" in withdrawn["statusReason"]["text"]


def test_pseudonyms_are_per_key_and_stable():
    person = {"identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}]}
    a, b = b"a" * 32, b"b" * 32
    assert pseudonym(a, person, "x") == pseudonym(a, person, "y")  # the NHS number, not the hub's id
    assert pseudonym(a, person, "x") != pseudonym(b, person, "x")
    assert "9990000018" not in pseudonym(a, person, "x") and len(pseudonym(a, person, "x")) == 32


@pytest.mark.parametrize(("birth", "band"), [
    ("1980-12-08", "45-49"), ("1980-12-09", "45-49"), ("1981-12-08", "45-49"), ("1981-12-09", "40-44"),
    ("1930-01-01", "90+"), ("1980", "45-49"), (None, ""),
])
def test_age_bands(birth, band):
    assert age_band(birth, date(2026, 12, 8)) == band


def test_values_fewer_than_the_minimum_share_are_suppressed():
    rows = [{"age_band": "40-44", "sex": "female", "budget_type": ""} for _ in range(3)]
    rows.append({"age_band": "90+", "sex": "male", "budget_type": "personal-health-budget"})
    assert suppress(rows, 3) == 3
    assert rows[-1] == {"age_band": "*", "sex": "*", "budget_type": "*"}
    assert rows[0] == {"age_band": "40-44", "sex": "female", "budget_type": ""}
