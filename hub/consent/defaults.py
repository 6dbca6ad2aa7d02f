"""What each partner class sees of a person the hub holds no consent decision for: the
`HUB_CONSENT_DEFAULTS` setting.

Two spellings, the same meaning:

* compact: `nhs=*;local-authority=demographics,care-support-plan;charity=` (class=parts, `;`
  between classes, `*` for every part, nothing after `=` for no part);
* JSON: `{"nhs": "*", "local-authority": ["demographics", "care-support-plan"]}`.

A class the setting does not list sees nothing: access is opened on purpose, never by leaving
a class out. Unknown classes or parts are refused at start-up rather than ignored, so a typo
cannot silently close (or open) a record.

The built-in default, `nhs=*;local-authority=demographics`: NHS direct care sees the whole
record of a person who has made no decision (direct care rests on implied consent); a local
authority, a statutory partner in the person's care, may find and identify them (who they are,
nothing more); defence, charities and education see nothing until the person consents."""
from __future__ import annotations

import json

from hub.consent.grants import ROLES
from hub.consent.parts import PARTS

BUILT_IN = "nhs=*;local-authority=demographics"
# Partner classes a client can belong to (lead-charity is a role in a Consent, not a class).
CLASSES = tuple(r for r in ROLES if r != "lead-charity")


class ConsentConfigError(ValueError):
    """HUB_CONSENT_DEFAULTS says something the hub cannot apply exactly."""


def parse_defaults(text: str | None) -> dict[str, tuple[str, ...]]:
    """Partner class → the parts it sees without a consent decision (every class present)."""
    text = (text if text is not None else BUILT_IN).strip()
    raw = _parse_json(text) if text.startswith("{") else _parse_compact(text)
    table = {cls: () for cls in CLASSES}
    for cls, parts in raw.items():
        if cls not in CLASSES:
            raise ConsentConfigError(f"HUB_CONSENT_DEFAULTS: unknown partner class {cls!r} "
                                     f"(known: {', '.join(CLASSES)})")
        table[cls] = _expand(cls, parts)
    return table


def _parse_compact(text: str) -> dict[str, list[str] | str]:
    raw: dict[str, list[str] | str] = {}
    for item in filter(None, (i.strip() for i in text.split(";"))):
        cls, sep, parts = item.partition("=")
        if not sep:
            raise ConsentConfigError(f"HUB_CONSENT_DEFAULTS: {item!r} is not class=parts")
        raw[cls.strip()] = parts.strip() if parts.strip() == "*" else \
            [p.strip() for p in parts.split(",") if p.strip()]
    return raw


def _parse_json(text: str) -> dict[str, list[str] | str]:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConsentConfigError(f"HUB_CONSENT_DEFAULTS is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConsentConfigError("HUB_CONSENT_DEFAULTS JSON must be an object of class: parts")
    return raw


def _expand(cls: str, parts: list[str] | str) -> tuple[str, ...]:
    if parts == "*":
        return PARTS
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise ConsentConfigError(f"HUB_CONSENT_DEFAULTS: parts for {cls!r} must be \"*\" or a list")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConsentConfigError(f"HUB_CONSENT_DEFAULTS: unknown record part(s) {unknown} for {cls!r} "
                                 f"(known: {', '.join(PARTS)})")
    return tuple(dict.fromkeys(parts))
