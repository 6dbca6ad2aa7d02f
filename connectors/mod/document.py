"""The handover document: bytes in, a checked document (or every problem with it) out.

Checked in three layers, each problem named by the JSON pointer of the value at fault: the
bytes must be UTF-8 JSON (else 400), the document must follow the published schema, and the
identifiers the schema can only shape-check must carry valid check digits (NHS number:
Modulus 11; SNOMED CT concept id: partition and Verhoeff check digit), so a mistyped code is
refused as an unknown code rather than recorded (both 422). Pure: no I/O after the schema is
read once."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from hub.fhir.errors import FhirError, Issue
from hub.fhir.identifiers import is_valid_nhs_number

SCHEMA_PATH = Path(__file__).with_name("schema") / "handover-1.0.schema.json"
SCHEMA_ID = "https://ipc-hub.example.org/fhir/schema/mod-handover/1.0"
CONTENT_TYPE = "application/json"
KIND = "mod-handover"

# Verhoeff: multiplication in the dihedral group D5, and the position permutations (the
# permutation (1 5 7 6 2 8 3 0 9 4) raised to the power position mod 8).
_D5 = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
       (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
       (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
       (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))


def _permutations() -> tuple[tuple[int, ...], ...]:
    step = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)
    powers = [tuple(range(10))]
    for _ in range(7):
        powers.append(tuple(step[digit] for digit in powers[-1]))
    return tuple(powers)


_POSITION = _permutations()
# SNOMED CT partition identifiers (the two digits before the check digit) of a concept id.
_CONCEPT_PARTITIONS = frozenset({"00", "10"})


def verhoeff_ok(digits: str) -> bool:
    """Whether the last digit is the Verhoeff check digit of the others."""
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _D5[check][_POSITION[position % 8][int(digit)]]
    return check == 0


def is_snomed_concept_id(value: str) -> bool:
    """A SNOMED CT concept id: 6 to 18 digits, no leading zero, a concept partition, and a valid
    Verhoeff check digit (catches every single mistyped digit and most swaps)."""
    return (value.isdigit() and 6 <= len(value) <= 18 and value[0] != "0"
            and value[-3:-1] in _CONCEPT_PARTITIONS and verhoeff_ok(value))


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema(), format_checker=FormatChecker())


def parse(body: bytes) -> Any:
    """UTF-8 JSON → the document; 400 naming where the bytes stop being UTF-8 or JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FhirError("structure", f"the document is not UTF-8: byte {exc.start} cannot be decoded "
                        "(send UTF-8 only)", status=400) from None
    text = text.removeprefix("\ufeff")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FhirError("structure", f"the document is not JSON: {exc.msg} at line {exc.lineno} "
                        f"column {exc.colno}", status=400) from None


def problems(document: Any) -> list[Issue]:
    """Every schema violation and bad check digit, in document order; empty when valid."""
    found = [_schema_issue(error) for error in _validator().iter_errors(document)]
    if isinstance(document, dict):
        found += _check_digits(document)
    found += _control_characters(document)
    return sorted(found, key=lambda issue: issue.expression or "")


def _control_characters(value: Any, path: tuple = ()) -> list[Issue]:
    """Text the record can never hold (NUL, and the other C0 controls but tab, CR and LF:
    PostgreSQL refuses U+0000 in text), refused here, before the 202, rather than accepted and
    then dead-lettered."""
    if isinstance(value, str):
        if any(ord(c) < 32 and c not in "\t\r\n" for c in value):
            where = pointer(path) or "/"
            return [Issue("value", f"{where}: control characters (such as NUL) are not allowed in text", where)]
        return []
    if isinstance(value, dict):
        return [i for k, v in value.items() for i in _control_characters(v, (*path, k))]
    if isinstance(value, list):
        return [i for n, v in enumerate(value) for i in _control_characters(v, (*path, n))]
    return []


def check(body: bytes) -> dict[str, Any]:
    """The document, when the bytes are a valid handover; else the FhirError listing every problem."""
    document = parse(body)
    issues = problems(document)
    if issues:
        raise FhirError(issues[0].code, issues[0].diagnostics, status=422, issues=issues)
    return document


def envelope_meta(document: dict[str, Any], source: str) -> dict[str, str]:
    """The Envelope fields besides the payload. Keyed by NHS number when known (as the GP feeds
    are, so a person's handover and GP registration are recorded in order), else service number."""
    person = document["person"]
    key = f"nhs:{person['nhsNumber']}" if person.get("nhsNumber") else f"mod:{person['serviceNumber']}"
    return {"source": source, "kind": KIND, "person_key": key, "content_type": CONTENT_TYPE,
            "correlation_id": document["handoverId"]}


def pointer(path: Any) -> str:
    """RFC 6901 JSON pointer of a path of keys and indexes ('' is the whole document)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


_CODE_BY_KEYWORD = {"required": "required", "type": "structure", "additionalProperties": "structure",
                    "enum": "code-invalid", "const": "value"}


def _schema_issue(error: ValidationError) -> Issue:
    path = list(error.absolute_path)
    message = error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            path.append(missing[0])
            message = f"'{missing[0]}' is required"
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        extra = [name for name in error.instance if name not in (error.schema.get("properties") or {})]
        if extra:
            path.append(extra[0])
            message = f"'{extra[0]}' is not a field of this schema"
    elif error.validator == "oneOf":
        message = "give exactly one of 'data' (base64) and 'url'"
    elif len(message) > 300:
        message = message[:300] + "…"
    where = pointer(path)
    return Issue(_CODE_BY_KEYWORD.get(str(error.validator), "value"), f"{where or '/'}: {message}", where or "/")


def _check_digits(document: dict[str, Any]) -> list[Issue]:
    found = []
    person = document.get("person")
    nhs = person.get("nhsNumber") if isinstance(person, dict) else None
    if isinstance(nhs, str) and nhs.isdigit() and len(nhs) == 10 and not is_valid_nhs_number(nhs):
        found.append(Issue("value", f"/person/nhsNumber: {nhs} fails the NHS number Modulus 11 check",
                           "/person/nhsNumber"))
    conditions = document.get("conditions")
    for index, condition in enumerate(conditions if isinstance(conditions, list) else []):
        code = condition.get("snomedCode") if isinstance(condition, dict) else None
        if isinstance(code, str) and code.isdigit() and code[0] != "0" and 6 <= len(code) <= 18 \
                and not is_snomed_concept_id(code):
            where = f"/conditions/{index}/snomedCode"
            found.append(Issue("code-invalid", f"{where}: unknown code {code}: not a SNOMED CT concept id "
                               "(check digit or partition wrong)", where))
    return found
