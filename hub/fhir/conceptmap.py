"""ConceptMap $translate, the small part the mappings need: code translation tables stay FHIR
ConceptMaps (data an informatician can read and edit), and code asks them for a target."""
from __future__ import annotations

from dataclasses import dataclass
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

    def __init__(self, resource: dict[str, Any]) -> None:
        if resource.get("resourceType") != "ConceptMap":
            raise ValueError("not a ConceptMap")
        self.url = resource.get("url", "")
        self._targets: dict[tuple[str, str], list[Coding]] = {}
        for group in resource.get("group") or []:
            source, target = group.get("source", ""), group.get("target", "")
            for element in group.get("element") or []:
                found = [Coding(target, t["code"], t.get("display")) for t in element.get("target") or []
                         if t.get("equivalence", "equivalent") in _USABLE and t.get("code")]
                self._targets.setdefault((source, element["code"]), []).extend(found)

    @property
    def source_systems(self) -> set[str]:
        return {system for system, _ in self._targets}

    def translate(self, system: str, code: str) -> list[Coding]:
        """The mapped codings for `system|code`, best first; empty when the map has none."""
        return list(self._targets.get((system, code), ()))

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
