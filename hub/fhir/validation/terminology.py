"""The guide's terminology: which codes each local ValueSet allows, expanded once from the
CodeSystems and ValueSets in `profiles/`. Codes from systems the hub cannot expand (SNOMED CT,
UK Core, HL7) are checked only where a ValueSet enumerates them."""
from __future__ import annotations

from typing import Any


class ValueSetIndex:
    """Every local ValueSet as a set of (system, code) pairs."""

    def __init__(self, code_systems: list[dict[str, Any]], value_sets: list[dict[str, Any]]) -> None:
        self._system_codes = {cs["url"]: set(_all_codes(cs.get("concept", []))) for cs in code_systems}
        self._members: dict[str, frozenset[tuple[str, str]]] = {}
        for vs in value_sets:
            self._members[vs["url"]] = frozenset(self._expand(vs))

    def _expand(self, vs: dict[str, Any]):
        for include in vs.get("compose", {}).get("include", []):
            system = include.get("system")
            if include.get("concept"):
                codes = [c["code"] for c in include["concept"]]
            elif system in self._system_codes:
                codes = self._system_codes[system]
            else:
                raise ValueError(f"ValueSet {vs['url']} includes all of {system}, which the guide does not define")
            for code in codes:
                yield system, code

    def knows(self, url: str) -> bool:
        return url in self._members

    def members(self, url: str) -> frozenset[tuple[str, str]]:
        return self._members[url]

    def codes(self, url: str) -> frozenset[str]:
        return frozenset(code for _, code in self._members[url])


def _all_codes(concepts: list[dict[str, Any]]):
    for concept in concepts:
        yield concept["code"]
        yield from _all_codes(concept.get("concept", []))
