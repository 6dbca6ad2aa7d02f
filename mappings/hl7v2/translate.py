"""Code translation through the FHIR ConceptMaps kept beside this module (data, not code), so a
terminology change is a reviewed data change. Deliberately tiny: exact, case-insensitive source
codes; the first target wins."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_FOLDER = Path(__file__).parent / "conceptmaps"


@cache
def concept_map(name: str) -> dict[str, dict[str, str]]:
    """Source code (upper case) → target coding {system, code, display} for one ConceptMap file."""
    data = json.loads((_FOLDER / f"{name}.json").read_text(encoding="utf-8"))
    table: dict[str, dict[str, str]] = {}
    for group in data["group"]:
        for element in group["element"]:
            target = element["target"][0]
            table.setdefault(element["code"].upper(), {
                "system": group["target"], "code": target["code"], "display": target["display"]})
    return table


def translate(name: str, code: str) -> dict[str, str] | None:
    """The target coding for `code`, or None when the map has no entry (callers keep the
    source code as sent rather than guessing)."""
    if not code:
        return None
    found = concept_map(name).get(code.strip().upper())
    return dict(found) if found else None
