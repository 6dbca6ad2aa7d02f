"""How a source's part joins a person's plan (hub.pipeline.plans.join): pure rules."""
from __future__ import annotations

from hub.fhir.identifiers import CANONICAL_BASE
from hub.pipeline.plans import ALLOCATION, join, plan_kind

STAGE = f"{CANONICAL_BASE}/StructureDefinition/ipc-stage"
BUDGET_TYPE = f"{CANONICAL_BASE}/StructureDefinition/budget-type"
INDICATIVE = f"{CANONICAL_BASE}/StructureDefinition/indicative-amount"
AGREED = f"{CANONICAL_BASE}/StructureDefinition/agreed-amount"
TYPES = f"{CANONICAL_BASE}/CodeSystem/ipc-budget-type"
FUNDING = f"{CANONICAL_BASE}/CodeSystem/ipc-funding-source"
CATEGORY = f"{CANONICAL_BASE}/CodeSystem/ipc-plan-category"


def _allocation(source: str, amount: float, option: str = "direct-payment") -> dict:
    return {"url": ALLOCATION, "extension": [
        {"url": "fundingSource", "valueCodeableConcept": {"coding": [{"system": FUNDING, "code": source}]}},
        {"url": "managementOption", "valueCodeableConcept": {"coding": [
            {"system": f"{CANONICAL_BASE}/CodeSystem/ipc-management-option", "code": option}]}},
        {"url": "amount", "valueMoney": {"value": amount, "currency": "GBP"}}]}


def _plan(**fields) -> dict:
    return {"resourceType": "CarePlan", "id": "p", "status": "draft", "intent": "plan",
            "category": [{"coding": [{"system": CATEGORY, "code": "care-support-plan"}]}], **fields}


def test_another_sources_part_fills_gaps_and_adds_its_own_items():
    existing = _plan(description="mine", activity=[{"id": "a", "detail": {"description": "A"}}],
                     goal=[{"reference": "Goal/1"}], extension=[{"url": STAGE, "valueCode": "preparation"}],
                     meta={"versionId": "3"})
    part = _plan(id="other", description="theirs", title="their title",
                 activity=[{"id": "b", "detail": {"description": "B"}}],
                 goal=[{"reference": "Goal/1"}, {"reference": "Goal/2"}],
                 extension=[{"url": STAGE, "valueCode": "conversation"}])
    merged = join(existing, part, own=False)
    assert merged["id"] == "p"
    assert merged["description"] == "mine" and merged["title"] == "their title"
    assert [a["id"] for a in merged["activity"]] == ["a", "b"]
    assert merged["goal"] == [{"reference": "Goal/1"}, {"reference": "Goal/2"}]
    assert merged["extension"] == [{"url": STAGE, "valueCode": "preparation"}]
    assert "meta" not in merged


def test_the_owning_source_restates_its_words_and_replaces_its_own_activity():
    existing = _plan(description="old", activity=[{"id": "a", "detail": {"description": "A"}},
                                                  {"id": "b", "detail": {"description": "B"}}],
                     extension=[{"url": STAGE, "valueCode": "preparation"}])
    part = _plan(description="new", activity=[{"id": "a", "detail": {"description": "A, weekly"}}],
                 extension=[{"url": STAGE, "valueCode": "conversation"}])
    merged = join(existing, part, own=True)
    assert merged["description"] == "new"
    assert merged["activity"] == [{"id": "a", "detail": {"description": "A, weekly"}},
                                  {"id": "b", "detail": {"description": "B"}}]
    assert merged["extension"] == [{"url": STAGE, "valueCode": "conversation"}]


def test_a_source_restating_its_funding_replaces_only_its_own_allocations():
    existing = _plan(extension=[_allocation("nhs", 24000), _allocation("local-authority", 5000),
                                _allocation("local-authority", 800, "notional")])
    part = _plan(extension=[_allocation("local-authority", 6100)])
    merged = join(existing, part, own=False)
    amounts = [(e["extension"][0]["valueCodeableConcept"]["coding"][0]["code"], e["extension"][2]["valueMoney"]["value"])
               for e in merged["extension"]]
    assert amounts == [("nhs", 24000), ("local-authority", 6100)]


