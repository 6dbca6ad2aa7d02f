"""Strict validation on request: hl7apy checks a message against the HL7 v2 standard of its
declared version (segments and groups the message structure allows and requires, cardinality,
data types such as dates). It knows the standard the fast parser does not, but costs ~10 ms a
message, so a listener runs it only when asked (HUB_MLLP_STRICT) and off the event loop."""
from __future__ import annotations

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import (
    ChildNotFound,
    ChildNotValid,
    HL7apyException,
    InvalidName,
    MaxChildLimitReached,
    ValidationError,
)
from hl7apy.parser import parse_message

from connectors.hl7v2.errors import Hl7v2Error

# HL7 table 0357 codes for what hl7apy finds.
_SEQUENCE = (ChildNotFound, ChildNotValid, InvalidName, MaxChildLimitReached)  # 100: segment sequence
_REQUIRED = (ValidationError,)  # 101: required field or segment missing


class NotStandard(Hl7v2Error):
    """A message the strict check refuses: answered AE with the reason."""
    code = 102  # data type error, unless a more specific code applies


def check_strictly(text: str) -> None:
    """Raise NotStandard naming what breaks the standard; return if the message keeps it."""
    try:
        message = parse_message(text.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.STRICT,
                                find_groups=True)
        message.validate()
    except _SEQUENCE as exc:
        raise NotStandard(f"not a valid HL7 v2 structure: {exc}", code=100) from None
    except _REQUIRED as exc:
        raise NotStandard(f"HL7 v2 requires what is missing: {exc}", code=101) from None
    except (HL7apyException, ValueError) as exc:
        raise NotStandard(f"a value breaks its HL7 v2 data type: {exc}", code=102) from None
