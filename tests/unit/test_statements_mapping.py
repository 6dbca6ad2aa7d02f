"""A statement line → its spend line (mappings/statements): pure, valid against the guide."""
from __future__ import annotations

from pathlib import Path

import pytest

from hub.fhir.errors import FhirError
from hub.fhir.ids import source_id
from hub.fhir.validation import validate
from mappings.statements import map_line

SAMPLE = (Path(__file__).resolve().parents[2] / "connectors" / "statements" / "samples" / "statement.csv").read_text()
HEADER, *ROWS = SAMPLE.splitlines()
SD = "https://ipc-hub.example.org/fhir/StructureDefinition"


def mapped(row: str) -> dict:
    [entry] = map_line(f"{HEADER}\n{row}\n".encode(), "stmt-DPSS01")["entry"]
    return entry["resource"]


def test_a_line_becomes_a_valid_spend_line_naming_the_person_by_nhs_number():
    line = mapped(ROWS[0])
    assert [i.diagnostics for i in validate(line) if i.severity == "error"] == []
    assert line["id"] == source_id("stmt-DPSS01", "ChargeItem", "DPSS01-2026-09-0001")
    assert line["subject"] == {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}}
    assert line["occurrenceDateTime"] == "2026-09-05" and str(line["priceOverride"]["value"]) == "412.50"
    assert line["performer"] == [{"actor": {"display": "Personal assistant (payroll PA-17)"}}]
    assert line["code"]["text"] == "PA wages, week 1" and line["reason"] == [{"text": "Getting out twice a week"}]
    ext = {e["url"].rsplit("/", 1)[1]: e["valueCodeableConcept"]["coding"][0]["code"] for e in line["extension"]}
    assert ext == {"spend-kind": "spend", "funding-source": "nhs", "management-option": "direct-payment",
                   "care-setting": "home-and-community"}
    refund = mapped(ROWS[3])
    assert next(e for e in refund["extension"] if e["url"] == f"{SD}/spend-kind")[
        "valueCodeableConcept"]["coding"][0]["code"] == "refund"


def test_a_payload_that_is_not_one_line_of_the_format_is_refused():
    with pytest.raises(FhirError):
        map_line(b"not,the,header\n1,2,3\n", "stmt-X")
    with pytest.raises(FhirError):
        map_line(f"{HEADER}\n{ROWS[0]}\n{ROWS[1]}\n".encode(), "stmt-X")
