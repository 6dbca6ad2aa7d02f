"""Terminology held in memory: the R4 core CodeSystems and ValueSets (compiled into
`hub/fhir/definitions/r4-terminology.json.gz`) and the IPC guide's own, answered without any
terminology server.

`Terminology` finds code systems and value sets by canonical URL and expands value sets once
(`valuesets.expand`); `operations` turns it into the answers of $lookup, $validate-code and
$expand. The core set is loaded on first use (about 20,000 concepts), so a process that never
asks a terminology question never pays for it: validation reads the expansions it needs from
the compiled structure data instead (hub.fhir.definitions).
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any

from hub.fhir.terminology.codesystems import CodeSystem
from hub.fhir.terminology.valuesets import Expansion, Member, NotExpandable, expand

__all__ = ["CodeSystem", "Expansion", "Member", "NotExpandable", "Terminology", "UnknownValueSet", "core"]


class UnknownValueSet(LookupError):
    """No value set with that canonical URL is known."""


class Terminology:
    """Code systems and value sets by canonical URL; `fallback` (loaded on first need) answers
    for URLs this one does not define, so the guide's terminology can lean on the core."""

    def __init__(self, resources_: Iterable[dict[str, Any]],
                 fallback: Callable[[], Terminology] | None = None) -> None:
        self._code_systems: dict[str, CodeSystem] = {}
        self._value_sets: dict[str, dict[str, Any]] = {}
        self._by_id: dict[tuple[str, str], dict[str, Any]] = {}
        for resource in resources_:
            kind, url = resource.get("resourceType"), resource.get("url")
            if kind == "CodeSystem" and url:
                self._code_systems.setdefault(url, CodeSystem(resource))
            elif kind == "ValueSet" and url:
                self._value_sets.setdefault(url, resource)
            if kind in ("CodeSystem", "ValueSet") and resource.get("id"):
                self._by_id.setdefault((kind, resource["id"]), resource)
        self._fallback = fallback
        self._expansions: dict[str, Expansion | NotExpandable] = {}

    def _next(self) -> Terminology | None:
        return self._fallback() if self._fallback is not None else None

    def code_system(self, url: str) -> CodeSystem | None:
        found = self._code_systems.get(url.split("|")[0])
        if found is None and (nxt := self._next()) is not None:
            return nxt.code_system(url)
        return found

    def value_set(self, url: str) -> dict[str, Any] | None:
        found = self._value_sets.get(url.split("|")[0])
        if found is None and (nxt := self._next()) is not None:
            return nxt.value_set(url)
        return found

    def by_id(self, kind: str, res_id: str) -> dict[str, Any] | None:
        return self._by_id.get((kind, res_id))

    def expansion(self, url: str, trail: tuple[str, ...] = ()) -> Expansion:
        """The members of the value set at `url` (worked out once); UnknownValueSet or
        NotExpandable otherwise."""
        url = url.split("|")[0]
        if url not in self._value_sets:
            nxt = self._next()
            if nxt is None:
                raise UnknownValueSet(f"ValueSet {url} is not known to the hub")
            return nxt.expansion(url, trail)
        known = self._expansions.get(url)
        if known is None:
            if url in trail:
                raise NotExpandable(f"ValueSet {url} includes itself")
            try:
                known = self.expand(self._value_sets[url], trail + (url,))
            except NotExpandable as exc:
                known = exc
            except UnknownValueSet as exc:
                known = NotExpandable(str(exc))
            self._expansions[url] = known
        if isinstance(known, NotExpandable):
            raise known
        return known

    def expand(self, value_set: dict[str, Any], trail: tuple[str, ...] = ()) -> Expansion:
        """The members of a ValueSet resource (one of these or one a client sent)."""
        return expand(value_set, self.code_system, lambda url, t: self.expansion(url, t or trail), trail)


@cache
def core() -> Terminology:
    """The R4 core code systems and value sets (HL7 FHIR, v2 tables and v3 code systems)."""
    data = (resources.files("hub.fhir.definitions") / "r4-terminology.json.gz").read_bytes()
    bundle = json.loads(gzip.decompress(data))
    return Terminology([*bundle["codeSystems"], *bundle["valueSets"]])
