"""Consent → grants, and the defaults setting: only active IPC record-sharing consents grant,
lead-charity always needs an organisation, and a bad setting is refused, never guessed."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hub.config import Settings
from hub.consent.defaults import ConsentConfigError, parse_defaults
from hub.consent.grants import Grant, grants_of
from hub.consent.parts import PARTS

EXAMPLES = Path(__file__).resolve().parents[2] / "profiles" / "examples"


def consent(name: str = "veteran") -> dict:
    return json.loads((EXAMPLES / f"Consent-{name}-consent.json").read_text())


ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
CHARITY = "https://ipc-hub.example.org/fhir/Id/charity-number"
# The identifiers each Organization the veteran's consent names carries when it is written.
ORGANISATIONS = {"veteran-icb": [(ODS, "QT1")], "veteran-charity": [(CHARITY, "1123456")],
                 "veteran-council": [(ODS, "891")]}


def test_each_permit_becomes_grants_per_part_bound_to_its_organisations_identifier():
    found = grants_of(consent(), "veteran-patient", ORGANISATIONS)
    assert Grant("veteran-patient", "nhs", ODS, "QT1", "health", True) in found
    assert Grant("veteran-patient", "lead-charity", CHARITY, "1123456", "care-team", True) in found
    assert {g.part for g in found if g.role == "local-authority"} == {"demographics", "care-support-plan", "budget"}
    assert all(g.permit for g in found)
    assert len(found) == 4 + 3 + 3


def test_an_organisation_with_several_identifiers_is_bound_to_each():
    found = grants_of(consent(), "p", {**ORGANISATIONS, "veteran-icb": [(ODS, "QT1"), (ODS, "QT2")]})
    assert {g.org_code for g in found if g.role == "nhs"} == {"QT1", "QT2"}


def test_an_organisation_without_an_identifier_grants_nothing():
    found = grants_of(consent(), "p", {"veteran-charity": [(CHARITY, "1123456")]})
    assert {g.role for g in found} == {"lead-charity"}  # the ICB and council carry no identifier here
    assert grants_of(consent(), "p") == []


def test_inactive_or_other_consents_grant_nothing():
    withdrawn = consent()
    withdrawn["status"] = "inactive"
    assert grants_of(withdrawn, "p") == []
    treatment = consent()
    treatment["meta"] = {}
    treatment["category"] = [{"text": "Treatment"}]
    assert grants_of(treatment, "p") == []
    assert grants_of(consent(), None) == []


def test_lead_charity_without_an_organisation_grants_nobody():
    c = consent()
    for p in c["provision"]["provision"]:
        p["actor"][0].pop("reference")
    roles = {g.role for g in grants_of(c, "p")}
    assert "lead-charity" not in roles
    assert {"nhs", "local-authority"} <= roles
    assert all(g.org_code is None and g.org_system is None for g in grants_of(c, "p"))


def test_deny_provisions_and_identifier_references():
    c = consent()
    nested = copy.deepcopy(c["provision"]["provision"][0])
    nested["type"] = "deny"
    nested["actor"][0]["reference"] = {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code",
                                                      "value": "RX1"}}
    c["provision"]["provision"].append(nested)
    denies = [g for g in grants_of(c, "p") if not g.permit]
    assert {(g.org_system, g.org_code) for g in denies} == {(ODS, "RX1")}
    assert {g.part for g in denies} == {"demographics", "care-support-plan", "health", "budget"}
    # An identifier without a system cannot be told from another scheme's code: nobody.
    nested["actor"][0]["reference"] = {"identifier": {"value": "RX1"}}
    assert not [g for g in grants_of(c, "p") if not g.permit]


def test_an_unresolvable_reference_never_widens_to_the_class():
    c = consent()
    c["provision"]["provision"][0]["actor"][0]["reference"] = {"reference": "https://elsewhere.example/Organization/1"}
    assert not [g for g in grants_of(c, "p", ORGANISATIONS) if g.role == "nhs"]
    c["provision"]["provision"][0]["actor"][0]["reference"] = {"reference": "#contained-org"}
    assert not [g for g in grants_of(c, "p", ORGANISATIONS) if g.role == "nhs"]


def test_defaults_are_safe_when_unset():
    assert parse_defaults(Settings().consent_defaults) == parse_defaults(None)
    table = parse_defaults(None)
    assert table["nhs"] == PARTS
    assert table["local-authority"] == ("demographics",)
    assert table["charity"] == () and table["defence"] == () and table["education"] == ()


@pytest.mark.parametrize("text", [
    "nhs=*;local-authority=demographics,care-support-plan;charity=",
    '{"nhs": "*", "local-authority": ["demographics", "care-support-plan"], "charity": []}',
])
def test_both_spellings_mean_the_same(text):
    table = parse_defaults(text)
    assert table["local-authority"] == ("demographics", "care-support-plan")
    assert table["charity"] == () and table["education"] == () and table["nhs"] == PARTS


@pytest.mark.parametrize("text", ["nhs=everything", "charities=*", "nhs", '{"nhs": 1}', "{not json"])
def test_a_bad_setting_is_refused(text):
    with pytest.raises(ConsentConfigError):
        parse_defaults(text)


@pytest.mark.parametrize("case", sorted(p.name for p in EXAMPLES.glob("Bundle-case-*.json")))
def test_the_guides_cases_grant_to_every_organisation_their_consents_name(case):
    """Issue 20, point 2: the guide's worked cases name organisations that carry an identifier
    (system and value), so each permit of their record-sharing Consents binds to an identity and
    grants something — none points at an Organization with no identifier (which grants nothing)."""
    bundle = json.loads((EXAMPLES / case).read_text())
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    consents = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Consent"
                and e["resource"].get("status") == "active"]
    assert consents
    for found in consents:
        organisations, named = {}, set()
        for provision in found["provision"]["provision"]:
            for actor in provision.get("actor", []):
                target = by_url.get(actor.get("reference", {}).get("reference", ""))
                if target is None:
                    continue
                assert target["resourceType"] == "Organization"
                ids = [(i["system"], i["value"]) for i in target.get("identifier", []) if i.get("system")]
                assert ids, f"{case}: a grant to an Organization with no identifier grants nothing"
                key = actor["reference"]["reference"]
                organisations[key.rsplit(":", 1)[-1]] = ids
                named.add(actor["role"]["coding"][0]["code"])
                actor["reference"]["reference"] = f"Organization/{key.rsplit(':', 1)[-1]}"
        grants = grants_of(found, "p", organisations)
        assert named and {g.role for g in grants} == named
