"""Builders for realistic test resources. NHS numbers come only from the test range
999 000 0000 – 999 999 9999 and pass the Modulus 11 check."""
from __future__ import annotations

import itertools
import secrets
import uuid
from typing import Any

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
# Started at a random place well above the low serials tests write by hand (999 000 001 8 and
# the like), so a made-up number never collides with one of those, nor with another process's.
_serial = itertools.count(200_000 + secrets.randbelow(700_000))


def nhs_check_digit(first_nine: str) -> int | None:
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def test_nhs_number() -> str:
    """A fresh, valid NHS number in the test range."""
    while True:
        n = next(_serial)
        first_nine = f"999{n % 1_000_000:06d}"
        check = nhs_check_digit(first_nine)
        if check is not None:
            return f"{first_nine}{check}"


test_nhs_number.__test__ = False  # a factory, not a pytest test


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


_births = itertools.count(1)


def _birth_date() -> str:
    """A different birth date per person made: people alike in every detail are probable
    duplicates, and the hub raises a review Task for each pair it is given (hub.identity)."""
    n = next(_births)
    return f"19{40 + n % 60:02d}-{1 + n // 60 % 12:02d}-{1 + n // 720 % 28:02d}"


def patient(family: str = "Smith", given: str = "Alex", **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Patient",
        "identifier": [{"system": NHS_SYSTEM, "value": test_nhs_number()}],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": "male",
        "birthDate": _birth_date(),
        "address": [{"line": ["1 Station Road"], "city": "Nottingham", "postalCode": "NG1 1AA"}],
    }
    resource.update(extra)
    return resource


def care_plan(patient_ref: str, status: str = "active", **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "CarePlan",
        "status": status,
        "intent": "plan",
        "title": "Personalised care and support plan",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000",
                                  "display": "Care plan"}]}],
        "subject": {"reference": patient_ref},
        "period": {"start": "2026-01-01", "end": "2026-12-31"},
        "description": "What matters to me: getting back to work and living independently.",
    }
    resource.update(extra)
    return resource


def goal(patient_ref: str, text: str = "Return to part-time work", **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": text},
        "subject": {"reference": patient_ref},
    }
    resource.update(extra)
    return resource


def carer(patient_ref: str, **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "RelatedPerson",
        "patient": {"reference": patient_ref},
        "relationship": [{"coding": [{
            "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-AdditionalPersonRelationshipRole",
            "code": "Carer", "display": "Carer"}]}],
        "name": [{"family": "Smith", "given": ["Jo"]}],
    }
    resource.update(extra)
    return resource
