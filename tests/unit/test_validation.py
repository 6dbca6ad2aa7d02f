"""The IPC guide: every example validates, every mutated example fails with its rule and
location, and the guide's Python invariants agree with their FHIRPath definitions."""
from __future__ import annotations

import pytest

from hub.fhir.errors import FhirError
from hub.fhir.resources import check_structure
from hub.fhir.validation import load_guide, validate, validator
from hub.fhir.validation.rules import fhirpath_rule
from hub.fhir.validation.invariants import NATIVE
from tests.validation_cases import MUTATIONS, example, example_paths, expected, mutated

EXAMPLES = [p.stem for p in example_paths()]


def _resources(name: str) -> list[dict]:
    found = example(name)
    return [e["resource"] for e in found["entry"]] if found["resourceType"] == "Bundle" else [found]


def test_the_guide_is_complete():
    guide = load_guide()
    assert {sd["type"] for sd in guide.profiles()} >= {"Patient", "CarePlan", "Goal", "RelatedPerson",
                                                        "CareTeam", "Consent", "Flag"}
    assert len(guide.code_systems) >= 15 and len(guide.value_sets) >= 20
    for resource in guide.conformance_resources():
        check_structure(resource)            # the guide itself is valid FHIR
    profiled = {r["meta"]["profile"][0] for name in EXAMPLES for r in _resources(name) if "meta" in r}
    assert profiled == {sd["url"] for sd in guide.profiles()}   # an example for every profile


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_validates(name):
    for resource in _resources(name):
        assert [i.diagnostics for i in validate(resource)] == []
        check_structure(resource)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_example_fails_with_rule_and_location(name):
    rule, location = expected(name)
    with pytest.raises(FhirError) as caught:
        check_structure(mutated(name))
    assert caught.value.status == 422
    assert any(rule in i.diagnostics and i.expression == location for i in caught.value.issues), \
        [(i.diagnostics, i.expression) for i in caught.value.issues]


def test_scope_without_a_claim():
    patient = mutated("bad-nhs-number")
    del patient["meta"]
    assert any("ipc-nhs-1" in i.diagnostics for i in validate(patient))
    plan = example("CarePlan-veteran-plan")
    plan["category"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000"}]}]
    del plan["meta"]
    assert validator().profiles_in_scope(plan) == []


def test_uk_core_and_core_profile_claims_are_accepted():
    patient = example("Patient-adult-patient")
    patient["meta"]["profile"] = ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]
    assert validate(patient) == []


def test_the_indicative_amount_may_differ_from_the_agreed_amount():
    """An estimate before planning is not the agreed budget: only the agreed amount must equal
    the allocations (ipc-bud-1); a statement without an indicative amount is valid too."""
    budget = example("CarePlan-veteran-budget")
    _ext_of(budget, "indicative-amount")["valueMoney"]["value"] = 41234.56
    assert [i for i in validate(budget) if i.severity == "error"] == []
    budget["extension"] = [e for e in budget["extension"] if not e["url"].endswith("/indicative-amount")]
    assert [i for i in validate(budget) if i.severity == "error"] == []
    check_structure(budget)


def _ext_of(resource: dict, name: str) -> dict:
    return next(e for e in resource["extension"] if e["url"].endswith("/" + name))


def _constraints():
    for sd in load_guide().structure_definitions.values():
        for element in sd["differential"]["element"]:
            for constraint in element.get("constraint", []):
                yield constraint["key"], element["id"], constraint["expression"]


def test_every_native_invariant_has_a_fhirpath_definition():
    assert set(NATIVE) == {key for key, _, _ in _constraints()}


@pytest.mark.parametrize("key", sorted(NATIVE))
def test_native_invariant_agrees_with_fhirpath(key):
    """On every example and mutation, the Python rule and fhirpathpy give the same verdict."""
    _, element_id, expression = next(c for c in _constraints() if c[0] == key)
    evaluate = fhirpath_rule(expression)
    compiled = next(p for p in (validator().compiler.profile(sd["url"]) for sd in load_guide().profiles())
                    if p.type == element_id.split(".")[0] and any(
                        c["key"] == key for e in load_guide().structure_definitions[p.url]["differential"]["element"]
                        for c in e.get("constraint", [])))
    from hub.fhir.validation.rules import Walk
    steps = compiled._steps(element_id) if "." in element_id else ()
    resources = [r for name in EXAMPLES for r in _resources(name)] + [mutated(n) for n in MUTATIONS]
    checked = 0
    for resource in resources:
        if resource["resourceType"] != compiled.type:
            continue
        for _, node in Walk((compiled.type, resource)).nodes(steps):
            native = NATIVE[key](node)
            assert ([] if native is None else [native]) == evaluate(node), (key, node)
            checked += 1
    assert checked >= 3