def test_first_part_is_the_plan_and_only_open_ipc_plans_are_parts():
    part = _plan(description="first")
    assert join(None, part, own=True) is part
    assert plan_kind(part) == "care-support-plan"
    assert plan_kind({**part, "status": "completed"}) is None
    assert plan_kind({**part, "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}]}) is None
    assert plan_kind({"resourceType": "Goal", "status": "draft"}) is None


def _statement(**fields) -> dict:
    return {**_plan(**fields), "category": [{"coding": [{"system": CATEGORY, "code": "budget-statement"}]}]}


def _budget_type(plan: dict) -> str:
    return next(e["valueCodeableConcept"]["coding"][0]["code"] for e in plan["extension"] if e["url"] == BUDGET_TYPE)


def test_joined_shares_restate_the_agreed_amount_and_type_and_keep_the_indicative_estimate():
    """The agreed amount is the joined allocations' sum and the type follows the mix; the
    indicative amount, an estimate made before planning, is kept as its owner wrote it."""
    from hub.fhir import jsontext
    from hub.fhir.validation.invariants import allocations_add_up, budget_type_follows_mix

    agreement = f"{CANONICAL_BASE}/StructureDefinition/plan-agreement"
    nhs = jsontext.loads(jsontext.dumps(_statement(extension=[
        {"url": BUDGET_TYPE, "valueCodeableConcept": {"coding": [{"system": TYPES, "code": "personal-health-budget"}]}},
        {"url": INDICATIVE, "valueMoney": {"value": 26000.00, "currency": "GBP"}},
        {"url": agreement, "valueString": "the person"}, _allocation("nhs", 24000.00)])))
    council = jsontext.loads(jsontext.dumps(_statement(id="la", extension=[
        {"url": BUDGET_TYPE, "valueCodeableConcept": {"coding": [{"system": TYPES, "code": "personal-budget"}]}},
        {"url": AGREED, "valueMoney": {"value": 16730.50, "currency": "GBP"}},
        {"url": agreement, "valueString": "the council"}, _allocation("local-authority", 16730.50)])))
    merged = join(nhs, council, own=False)
    [agreed] = [e["valueMoney"] for e in merged["extension"] if e["url"] == AGREED]
    assert agreed == {"value": jsontext.FhirDecimal("40730.50"), "currency": "GBP"}
    [indicative] = [e["valueMoney"] for e in merged["extension"] if e["url"] == INDICATIVE]
    assert indicative == {"value": jsontext.FhirDecimal("26000.00"), "currency": "GBP"}
    assert _budget_type(merged) == "integrated-personal-budget"       # not whoever wrote first
    assert allocations_add_up(merged) is True and budget_type_follows_mix(merged) is True
    assert [e["valueString"] for e in merged["extension"] if e["url"] == agreement] == ["the person", "the council"]
    # A first part mislabelled by its sender: NHS money alone is a personal health budget.
    alone = join(None, _statement(id="n", extension=[
        {"url": BUDGET_TYPE, "valueCodeableConcept": {"coding": [{"system": TYPES, "code": "personal-budget"}]}},
        _allocation("nhs", 25000.00)]), own=True)
    assert _budget_type(alone) == "personal-health-budget"


def test_one_funders_mix_of_management_options_is_kept_when_joined():
    """An NHS direct payment and an NHS notional budget are two allocations (two accounts); the
    council's notional budget joins beside them."""
    from hub.money.statement import accounts_for, allocations

    nhs = _statement(extension=[_allocation("nhs", 9000.00, "direct-payment"), _allocation("nhs", 3000.00, "notional")],
                     subject={"reference": "Patient/x"}, period={"start": "2026-04-01", "end": "2027-03-31"})
    council = _statement(id="la", extension=[_allocation("local-authority", 5200.00, "notional")])
    merged = join(nhs, council, own=False)
    assert [(a.funder, a.option) for a in allocations(merged)] == [
        ("nhs", "direct-payment"), ("nhs", "notional"), ("local-authority", "notional")]
    accounts = accounts_for("p", merged)
    assert [(a["type"]["coding"][0]["code"], a["extension"][0]["valueCodeableConcept"]["coding"][0]["code"])
            for a in accounts] == [("direct-payment", "nhs"), ("notional", "nhs"), ("notional", "local-authority")]
    assert len({a["id"] for a in accounts}) == 3
    assert accounts_for("p", merged)[0]["id"] == accounts[0]["id"]        # the same account each time


def test_single_valued_extensions_are_the_profiles_max_one_slices():
    import json
    from pathlib import Path

    from hub.pipeline.plans import SINGLE_VALUED

    folder = Path(__file__).resolve().parents[2] / "profiles" / "StructureDefinition"
    single = set()
    for name in ("ipc-care-plan", "ipc-budget-statement"):
        for element in json.loads((folder / f"{name}.json").read_text())["differential"]["element"]:
            if element["id"].startswith("CarePlan.extension:") and element.get("max") == "1":
                single.update(element["type"][0]["profile"])
    assert single == SINGLE_VALUED


def _stage(code: str) -> dict:
    return {"url": STAGE, "valueCodeableConcept": {"coding": [
        {"system": f"{CANONICAL_BASE}/CodeSystem/ipc-stage", "code": code}]}}


def _stage_of(plan: dict) -> str:
    return next(e for e in plan["extension"] if e["url"] == STAGE)["valueCodeableConcept"]["coding"][0]["code"]


def test_a_feed_moves_the_stage_forward_only_as_far_as_the_entry_rules_allow():
    coordinated = {"goal": [{"reference": "Goal/1"}],
                   "extension": [_stage("preparation"), {"url": f"{CANONICAL_BASE}/StructureDefinition/care-coordinator",
                                                         "valueReference": {"reference": "Practitioner/1"}}]}
    drafted = _plan(**coordinated)
    services = _plan(id="la", extension=[_stage("make-it-happen")])
    # Not agreed: 'make it happen' (ipc-stage-2) is out of reach; 'record and agree' is not
    # (a coordinator and a goal: ipc-stage-1).
    moved_on = join(drafted, services, own=False)
    assert _stage_of(moved_on) == "record-and-agree"
    # The drafting source restating its earlier stage does not move the plan back.
    assert _stage_of(join(moved_on, drafted, own=True)) == "record-and-agree"
    # Without a coordinator the furthest is 'conversation'; a new plan from a feed is clamped too.
    assert _stage_of(join(_plan(extension=[_stage("preparation")]), services, own=False)) == "conversation"
    assert _stage_of(join(None, services, own=True)) == "conversation"


def test_a_feed_leaves_an_agreed_plan_at_the_stage_its_coordinator_chose():
    agreed = _plan(status="active", goal=[{"reference": "Goal/1"}], extension=[_stage("conversation")])
    services = _plan(id="la", extension=[_stage("make-it-happen")])
    merged = join(agreed, services, own=True)
    assert _stage_of(merged) == "conversation"   # moved back at a review; the extract does not undo it
    assert merged["status"] == "active"          # and its "draft" does not take the agreement back

