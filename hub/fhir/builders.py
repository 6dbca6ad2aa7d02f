"""The small pieces every mapping builds the same way: a Coding, a CodeableConcept, a
transaction entry that PUTs a resource under its own (deterministic) id, and the transaction
Bundle. Here so that mappings share them without importing one another (STYLE: mappings import
only hub.fhir)."""
from __future__ import annotations

from typing import Any


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [coding(system, code, display)]}


def put_entry(resource: dict[str, Any]) -> dict[str, Any]:
    """A transaction entry writing the resource under its own id: a replay lands on the same
    resource and changes nothing."""
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
