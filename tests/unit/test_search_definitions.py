"""hub.search.definitions: the R4 definitions split per resource type."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from hub.search.definitions import (
    SearchParam,
    expression_for,
    is_supported,
    leading_type,
    params_for,
    resource_types,
    split_union,
    supported_params,
)
from hub.search.extract import native_coverage
from hub.search.pathwalk import UnsupportedExpression, compile_path

RESOURCE_LEVEL = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")


def _raw_definitions() -> list[dict]:
    text = (resources.files("hub.search") / "search-parameters-r4.json").read_text()
    return json.loads(text)["parameters"]


def test_every_definition_is_loaded() -> None:
    assert len(_raw_definitions()) == 1375
    assert {"Patient", "CarePlan", "Goal", "RelatedPerson", "Observation"} <= resource_types()
    assert "Resource" not in resource_types() and "DomainResource" not in resource_types()


@pytest.mark.parametrize("res_type", ["Patient", "CarePlan", "Goal", "Binary", "Bundle"])
def test_resource_level_parameters_are_inherited(res_type: str) -> None:
    params = params_for(res_type)
    for code in RESOURCE_LEVEL:
        assert params[code].base == res_type
        assert is_supported(params[code])
    assert params["_id"].expression == "Resource.id"
    assert params["_lastUpdated"].type == "date"


def test_domain_resource_parameters_are_known_but_not_supported() -> None:
    text = params_for("Patient")["_text"]
    assert text.type == "string" and not is_supported(text)
    assert "_text" not in supported_params("Patient")
    assert "_content" in params_for("Patient") and "_content" not in supported_params("Patient")


def test_unknown_type_has_no_parameters() -> None:
    assert params_for("NotAType") == {}


def test_shared_expression_is_split_per_type() -> None:
    patient = params_for("CarePlan")["patient"]
    assert patient.expression == "CarePlan.subject.where(resolve() is Patient)"
    assert patient.targets == ("Patient",)
    assert patient.url == "http://hl7.org/fhir/SearchParameter/clinical-patient"
    assert params_for("AllergyIntolerance")["patient"].expression == "AllergyIntolerance.patient"
    assert params_for("RiskAssessment")["date"].expression == "(RiskAssessment.occurrence as dateTime)"
    assert params_for("Observation")["value-string"].expression == (
        "(Observation.value as string) | (Observation.value as CodeableConcept).text"
    )
    assert params_for("Observation")["code"].expression == "Observation.code"
    assert params_for("RelatedPerson")["address"].expression == "RelatedPerson.address"


def test_single_base_expression_without_type_prefix_is_kept() -> None:
    assert params_for("InsurancePlan")["name"].expression == "name | alias"


def test_split_union_respects_brackets_and_quotes() -> None:
    assert split_union("A.b | (A.c as X) | A.d.where(e = 'x|y')") == ["A.b", "(A.c as X)", "A.d.where(e = 'x|y')"]
    assert leading_type("(RiskAssessment.occurrence as dateTime)") == "RiskAssessment"
    assert leading_type("name") is None
    assert expression_for("A.x | B.y | (A.z as T) | Resource.id", "A") == "A.x | (A.z as T) | Resource.id"


def test_composite_and_special_are_not_supported() -> None:
    for raw in _raw_definitions():
        if raw["type"] in ("composite", "special"):
            for base in raw["base"]:
                assert not is_supported(params_for(base)[raw["code"]])
    assert "code-value-quantity" in params_for("Observation")
    assert "code-value-quantity" not in supported_params("Observation")
    assert "near" not in supported_params("Location")


def test_supported_param_fields() -> None:
    param = supported_params("Patient")["birthdate"]
    assert param == SearchParam("birthdate", "date", "Patient", "Patient.birthDate",
                                "http://hl7.org/fhir/SearchParameter/individual-birthdate")


def test_every_supported_definition_compiles_natively() -> None:
    """All 1,325 supported R4 definitions (1,375 less 46 composite, 1 special, 3 without an
    expression) compile to the native walker for every base type: no fallback on R4 data."""
    supported = [r for r in _raw_definitions() if r["type"] not in ("composite", "special") and r.get("expression")]
    assert len(supported) == 1325
    for raw in supported:
        for base in raw["base"]:
            expression = params_for(base)[raw["code"]].expression
            try:
                compile_path(expression)
            except UnsupportedExpression as exc:  # pragma: no cover - the assertion's message
                pytest.fail(f"{base}.{raw['code']}: {expression}: {exc}")
    native, fallback = native_coverage()
    assert fallback == 0 and native > 2400
