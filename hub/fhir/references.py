"""Walking a resource's references (every `reference` string, wherever the element sits): to
find them, and to point them elsewhere — a transaction's urn:uuid fullUrls at server ids, a
source's person at the shared record's person."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def references(node: Any) -> Iterator[str]:
    """Every Reference.reference in `node`, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def repoint(node: Any, moved: dict[str, str]) -> Any:
    """A copy of `node` with each reference found in `moved` replaced by its new target."""
    if isinstance(node, dict):
        return {key: (moved.get(value, value) if key == "reference" and isinstance(value, str)
                      else repoint(value, moved))
                for key, value in node.items()}
    if isinstance(node, list):
        return [repoint(item, moved) for item in node]
    return node
