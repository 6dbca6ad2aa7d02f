"""HL7 v2 ADT → FHIR R4: `map_message(bytes) -> dict` (a transaction Bundle), pure.

`MAPPINGS` registers the two kinds the MLLP connector publishes with the pipeline's mapper
(HUB_MAPPINGS names this package by default): `hl7v2-adt` → the message's transaction Bundle,
`hl7v2-merge` (the second envelope of an A40) → the merge Parameters the recorder applies."""
from typing import Any

from hub.fhir.errors import FhirError
from mappings.hl7v2.adt import MappingError, map_message, resource_id, source_system
from mappings.hl7v2.er7 import Er7Error, Message, Segment, parse


def map_adt(payload: bytes, source: str) -> dict[str, Any]:
    """`hl7v2-adt`: the envelope's message → its transaction Bundle, ids keyed by `source`."""
    try:
        return map_message(payload, source=source)
    except (Er7Error, MappingError) as exc:
        raise FhirError("structure", f"HL7 v2: {exc}") from None


def map_merge(payload: bytes, source: str) -> dict[str, Any]:
    """`hl7v2-merge`: an A40 → {survivor, retired} Patient references, the same ids its
    `hl7v2-adt` Bundle wrote (the survivor's PID, the retired MRG-1)."""
    bundle = map_adt(payload, source)
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    retired = [p for p in patients if any(link.get("type") == "replaced-by" for link in p.get("link") or [])]
    if not retired:
        raise FhirError("required", "HL7 v2: a merge needs an A40 with an MRG segment")
    survivor = patients[0]
    return {"resourceType": "Parameters", "parameter": [
        {"name": "survivor", "valueReference": {"reference": f"Patient/{survivor['id']}"}},
        {"name": "retired", "valueReference": {"reference": f"Patient/{retired[0]['id']}"}},
    ]}


MAPPINGS = {"hl7v2-adt": map_adt, "hl7v2-merge": map_merge}

__all__ = ["MAPPINGS", "Er7Error", "MappingError", "Message", "Segment", "map_adt", "map_merge", "map_message",
           "parse", "resource_id", "source_system"]
