"""One CodeSystem indexed for lookups: each concept by code, with its parents and children (from
the nesting of `concept` and from `parent`/`child` properties, as the v3 code systems say it)."""
from __future__ import annotations

from typing import Any

# Properties every code system has (CodeSystem "defined properties" in R4): kept out of `property`
# because they are answered from the concept itself.
_HIERARCHY = {"parent", "child", "subsumedBy"}


class CodeSystem:
    """A CodeSystem resource, indexed once. `complete` says whether every code of the system is
    in it (content = complete), so that a code it lacks is known not to exist."""

    __slots__ = ("resource", "url", "version", "name", "content", "case_sensitive", "concepts",
                 "parents", "children", "_folded")

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.url: str = resource["url"]
        self.version: str | None = resource.get("version")
        self.name: str = resource.get("title") or resource.get("name") or self.url
        self.content: str = resource.get("content", "complete")
        self.case_sensitive: bool = resource.get("caseSensitive", True) is not False
        self.concepts: dict[str, dict[str, Any]] = {}
        self.parents: dict[str, list[str]] = {}
        self.children: dict[str, list[str]] = {}
        self._index(resource.get("concept", []), None)
        for code, concept in self.concepts.items():
            for prop in concept.get("property", []):
                other = prop.get("valueCode")
                if prop.get("code") in ("parent", "subsumedBy") and other:
                    self._link(other, code)
                elif prop.get("code") == "child" and other:
                    self._link(code, other)
        self._folded = None if self.case_sensitive else {c.lower(): c for c in self.concepts}

    @property
    def complete(self) -> bool:
        return self.content == "complete"

    def _index(self, concepts: list[dict[str, Any]], parent: str | None) -> None:
        for concept in concepts:
            code = concept.get("code")
            if not isinstance(code, str):
                continue
            self.concepts.setdefault(code, {k: v for k, v in concept.items() if k != "concept"})
            if parent is not None:
                self._link(parent, code)
            self._index(concept.get("concept", []), code)

    def _link(self, parent: str, child: str) -> None:
        if child not in self.children.setdefault(parent, []):
            self.children[parent].append(child)
        if parent not in self.parents.setdefault(child, []):
            self.parents[child].append(parent)

    def find(self, code: str) -> dict[str, Any] | None:
        concept = self.concepts.get(code)
        if concept is None and self._folded is not None:
            actual = self._folded.get(code.lower())
            concept = self.concepts.get(actual) if actual else None
        return concept

    def descendants(self, code: str) -> list[str]:
        """Every code below `code` (not itself), nearest first."""
        out: list[str] = []
        seen = {code}
        pending = list(self.children.get(code, ()))
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.add(current)
            out.append(current)
            pending.extend(self.children.get(current, ()))
        return out

    def is_abstract(self, concept: dict[str, Any]) -> bool:
        return any(p.get("code") in ("notSelectable", "abstract") and p.get("valueBoolean") is True
                   for p in concept.get("property", []))

    def is_inactive(self, concept: dict[str, Any]) -> bool:
        return any((p.get("code") == "status" and p.get("valueCode") in ("retired", "deprecated", "inactive"))
                   or (p.get("code") == "inactive" and p.get("valueBoolean") is True)
                   for p in concept.get("property", []))

    def property_values(self, concept: dict[str, Any]) -> list[dict[str, Any]]:
        """The concept's own properties, parents and children as $lookup `property` parts."""
        out = [p for p in concept.get("property", []) if p.get("code") not in _HIERARCHY]
        code = concept["code"]
        out += [{"code": "parent", "valueCode": p} for p in self.parents.get(code, ())]
        out += [{"code": "child", "valueCode": c} for c in self.children.get(code, ())]
        return out
