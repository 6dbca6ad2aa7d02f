"""HL7 v2 data types to FHIR data types, following the HL7 v2-to-FHIR data type maps (XPN →
HumanName, XAD → Address, XTN → ContactPoint, CX → Identifier, DTM → dateTime, CWE → Coding).
Each function takes one repetition in the uniform shape of `er7` and returns a dict, or None
when the repetition carries nothing worth keeping."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from mappings.hl7v2.er7 import Repetition, component

# Identifiers whose assigning authority is not an OID get a system under this base, one per
# authority, so the same MRN from two hospitals never collides.
LOCAL_ID_BASE = "https://ipc-hub.example.org/fhir/Id/hl7v2/"
# A v2 time without an offset is local time where the sender is: for English feeds, London.
SENDER_ZONE = ZoneInfo("Europe/London")

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")
_OID = re.compile(r"^[0-2](\.\d+)+$")

NAME_USE = {"A": "usual", "B": "old", "BAD": "old", "C": "official", "D": "usual", "L": "official",
            "M": "maiden", "N": "nickname", "NB": "official", "NOUSE": "old", "P": "usual",
            "R": "official", "S": "anonymous", "T": "temp", "TEMP": "temp", "U": "usual"}
ADDRESS_USE = {"H": ("home", None), "B": ("work", None), "O": ("work", None), "C": ("temp", None),
               "BA": ("old", None), "BI": ("billing", None), "TMP": ("temp", None),
               "M": (None, "postal"), "SH": (None, "postal")}
TELECOM_USE = {"PRN": "home", "ORN": "home", "VHN": "home", "WPN": "work", "PRS": "mobile",
               "EMR": "temp", "ASN": "temp", "BPN": "work", "NET": None}
TELECOM_SYSTEM = {"PH": "phone", "CP": "phone", "FX": "fax", "BP": "pager", "INTERNET": "email",
                  "X.400": "email", "MD": "other", "TDD": "other", "TTY": "other", "SAT": "other"}


def parse_dtm(value: str) -> tuple[str, datetime | None] | None:
    """A DTM as (FHIR date or dateTime, aware datetime when it has a time); None if unreadable."""
    m = _DTM.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    if hour is None:
        return "-".join(p for p in (year, month, day) if p), None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        zone: Any = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    else:
        zone = SENDER_ZONE
    micro = int((fraction or ".0")[1:].ljust(6, "0")) if fraction else 0
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute or 0),
                          int(second or 0), micro, tzinfo=zone)
    except ValueError:
        return None
    return moment.isoformat(), moment


def to_date(value: str) -> str | None:
    """The calendar date a DTM falls on, as the sender wrote it (no time-zone shifting)."""
    parsed = parse_dtm(value)
    if parsed is None:
        return None
    text, moment = parsed
    return moment.date().isoformat() if moment else text


def to_datetime(value: str) -> str | None:
    parsed = parse_dtm(value)
    return parsed[0] if parsed else None


def period(start: str, end: str) -> dict[str, str] | None:
    out = {k: v for k, v in (("start", to_datetime_or_date(start)), ("end", to_datetime_or_date(end))) if v}
    return out or None


def to_datetime_or_date(value: str) -> str | None:
    return to_datetime(value) if value else None


def human_name(rep: Repetition) -> dict[str, Any] | None:
    """XPN → HumanName: family from FN.1, given from XPN.2, .3 and .15 (called-by), prefix .5,
    suffixes .4, .6 (degree) and .14 (professional suffix), use from .7, period from .10 or .12/.13."""
    family = component(rep, 1, 1)
    given = [g for g in (component(rep, 2), component(rep, 3), component(rep, 15)) if g]
    suffix = [s for s in (component(rep, 4), component(rep, 6), component(rep, 14)) if s]
    prefix = component(rep, 5)
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = suffix
    if not name:
        return None
    if use := NAME_USE.get(component(rep, 7).upper()):
        name["use"] = use
    if p := period(component(rep, 10, 1) or component(rep, 12), component(rep, 10, 2) or component(rep, 13)):
        name["period"] = p
    return name


def address(rep: Repetition) -> dict[str, Any] | None:
    """XAD → Address: lines from the street address subcomponents, XAD.2 and XAD.19; district
    from XAD.9; use or type from XAD.7; period from XAD.12 or XAD.13/.14."""
    lines = [s for s in rep[0] if s] if rep else []
    lines += [v for v in (component(rep, 2), component(rep, 19)) if v]
    out: dict[str, Any] = {}
    if lines:
        out["line"] = lines
    for key, comp in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
        if v := component(rep, comp):
            out[key] = v
    district = component(rep, 9, 2) or component(rep, 9, 1)
    if district:
        out["district"] = district
    if not out:
        return None
    use, kind = ADDRESS_USE.get(component(rep, 7).upper(), (None, None))
    if use:
        out["use"] = use
    if kind:
        out["type"] = kind
    if p := period(component(rep, 12, 1) or component(rep, 13), component(rep, 12, 2) or component(rep, 14)):
        out["period"] = p
    return out


def contact_point(rep: Repetition, default_use: str | None) -> dict[str, Any] | None:
    """XTN → ContactPoint. The value is the e-mail (XTN.4) for Internet addresses, else the
    unformatted number (XTN.12), else the composed number (.5 .6 .7 .8), else XTN.1; the system
    comes from the equipment type (XTN.3), phone (or email) when there is none."""
    equipment = component(rep, 3).upper()
    system = TELECOM_SYSTEM.get(equipment)
    if system == "email":
        value = component(rep, 4) or component(rep, 1)
    else:
        composed = " ".join(v for v in (component(rep, 5), component(rep, 6), component(rep, 7)) if v)
        if composed and component(rep, 8):
            composed += f" ext. {component(rep, 8)}"
        value = component(rep, 12) or composed or component(rep, 1)
    if not value:
        return None
    # FHIR requires a system with a value (cpt-2). With no equipment type (XTN.3), the HL7
    # v2-to-FHIR guide reads the field as a telephone number, or an e-mail address when it is one.
    out: dict[str, Any] = {"value": value, "system": system or ("email" if "@" in value else "phone")}
    code = component(rep, 2).upper()
    use = TELECOM_USE.get(code, default_use) if code else default_use
    if use:
        out["use"] = use
    if p := period(component(rep, 13), component(rep, 14)):
        out["period"] = p
    rank = component(rep, 18)
    if rank.isdigit() and int(rank) > 0:
        out["rank"] = int(rank)
    return out


def identifier_system(rep: Repetition, authority_comp: int = 4) -> str | None:
    """A system for a CX from its assigning authority (CX.4), else the facility (CX.6): an OID
    becomes urn:oid:, a local namespace a URL under LOCAL_ID_BASE."""
    for comp in (authority_comp, 6):
        namespace, universal = component(rep, comp, 1), component(rep, comp, 2)
        if universal and _OID.match(universal):
            return f"urn:oid:{universal}"
        if universal:
            return LOCAL_ID_BASE + _slug(universal)
        if namespace:
            return LOCAL_ID_BASE + _slug(namespace)
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.\-]+", "-", text.strip()).strip("-") or "unknown"


def identifier(rep: Repetition) -> dict[str, Any] | None:
    """CX → Identifier with type from CX.5 (table 0203) and period from CX.7/CX.8."""
    value = component(rep, 1)
    if not value:
        return None
    out: dict[str, Any] = {"value": value}
    if system := identifier_system(rep):
        out["system"] = system
    if type_code := component(rep, 5):
        out["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": type_code}]}
    if p := period(component(rep, 7), component(rep, 8)):
        out["period"] = p
    return out


def coding(rep: Repetition, system_comp: int = 3) -> dict[str, str] | None:
    """CWE/CE → Coding (code, display, and a system only when the sender named a known table)."""
    code, display = component(rep, 1), component(rep, 2)
    if not code:
        return None
    out = {"code": code}
    if display:
        out["display"] = display
    table = component(rep, system_comp)
    if table.upper().startswith("HL7") and table[3:].isdigit():
        out["system"] = f"http://terminology.hl7.org/CodeSystem/v2-{table[3:]}"
    return out
