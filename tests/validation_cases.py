"""The guide's examples and a suite of mutated examples, each with the rule and FHIRPath
location it must fail with (shared by the unit tests and the API tests)."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

from hub.fhir import jsontext

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
BASE = "https://ipc-hub.example.org/fhir"
SD = f"{BASE}/StructureDefinition/"


def example(name: str) -> dict:
    return jsontext.loads((PROFILES / "examples" / f"{name}.json").read_bytes())


def example_paths() -> list[Path]:
    return sorted((PROFILES / "examples").glob("*.json"))


def _ext(resource: dict, url: str) -> list[dict]:
    return [e for e in resource["extension"] if e["url"] == SD + url]


def _drop_ext(resource: dict, url: str) -> None:
    resource["extension"] = [e for e in resource["extension"] if e["url"] != SD + url]


def _set(fn: Callable[[dict], None]) -> Callable[[dict], dict]:
    def mutate(resource: dict) -> dict:
        copied = copy.deepcopy(resource)
        fn(copied)
        return copied
    return mutate


# name: (example, mutation, expected rule text in diagnostics, expected FHIRPath location)
MUTATIONS = {
    "bad-nhs-number": ("Patient-veteran-patient",
                       _set(lambda r: r["identifier"][0].update(value="9990123451")),
                       "ipc-nhs-1", "Patient.identifier[0].value"),
    "nhs-number-not-ten-digits": ("Patient-adult-patient",
                                  _set(lambda r: r["identifier"][0].update(value="99904567")),
                                  "ipc-nhs-1", "Patient.identifier[0].value"),
    "wrong-verification-code": ("Patient-veteran-patient",
                                _set(lambda r: r["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]
                                     .update(code="99")),
                                "ipc-nhs-number-verification-status", "Patient.identifier[0].extension[0].value"),
    "bad-service-number": ("Patient-veteran-patient",
                           _set(lambda r: r["identifier"][1].update(value="30 11 22")),
                           "ipc-mod-1", "Patient.identifier[1].value"),
    "missing-name": ("Patient-adult-patient", _set(lambda r: r.pop("name")), "Patient.name", "Patient.name"),
    "wrong-service-branch": ("Patient-veteran-patient",
                             _set(lambda r: r["extension"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]
                                  .update(code="space-force")),
                             "Extension.extension:branch.value[x]", "Patient.extension[0].extension[0].value"),
    "wrong-extension-type": ("CarePlan-veteran-plan",
                             _set(lambda r: _ext(r, "next-review-date")[0].update(
                                 {"valueString": "May", "valueDate": None}) or _ext(r, "next-review-date")[0].pop("valueDate")),
                             "Extension.value[x]", "CarePlan.extension[7].value"),
    "unagreed-active-plan": ("CarePlan-veteran-plan", _set(lambda r: _drop_ext(r, "plan-agreement")),
                             "ipc-cp-1", "CarePlan"),
    "active-plan-no-coordinator": ("CarePlan-child-plan", _set(lambda r: _drop_ext(r, "care-coordinator")),
                                   "ipc-cp-2", "CarePlan"),
    "missing-stage": ("CarePlan-child-plan", _set(lambda r: _drop_ext(r, "ipc-stage")),
                      "CarePlan.extension:stage", "CarePlan.extension"),
    "wrong-stage-code": ("CarePlan-adult-plan",
                         _set(lambda r: _ext(r, "ipc-stage")[0]["valueCodeableConcept"]["coding"][0].update(code="done")),
                         "ipc-stage", "CarePlan.extension[0].value"),
    "missing-description": ("CarePlan-adult-plan", _set(lambda r: r.pop("description")),
                            "CarePlan.description", "CarePlan.description"),
    "action-without-provider": ("CarePlan-adult-plan", _set(lambda r: r["activity"][0]["detail"].pop("performer")),
                                "CarePlan.activity.detail.performer", "CarePlan.activity[0].detail.performer"),
    "wrong-intent": ("CarePlan-veteran-plan", _set(lambda r: r.update(intent="proposal")),
                     "CarePlan.intent", "CarePlan.intent"),
    "subject-not-a-patient": ("CarePlan-veteran-plan", _set(lambda r: r["subject"].update(reference="Group/g1")),
                              "CarePlan.subject", "CarePlan.subject.reference"),
    "allocations-do-not-add-up": ("CarePlan-veteran-budget",
                                  _set(lambda r: _ext(r, "agreed-amount")[0]["valueMoney"].update(value=40000)),
                                  "ipc-bud-1", "CarePlan"),
    "wrong-management-option": ("CarePlan-adult-budget",
                                _set(lambda r: _ext(r, "budget-allocation")[0]["extension"][1]["valueCodeableConcept"]
                                     ["coding"][0].update(code="cash")),
                                "ipc-management-option", "CarePlan.extension[2].extension[1].value"),
    "allocation-without-amount": ("CarePlan-adult-budget",
                                  _set(lambda r: _ext(r, "budget-allocation")[0].update(extension=[
                                      e for e in _ext(r, "budget-allocation")[0]["extension"] if e["url"] != "amount"])),
                                  "Extension.extension:amount", "CarePlan.extension[2].extension"),
    "budget-type-does-not-follow-mix": ("CarePlan-veteran-budget",
                                        _set(lambda r: _ext(r, "budget-type")[0]["valueCodeableConcept"]["coding"][0]
                                             .update(code="personal-health-budget")),
                                        "ipc-bud-3", "CarePlan"),
    "spend-typed-into-statement": ("CarePlan-adult-budget",
                                   _set(lambda r: _ext(r, "budget-allocation")[0]["extension"].append(
                                       {"url": "spent", "valueMoney": {"value": 10, "currency": "GBP"}})),
                                   "Extension.extension:spent", "CarePlan.extension[2].extension"),
    "spend-line-without-amount": ("ChargeItem-veteran-pa-wages", _set(lambda r: r.pop("priceOverride")),
                                  "ChargeItem.priceOverride", "ChargeItem.priceOverride"),
    "spend-line-unknown-kind": ("ChargeItem-veteran-pa-wages",
                                _set(lambda r: _ext(r, "spend-kind")[0]["valueCodeableConcept"]["coding"][0]
                                     .update(code="gift")),
                                "ipc-spend-kind", "ChargeItem.extension[0].value"),
    "account-without-statement": ("Account-veteran-nhs-direct-payment",
                                  _set(lambda r: _drop_ext(r, "budget-statement")),
                                  "Account.extension:budgetStatement", "Account.extension"),
    "budget-not-part-of-a-plan": ("CarePlan-child-budget", _set(lambda r: r.pop("partOf")),
                                  "CarePlan.partOf", "CarePlan.partOf"),
    "goal-wrong-life-area": ("Goal-veteran-goal-home",
                             _set(lambda r: r["category"][0]["coding"][0].update(code="housing")),
                             "ipc-life-area", "Goal.category[0]"),
    "goal-without-own-words": ("Goal-adult-goal-pas",
                               _set(lambda r: r.update(description={"coding": [{
                                   "system": "http://snomed.info/sct", "code": "713458007"}]})),
                               "Goal.description.text", "Goal.description.text"),
    "carer-wrong-willingness": ("RelatedPerson-adult-wife",
                                _set(lambda r: _ext(r, "caring-role")[0]["extension"][1]["valueCodeableConcept"]
                                     ["coding"][0].update(code="maybe")),
                                "ipc-caring-willingness", "RelatedPerson.extension[1].extension[1].value"),
    "team-two-coordinators": ("CareTeam-veteran-team",
                              _set(lambda r: r["participant"][1]["role"][0]["coding"][0].update(code="care-coordinator")),
                              "ipc-ct-1", "CareTeam"),
    "consent-wrong-record-part": ("Consent-adult-consent",
                                  _set(lambda r: r["provision"]["provision"][0]["code"][0]["coding"][0].update(code="all")),
                                  "ipc-record-part", "Consent.provision.provision[0].code[0]"),
    "flag-without-start": ("Flag-veteran-flag", _set(lambda r: r.pop("period")), "Flag.period", "Flag.period"),
    "agreement-unknown-method": ("CarePlan-veteran-plan",
                                 _set(lambda r: _ext(r, "plan-agreement")[0]["extension"][3]["valueCodeableConcept"]
                                      ["coding"][0].update(code="by-pigeon")),
                                 "ipc-agreement-method", "CarePlan.extension[2].extension[3].value"),
    "need-without-life-area": ("CarePlan-veteran-plan",
                               _set(lambda r: _ext(r, "life-area-need")[0].update(extension=[
                                   e for e in _ext(r, "life-area-need")[0]["extension"] if e["url"] != "lifeArea"])),
                               "Extension.extension:lifeArea", "CarePlan.extension[8].extension"),
    "review-task-without-due-date": ("Task-veteran-review", _set(lambda r: r.pop("restriction")),
                                     "Task.restriction", "Task.restriction"),
    "review-task-not-about-a-plan": ("Task-veteran-review",
                                     _set(lambda r: r["focus"].update(reference="Goal/veteran-goal-home")),
                                     "Task.focus", "Task.focus.reference"),
    "declined-request-without-reason": ("Task-veteran-review-request", _set(lambda r: r.update(status="rejected")),
                                        "ipc-rr-1", "Task"),
    "review-request-by-the-coordinator": ("Task-veteran-review-request",
                                          _set(lambda r: r["requester"].update(reference="Practitioner/veteran-vwm")),
                                          "Task.requester", "Task.requester.reference"),
    "sign-off-without-role": ("Task-veteran-sign-off", _set(lambda r: r.pop("performerType")),
                              "Task.performerType", "Task.performerType"),
    "action-without-owner": ("Task-veteran-action", _set(lambda r: r.pop("owner")), "Task.owner", "Task.owner"),
    "meeting-without-plan": ("Encounter-veteran-review",
                             _set(lambda r: r.update(extension=[e for e in r["extension"] if e["url"] != SD + "care-plan"])),
                             "Encounter.extension:carePlan", "Encounter.extension"),
    "finished-meeting-without-end": ("Encounter-veteran-review", _set(lambda r: r["period"].pop("end")),
                                     "ipc-mt-1", "Encounter"),
    "goal-progress-wrong-code": ("Encounter-veteran-review",
                                 _set(lambda r: r["extension"][2]["extension"][1]["valueCodeableConcept"]["coding"][0]
                                      .update(code="great")),
                                 "ipc-goal-achievement", "Encounter.extension[2].extension[1].value"),
    "outcome-response-elsewhere": ("QuestionnaireResponse-veteran-ons4",
                                   _set(lambda r: r.update(questionnaire="https://example.org/Questionnaire/phq9")),
                                   "ipc-or-1", "QuestionnaireResponse"),
    "outcome-response-without-plan": ("QuestionnaireResponse-veteran-gas", _set(lambda r: r.pop("basedOn")),
                                      "QuestionnaireResponse.basedOn", "QuestionnaireResponse.basedOn"),
    "positive-risk-without-mitigation": ("RiskAssessment-veteran-climbing", _set(lambda r: r.pop("mitigation")),
                                         "RiskAssessment.mitigation", "RiskAssessment.mitigation"),
    "positive-risk-without-choice": ("RiskAssessment-veteran-climbing",
                                     _set(lambda r: r.update(extension=r["extension"][1:])),
                                     "RiskAssessment.extension:chosenActivity", "RiskAssessment.extension"),
    "ehc-plan-without-end": ("CarePlan-child-ehc-plan", _set(lambda r: r["period"].pop("end")),
                             "ehc-1", "CarePlan"),
    "ehc-provision-without-section": ("CarePlan-child-ehc-plan",
                                      _set(lambda r: r["activity"][1]["detail"].update(code={"text": "Physio"})),
                                      "ehc-2", "CarePlan"),
    "issued-ehc-plan-without-needs": ("CarePlan-child-ehc-plan", _set(lambda r: r.pop("addresses")),
                                      "ehc-3", "CarePlan"),
    "views-sent-by-someone-else": ("Communication-child-views",
                                   _set(lambda r: r["sender"].update(reference="RelatedPerson/child-mum")),
                                   "ypv-1", "Communication"),
    "ehc-task-without-due-date": ("Task-child-ehc-final", _set(lambda r: r["restriction"]["period"].update(end=None, start="2025-09-08")
                                                                 or r["restriction"]["period"].pop("end")),
                                  "Task.restriction.period.end", "Task.restriction.period.end"),
    "unknown-claimed-profile": ("Patient-adult-patient",
                                _set(lambda r: r["meta"].update(profile=[SD + "ipc-patient-v9"])),
                                "is not known", "Patient.meta.profile"),
}


def mutated(name: str) -> dict:
    source, mutate, _, _ = MUTATIONS[name]
    return mutate(example(source))


def expected(name: str) -> tuple[str, str]:
    _, _, rule, location = MUTATIONS[name]
    return rule, location


def examples_json() -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text())) for p in example_paths()]
