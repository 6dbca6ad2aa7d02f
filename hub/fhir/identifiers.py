"""The identifier systems of the shared record and the NHS number check, in one place: every
part of the hub (validation, identity matching, mappings) must agree on what an NHS number is
and how each source's identifiers are named, or the same person becomes two."""
from __future__ import annotations

# The base of every canonical URL and identifier system the hub defines.
CANONICAL_BASE = "https://ipc-hub.example.org/fhir"

NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS_ORGANIZATION_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"
# A number sent as an NHS number that fails the Modulus 11 check: kept, so nothing the source
# said is lost, but under its own system, so it is never taken for an NHS number or matched on.
UNVERIFIED_NHS_NUMBER = f"{CANONICAL_BASE}/Id/unverified-nhs-number"
MOD_SERVICE_NUMBER = f"{CANONICAL_BASE}/Id/mod-service-number"
LOCAL_AUTHORITY_PERSON_ID = f"{CANONICAL_BASE}/Id/local-authority-person-id"
CHARITY_REFERENCE = f"{CANONICAL_BASE}/Id/charity-reference"
# A charity's Charity Commission number (the Commission publishes no FHIR identifier system).
CHARITY_NUMBER = f"{CANONICAL_BASE}/Id/charity-number"
# An OAuth2 client of the hub, as AuditEvent and Provenance name it.
CLIENT_ID = f"{CANONICAL_BASE}/Id/client-id"
# Provenance: which source system sent a fact, and in which envelope (topic/partition/offset).
SOURCE_SYSTEM = f"{CANONICAL_BASE}/Id/source-system"
ENVELOPE = f"{CANONICAL_BASE}/Id/envelope"


# Identifiers that say something about a person but must never join two records.
NEVER_MATCHED = frozenset({UNVERIFIED_NHS_NUMBER})


def is_valid_nhs_number(value: object) -> bool:
    """Ten digits whose last is the Modulus 11 check digit of the first nine: weights 10 to 2,
    check = 11 - (sum mod 11), 11 becomes 0, and 10 means no valid number exists."""
    if not isinstance(value, str) or len(value) != 10 or not value.isdigit():
        return False
    total = sum(int(digit) * weight for digit, weight in zip(value[:9], range(10, 1, -1), strict=True))
    return (11 - total % 11) % 11 == int(value[9])


# The ranges NHS numbers are issued from (the first three digits): CHI numbers in Scotland,
# Northern Ireland's Health and Care numbers, England, Wales and the Isle of Man; and the test
# range 999, which no person is given and which tests and demonstrations use.
_ISSUED = ((10, 311), (320, 399), (400, 499), (600, 799), (999, 999))


def is_issuable_nhs_number(value: object) -> bool:
    """A valid NHS number (Modulus 11) that could belong to one person: not a placeholder a
    system sends for "unknown" (0000000000, 1111111111 and other repeated digits pass Modulus 11)
    and within the ranges numbers are issued from. Anything else is kept as an unverified
    identifier and never used to find or join a person."""
    if not is_valid_nhs_number(value):
        return False
    assert isinstance(value, str)
    if len(set(value)) == 1:
        return False
    prefix = int(value[:3])
    return any(low <= prefix <= high for low, high in _ISSUED)
