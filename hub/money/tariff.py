"""Pricing NHS hospital activity from encounters with activity tariffs kept as data (profile
`ipc-tariff`, a ChargeItemDefinition per tariff year: each property group one activity, its
applicability a FHIRPath condition on the Encounter, its base price component the unit price).

An encounter is priced by the tariff whose effective period covers the day it began: an active
tariff before a draft one (the hub ships illustrative figures as drafts, so a deployment's
published tariff wins), then the latest version. Only the encounter's class and priority decide
its activity, so each (tariff, class, priority) is worked out once, however many encounters a
cohort has. Cancelled encounters and those entered in error cost nothing."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

from hub.fhir.validation.rules import fhirpath_rule
from hub.money.statement import CS, SD, money_value

TARIFF_PROFILE = f"{SD}/ipc-tariff"
ACTIVITY_SYSTEM = f"{CS}/ipc-nhs-activity"
NOT_PRICED = frozenset({"cancelled", "entered-in-error", "planned"})
# Where each priced activity happens (ipc-care-setting), for costs by setting.
SETTING = {"elective-admission": "hospital-inpatient", "non-elective-admission": "hospital-inpatient",
           "emergency-attendance": "emergency-department", "outpatient-attendance": "hospital-outpatient"}


@dataclass(frozen=True, slots=True)
class Price:
    activity: str
    amount: Decimal
    tariff: str  # canonical|version


@dataclass(frozen=True, slots=True)
class _Group:
    activity: str
    amount: Decimal
    conditions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Tariff:
    canonical: str
    active: bool
    version: str
    start: date
    end: date
    groups: tuple[_Group, ...]


def _day(text: str | None, default: date) -> date:
    try:
        return date.fromisoformat(text[:10]) if text else default
    except ValueError:
        return default


def is_tariff(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "ChargeItemDefinition" and \
        TARIFF_PROFILE in ((resource.get("meta") or {}).get("profile") or [])


class Tariffs:
    def __init__(self, definitions: list[dict[str, Any]]) -> None:
        found = []
        for definition in definitions:
            if not is_tariff(definition) or definition.get("status") not in ("active", "draft"):
                continue
            period = definition.get("effectivePeriod") or {}
            groups = []
            for group in definition.get("propertyGroup") or []:
                base = next((c for c in group.get("priceComponent") or [] if c.get("type") == "base"), None)
                if base is None:
                    continue
                activity = next((c.get("code") for c in (base.get("code") or {}).get("coding") or []
                                 if c.get("system") == ACTIVITY_SYSTEM), None)
                if activity is None:
                    continue
                groups.append(_Group(activity, money_value(base.get("amount")), tuple(
                    a["expression"] for a in group.get("applicability") or [] if a.get("expression"))))
            found.append(_Tariff(f"{definition.get('url')}|{definition.get('version', '')}",
                                 definition.get("status") == "active", definition.get("version", ""),
                                 _day(period.get("start"), date.min), _day(period.get("end"), date.max), tuple(groups)))
        # Preferred first: active before draft, later versions before earlier.
        self._tariffs = sorted(found, key=lambda t: (not t.active, _negated(t.version)))

    def __bool__(self) -> bool:
        return bool(self._tariffs)

    def price(self, class_code: str, priority: tuple[str, ...], day: date) -> Price | None:
        for tariff in self._tariffs:
            if tariff.start <= day <= tariff.end:
                for group in tariff.groups:
                    if all(_holds(expression, class_code, priority) for expression in group.conditions):
                        return Price(group.activity, group.amount, tariff.canonical)
                return None
        return None

    def price_encounter(self, encounter: dict[str, Any]) -> Price | None:
        if encounter.get("status") in NOT_PRICED:
            return None
        start = (encounter.get("period") or {}).get("start")
        if not start:
            return None
        priority = tuple(c.get("code", "") for c in (encounter.get("priority") or {}).get("coding") or [])
        return self.price((encounter.get("class") or {}).get("code", ""), priority, _day(start, date.min))


def _negated(version: str) -> tuple:
    return tuple(-ord(ch) for ch in version)


@lru_cache(maxsize=4096)
def _holds(expression: str, class_code: str, priority: tuple[str, ...]) -> bool:
    encounter: dict[str, Any] = {"resourceType": "Encounter", "class": {"code": class_code}}
    if priority:
        encounter["priority"] = {"coding": [{"code": code} for code in priority]}
    return fhirpath_rule(expression)(encounter) == [True]
