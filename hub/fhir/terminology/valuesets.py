"""Expanding a ValueSet from its `compose` (include and exclude by listed codes, filters, whole
code systems and other value sets) or, without one, from the expansion it carries.

A value set that needs codes the hub does not hold (all of SNOMED CT, LOINC, a BCP-47 language
tag, a MIME type, a filter the hub does not implement) cannot be expanded: `NotExpandable` says
why, and a binding to it is not enforced (README: "What the hub checks")."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.fhir.terminology.codesystems import CodeSystem


class NotExpandable(Exception):
    """The value set's codes cannot be listed from what the hub holds."""


@dataclass(frozen=True, slots=True)
class Member:
    system: str
    code: str
    display: str | None = None
    version: str | None = None
    abstract: bool = False
    inactive: bool = False
    designation: tuple = ()


@dataclass(slots=True)
class Expansion:
    """The codes of one value set, in definition order, and an index of them."""

    members: list[Member] = field(default_factory=list)
    _pairs: set[tuple[str, str]] = field(default_factory=set)
    _codes: dict[str, list[Member]] = field(default_factory=dict)

    def add(self, member: Member) -> None:
        key = (member.system, member.code)
        if key not in self._pairs:
            self._pairs.add(key)
            self.members.append(member)
            self._codes.setdefault(member.code, []).append(member)

    def has(self, system: str | None, code: str) -> bool:
        """Whether the code is in the value set; with no system, in any of its systems."""
        if system is None:
            return code in self._codes
        return (system, code) in self._pairs

    def find(self, system: str | None, code: str) -> Member | None:
        for member in self._codes.get(code, ()):
            if system is None or member.system == system:
                return member
        return None

    def systems(self) -> set[str]:
        return {m.system for m in self.members}


Resolver = Callable[[str], Any]


def expand(value_set: dict[str, Any], code_system: Callable[[str], CodeSystem | None],
           expansion_of: Callable[[str, tuple[str, ...]], Expansion], trail: tuple[str, ...] = ()) -> Expansion:
    """The value set's members. `code_system(url)` finds a CodeSystem; `expansion_of(url, trail)`
    expands another value set (trail: the value sets being expanded, to refuse a cycle)."""
    compose = value_set.get("compose")
    out = Expansion()
    if compose is None:
        if "expansion" not in value_set:
            raise NotExpandable(f"ValueSet {value_set.get('url')} has neither compose nor expansion")
        for member in _flatten(value_set["expansion"].get("contains", [])):
            out.add(member)
        return out
    for include in compose.get("include", []):
        for member in _include(include, code_system, expansion_of, trail):
            out.add(member)
    excluded: set[tuple[str, str]] = set()
    for exclude in compose.get("exclude", []):
        excluded.update((m.system, m.code) for m in _include(exclude, code_system, expansion_of, trail))
    if excluded:
        kept = Expansion()
        for member in out.members:
            if (member.system, member.code) not in excluded:
                kept.add(member)
        return kept
    return out


def _flatten(contains: list[dict[str, Any]]):
    for item in contains:
        if item.get("code") and item.get("system"):
            yield Member(item["system"], item["code"], item.get("display"), item.get("version"),
                         bool(item.get("abstract")), bool(item.get("inactive")))
        yield from _flatten(item.get("contains", []))


def _include(include: dict[str, Any], code_system: Callable[[str], CodeSystem | None],
             expansion_of: Callable[[str, tuple[str, ...]], Expansion], trail: tuple[str, ...]) -> list[Member]:
    others = [expansion_of(url.split("|")[0], trail) for url in include.get("valueSet", [])]
    system = include.get("system")
    if system is None:
        if not others:
            raise NotExpandable("an include names neither a system nor a value set")
        first, rest = others[0], others[1:]
        return [m for m in first.members if all(o.has(m.system, m.code) for o in rest)]
    cs = code_system(system)
    if include.get("concept"):
        members = []
        for listed in include["concept"]:
            concept = cs.find(listed["code"]) if cs else None
            members.append(_member(system, listed["code"], cs, concept, listed.get("display"),
                                   listed.get("designation")))
    else:
        if cs is None:
            raise NotExpandable(f"the hub does not hold the code system {system}")
        if not cs.complete:
            raise NotExpandable(f"the hub holds only part of the code system {system} (content {cs.content})")
        codes = list(cs.concepts)
        for rule in include.get("filter", []):
            codes = _filter(cs, codes, rule)
        members = [_member(system, code, cs, cs.concepts[code]) for code in codes]
    return [m for m in members if all(o.has(m.system, m.code) for o in others)]


def _member(system: str, code: str, cs: CodeSystem | None, concept: dict[str, Any] | None,
            display: str | None = None, designation: list | None = None) -> Member:
    if concept is None:
        return Member(system, code, display, None, False, False, tuple(designation or ()))
    return Member(system, concept["code"], display or concept.get("display"), cs.version if cs else None,
                  cs.is_abstract(concept) if cs else False, cs.is_inactive(concept) if cs else False,
                  tuple(designation or concept.get("designation", ())))


def _filter(cs: CodeSystem, codes: list[str], rule: dict[str, Any]) -> list[str]:
    prop, op, value = rule.get("property"), rule.get("op"), rule.get("value", "")
    if prop == "concept" and op in ("is-a", "descendent-of", "is-not-a"):
        below = set(cs.descendants(value))
        if op == "is-a":
            below.add(value)
        if op == "is-not-a":
            below.add(value)
            return [c for c in codes if c not in below]
        return [c for c in codes if c in below]
    if prop in ("concept", "code") and op == "in":
        wanted = {v.strip() for v in value.split(",")}
        return [c for c in codes if c in wanted]
    if prop in ("concept", "code") and op == "=":
        return [c for c in codes if c == value]
    if prop in ("concept", "code") and op == "regex":
        pattern = re.compile(value)
        return [c for c in codes if pattern.fullmatch(c)]
    if op == "=" and prop == "parent":
        return [c for c in codes if value in cs.parents.get(c, ())]
    if op == "=" and prop == "child":
        return [c for c in codes if value in cs.children.get(c, ())]
    if op == "=":
        return [c for c in codes if value in _property_texts(cs.concepts[c], prop)]
    if op == "exists":
        present = value == "true"
        return [c for c in codes if bool(_property_texts(cs.concepts[c], prop)) == present]
    raise NotExpandable(f"the filter {prop} {op} {value} is not supported")


def _property_texts(concept: dict[str, Any], prop: str) -> list[str]:
    out = []
    for p in concept.get("property", []):
        if p.get("code") == prop:
            for key, v in p.items():
                if key.startswith("value"):
                    out.append(v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v))
    return out
