"""Real FHIR to test validation with: HL7's validator cases (`../shared/testdata/fhir-validator-cases`,
read here at test time, never copied), the UK Core examples and the IPC guide's examples."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.xml import xml_to_json
from tests.shared_data import TESTDATA, UKCORE_EXAMPLES
from tests.validation_cases import example_paths

VALIDATOR_CASES = TESTDATA / "fhir-validator-cases"


@dataclass(frozen=True)
class Case:
    file: str
    format: str
    expect: str            # valid or invalid
    category: str
    wrong: str
    method: str
    resource_type: str

    @property
    def path(self) -> Path:
        return VALIDATOR_CASES / self.file

    @property
    def media_type(self) -> str:
        return "application/fhir+xml" if self.format == "xml" else "application/fhir+json"


def validator_cases() -> list[Case]:
    index = json.loads((VALIDATOR_CASES / "index.json").read_text())
    return [Case(c["file"], c["format"], c["expect"], c["category"], c.get("wrong", ""), c.get("method", "post"),
                 c["resourceType"]) for c in index["cases"]]


def parse_case(case: Case) -> dict[str, Any]:
    """The case as the API would read it; FhirError or ValueError when it is not FHIR at all."""
    data = case.path.read_bytes()
    return xml_to_json(data) if case.format == "xml" else jsontext.parse(data)


def resources() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, resource) for every readable resource of the three collections."""
    for case in validator_cases():
        try:
            parsed = parse_case(case)
        except (FhirError, ValueError):
            continue
        if isinstance(parsed, dict):
            yield case.file, parsed
    for path in sorted(UKCORE_EXAMPLES.glob("*.xml")):
        try:
            yield path.stem, xml_to_json(path.read_bytes())
        except FhirError:
            continue
    for path in example_paths():
        yield path.stem, jsontext.loads(path.read_bytes())
