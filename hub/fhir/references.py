"""References in FHIR resources: reading a Reference.reference string (`parse_reference`),
finding every reference in a resource (`references`, and `literal_references` with where each
sits), and pointing them elsewhere (`repoint`: a transaction's urn:uuid fullUrls at server ids,
a source's person at the shared record's person)."""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_RELATIVE_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$")
_ABSOLUTE_REF = re.compile(
    r"^[a-z][a-z0-9+.\-]*://.+/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None] | None:
    """(target_type, target_id, url) for a Reference.reference string; None for a contained
    reference ("#x"), which names nothing outside the resource.

    "Patient/1" and "Patient/1/_history/2" → (Patient, 1, None); an absolute URL ending in the
    FHIR REST pattern → (Patient, 1, url); anything else (urn:uuid:..., a conditional
    reference the repository left unresolved) → (None, None, ref as written)."""
    if not ref or ref[0] == "#":
        return None
    m = _RELATIVE_REF.match(ref)
    if m:
        return m.group(1), m.group(2), None
    if "://" in ref:
        m = _ABSOLUTE_REF.match(ref)
        if m:
            return m.group(1), m.group(2), ref
    return None, None, ref


@dataclass(frozen=True, slots=True)
class LocalReference:
    """A literal reference to a resource on this server: `Patient/1` or `Patient/1/_history/2`."""

    res_type: str
    res_id: str
    version: str | None  # the `_history` version, when the reference names one
    text: str  # as written
    element: str  # FHIRPath of the Reference element, e.g. Goal.addresses[0]


def local_reference(text: str, element: str = "") -> LocalReference | None:
    """`text` as a literal local reference, or None (contained `#id`, absolute URL, urn:uuid,
    a conditional reference, anything that is not `Type/id[/_history/vid]`)."""
    m = _RELATIVE_REF.match(text)
    if m is None:
        return None
    return LocalReference(m.group(1), m.group(2), m.group(3), text, element)


def literal_references(resource: dict[str, Any]) -> list[LocalReference]:
    """Every literal local reference a resource makes, with the element that holds it, in the
    resource and its contained resources. A Bundle's entries are not walked: they are resolved
    inside the Bundle (its fullUrls), not against the server."""
    if resource.get("resourceType") == "Bundle":
        return []
    found: list[LocalReference] = []
    _walk(resource, resource.get("resourceType") or "Resource", found)
    return found


def _walk(node: Any, path: str, found: list[LocalReference]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            local = local_reference(ref, path)
            if local is not None:
                found.append(local)
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                _walk(value, f"{path}.{key}", found)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, (dict, list)):
                _walk(item, f"{path}[{index}]", found)


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
