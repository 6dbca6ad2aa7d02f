"""NHS numbers as they arrive in real feeds: in PID-3 repetitions typed `NH` or assigned by `NHS`,
or with the `NHSNBR`/`NHSNMBR` type codes some PAS systems use, often spaced ("999 000 0018")
or hyphenated. Only a number passing the Modulus 11 check is an NHS number; anything else that
was sent as one is kept as a local identifier and flagged, so it can never be used to match."""
from __future__ import annotations

import re

NHS_TYPE_CODES = frozenset({"NH", "NHS", "NHSNBR", "NHSNMBR", "NHSNUMBER"})
NHS_AUTHORITIES = frozenset({"NHS", "NHSNBR", "NHSNMBR", "NHSNUMBER", "2.16.840.1.113883.2.1.4.1"})
_SEPARATORS = re.compile(r"[\s\-]")


def normalise(value: str) -> str:
    """Drop the spaces and hyphens people and PAS screens put into NHS numbers."""
    return _SEPARATORS.sub("", value)


def is_nhs_identifier(type_code: str, authority: str) -> bool:
    """Whether a CX repetition claims to be an NHS number (by type code or assigning authority)."""
    return type_code.upper() in NHS_TYPE_CODES or authority.upper() in NHS_AUTHORITIES
