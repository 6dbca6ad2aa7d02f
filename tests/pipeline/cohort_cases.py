"""A synthetic population and cohort definitions for the cohort tests, with the truth computed
from how each person was built (not from the hub), so the hub's answer can be checked against it."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tests.factories import patient

SNOMED = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SD = "https://ipc-hub.example.org/fhir/StructureDefinition/"
# Long-term conditions (SNOMED CT): diabetes, COPD, heart failure, chronic kidney disease.
LONG_TERM = ("44054006", "13645005", "84114007", "709044004")
LEARNING_DISABILITY = "110359009"


@dataclass
class Person:
    n: int
    resource: dict[str, Any]
    conditions: list[tuple[str, str]] = field(default_factory=list)  # (code, clinical status)
    emergencies: int = 0
    deceased: bool = False

    @property
    def full_url(self) -> str:
        return f"urn:uuid:00000000-0000-4000-8000-{self.n:012d}"

    def active_long_term(self) -> int:
        return sum(1 for code, status in self.conditions if code in LONG_TERM and status == "active")

    def multimorbid(self) -> bool:
        """The truth for MULTIPLE_CONDITIONS: two or more active long-term conditions, alive."""
        return self.active_long_term() >= 2 and not self.deceased

    def complex_needs(self) -> bool:
        """The truth for COMPLEX_NEEDS: a learning disability, or two or more emergency visits."""
        has_ld = any(code == LEARNING_DISABILITY and status == "active" for code, status in self.conditions)
        return has_ld or self.emergencies >= 2


def population(size: int, seed: int = 16) -> list[Person]:
    rng = random.Random(seed)
    people = []
    for n in range(size):
        extra: dict[str, Any] = {}
        if n % 7 == 0:
            extra["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "pl",
                                                                 "display": "Polish"}]}, "preferred": True}]
        person = Person(n, patient(family=f"Cohort{n}", given="Test", **extra))
        for code in rng.sample(LONG_TERM, rng.choice((0, 0, 1, 1, 2, 3))):
            person.conditions.append((code, rng.choice(("active", "active", "active", "resolved"))))
        if rng.random() < 0.1:
            person.conditions.append((LEARNING_DISABILITY, "active"))
        person.emergencies = rng.choice((0, 0, 0, 1, 2, 3))
        person.deceased = rng.random() < 0.05
        if person.deceased:
            person.resource["deceasedBoolean"] = True
        people.append(person)
    return people


def condition(subject: str, code: str, status: str) -> dict[str, Any]:
    return {"resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "subject": {"reference": subject}}


def encounter(subject: str, emergency: bool) -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": "finished",
            "class": {"system": ACT, "code": "EMER" if emergency else "AMB"},
            "subject": {"reference": subject}}


def population_bundle(people: list[Person]) -> dict[str, Any]:
    """One transaction Bundle writing everyone and their record."""
    entries = []
    for person in people:
        entries.append({"fullUrl": person.full_url, "resource": person.resource,
                        "request": {"method": "POST", "url": "Patient"}})
        for code, status in person.conditions:
            entries.append({"resource": condition(person.full_url, code, status),
                            "request": {"method": "POST", "url": "Condition"}})
        for k in range(person.emergencies):
            entries.append({"resource": encounter(person.full_url, True), "request": {"method": "POST", "url": "Encounter"}})
        entries.append({"resource": encounter(person.full_url, False), "request": {"method": "POST", "url": "Encounter"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def definition(gid: str, name: str, characteristics: list[dict[str, Any]], *, status: str = "approved",
               combination: str = "all-of") -> dict[str, Any]:
    return {
        "resourceType": "Group", "id": gid,
        "meta": {"profile": [SD + "ipc-cohort-definition"]},
        "extension": [
            {"url": SD + "cohort-review", "extension": [
                {"url": "version", "valueString": "1.0"}, {"url": "status", "valueCode": status},
                {"url": "reviewer", "valueString": "Dr Test Reviewer"}, {"url": "reviewed", "valueDate": "2026-11-30"}]},
            {"url": SD + "cohort-combination", "valueCode": combination}],
        "type": "person", "actual": False, "active": True, "name": name,
        "characteristic": characteristics,
    }


def characteristic(words: str, language: str, expression: str, *, minimum: int = 1,
                   exclude: bool = False) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "expression", "valueExpression": {"language": language,
                                                                           "expression": expression}}]
    if minimum > 1:
        parts.append({"url": "minimum", "valuePositiveInt": minimum})
    return {"extension": [{"url": SD + "cohort-criterion", "extension": parts}],
            "code": {"text": words}, "valueBoolean": True, "exclude": exclude}


QUERY = "application/x-fhir-query"
FHIRPATH = "text/fhirpath"


def multiple_conditions(gid: str = "def-mltc", status: str = "approved") -> dict[str, Any]:
    codes = ",".join(f"{SNOMED}|{c}" for c in LONG_TERM)
    return definition(gid, "Multiple long-term conditions", [
        characteristic("two or more active long-term conditions", QUERY,
                       f"Condition?code={codes}&clinical-status=active", minimum=2),
        characteristic("has died", FHIRPATH, "Patient.where(deceased = true)", exclude=True),
    ], status=status)


def complex_needs(gid: str = "def-complex") -> dict[str, Any]:
    return definition(gid, "Complex needs", [
        characteristic("learning disability", QUERY,
                       f"Condition?code={SNOMED}|{LEARNING_DISABILITY}&clinical-status=active"),
        characteristic("two or more emergency attendances", FHIRPATH, "Encounter.where(class.code = 'EMER')",
                       minimum=2),
    ], combination="any-of")
