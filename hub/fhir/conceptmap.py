"""ConceptMap $translate, the small part the mappings need: code translation tables stay FHIR
ConceptMaps (data an informatician can read and edit), and code asks them for a target."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

_USABLE = {"equivalent", "equal", "wider", "subsumes", "relatedto", "inexact", "specializes"}


@dataclass(slots=True, frozen=True)
class Coding:
    system: str
    code: str
    display: str | None = None

    def to_fhir(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


class ConceptMap:
    """An R4 ConceptMap indexed for lookups: (source system, code) → target codings."""

    def __init__(self, resource: dict[str, Any], *, ignore_case: bool = False) -> None:
        """`ignore_case`: source codes match whatever their case (HL7 v2 senders vary it)."""
        if resource.get("resourceType") != "ConceptMap":
            raise ValueError("not a ConceptMap")
        self.url = resource.get("url", "")
        self._ignore_case = ignore_case
        self._targets: dict[tuple[str, str], list[Coding]] = {}
        self._by_code: dict[str, Coding] = {}
        for group in resource.get("group") or []:
            source, target = group.get("source", ""), group.get("target", "")
            for element in group.get("element") or []:
                found = [Coding(target, t["code"], t.get("display")) for t in element.get("target") or []
                         if t.get("equivalence", "equivalent") in _USABLE and t.get("code")]
                code = self._key(element["code"])
                self._targets.setdefault((source, code), []).extend(found)
                if found:
                    self._by_code.setdefault(code, found[0])

    def _key(self, code: str) -> str:
        return code.strip().upper() if self._ignore_case else code

    @property
    def source_systems(self) -> set[str]:
        return {system for system, _ in self._targets}

    def translate(self, system: str, code: str) -> list[Coding]:
        """The mapped codings for `system|code`, best first; empty when the map has none."""
        return list(self._targets.get((system, self._key(code)), ()))

    def first(self, code: str) -> Coding | None:
        """The first target for `code` from whichever source system the map covers: for a
        source that sends bare codes of a known table (an HL7 v2 field)."""
        return self._by_code.get(self._key(code)) if code else None

    def translate_concept(self, concept: dict[str, Any]) -> dict[str, Any]:
        """A CodeableConcept with each mappable coding's targets added beside it (the original
        coding is kept: the source's own code is part of what it said)."""
        codings = list(concept.get("coding") or [])
        have = {(c.get("system"), c.get("code")) for c in codings}
        for coding in list(codings):
            for target in self.translate(coding.get("system", ""), coding.get("code", "")):
                if (target.system, target.code) not in have:
                    codings.append(target.to_fhir())
                    have.add((target.system, target.code))
        return {**concept, "coding": codings} if codings else concept


@cache
def load(path: Path, *, ignore_case: bool = False) -> ConceptMap:
    """The ConceptMap in a JSON file, read once per process."""
    return ConceptMap(json.loads(Path(path).read_text(encoding="utf-8")), ignore_case=ignore_case)
