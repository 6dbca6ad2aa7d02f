"""Partners that already send FHIR R4: a transaction or collection Bundle in the payload.

Each resource is re-keyed to the hub's deterministic id for (source, type, the partner's id), so
the same partner record always lands on the same resource; references between the Bundle's
entries follow. Partner-local codes gain their SNOMED CT equivalents from the ConceptMap in
`conceptmaps/`. The recorder checks every resource as every write is checked
(hub.fhir.resources.check_structure) and dead-letters a message with one it refuses; checking here
too would only spend the time twice."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hub.fhir import jsontext
from hub.fhir.conceptmap import ConceptMap
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.ids import source_id

_HERE = Path(__file__).parent
LOCAL_CODES = ConceptMap(json.loads((_HERE / "conceptmaps" / "partner-local-to-snomed.json").read_text()))
# Elements whose CodeableConcepts are translated.
_CODED = ("code", "category")


def map_bundle(payload: bytes, source: str) -> dict[str, Any]:
    """Partner Bundle → the hub's transaction Bundle of PUTs under deterministic ids."""
    try:
        bundle = jsontext.loads(payload)
    except ValueError:
        raise FhirError("structure", "the payload is not JSON") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" \
            or bundle.get("type") not in ("transaction", "collection"):
        raise FhirError("structure", "the payload is not a transaction or collection Bundle")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    for index, entry in enumerate(entries):
        if _is_record_sharing_consent(entry["resource"]):
            raise FhirError("forbidden", f"Bundle.entry[{index}]: a partner's feed cannot record a person's "
                            "record-sharing consent (only the person, their proxy or an authorised coordinator "
                            "records it, through the API)", expression=f"Bundle.entry[{index}].resource", status=403)
    new_refs = _new_references(entries, source)
    out = []
    for index, entry in enumerate(entries):
        resource = _rewrite(entry["resource"], new_refs)
        res_type = resource.get("resourceType", "")
        resource["id"] = new_refs[_key(entry, index)].split("/", 1)[1]
        resource.pop("meta", None)
        for element in _CODED:
            resource[element] = _translate(resource.get(element))
            if resource[element] is None:
                del resource[element]
        out.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
                    "request": {"method": "PUT", "url": f"{res_type}/{resource['id']}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


_SHARING_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/ipc-consent"
_PLAN_CATEGORY = f"{CANONICAL_BASE}/CodeSystem/ipc-plan-category"


def _is_record_sharing_consent(resource: dict[str, Any]) -> bool:
    """An IPC record-sharing Consent (by profile or category): it decides who sees a person's
    record, so no partner's feed may carry one (hub/consent/authority.py)."""
    if resource.get("resourceType") != "Consent":
        return False
    profiles = (resource.get("meta") or {}).get("profile") or [] if isinstance(resource.get("meta"), dict) else []
    if any(isinstance(p, str) and p.split("|")[0] == _SHARING_PROFILE for p in profiles):
        return True
    return any(isinstance(c, dict) and c.get("system") == _PLAN_CATEGORY and c.get("code") == "record-sharing"
               for concept in resource.get("category") or [] if isinstance(concept, dict)
               for c in concept.get("coding") or [])


def _key(entry: dict[str, Any], index: int) -> str:
    resource = entry["resource"]
    return entry.get("fullUrl") or f"{resource.get('resourceType')}/{resource.get('id') or index}"


def _new_references(entries: list[dict[str, Any]], source: str) -> dict[str, str]:
    """Every way an entry can be referred to (fullUrl, Type/id) → Type/<hub id>."""
    refs: dict[str, str] = {}
    for index, entry in enumerate(entries):
        resource = entry["resource"]
        res_type = resource.get("resourceType")
        if not isinstance(res_type, str):
            raise FhirError("required", f"Bundle.entry[{index}].resource has no resourceType")
        local = resource.get("id") or entry.get("fullUrl")
        if not local:
            raise FhirError("required", f"Bundle.entry[{index}] needs a resource id or a fullUrl",
                            expression=f"Bundle.entry[{index}]")
        target = f"{res_type}/{source_id(source, res_type, str(local))}"
        refs[_key(entry, index)] = target
        if resource.get("id"):
            refs[f"{res_type}/{resource['id']}"] = target
    return refs


def _rewrite(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (refs.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, refs))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, refs) for v in value]
    return value


def _translate(value: Any) -> Any:
    if isinstance(value, list):
        return [_translate(v) for v in value]
    if isinstance(value, dict) and "coding" in value:
        return LOCAL_CODES.translate_concept(value)
    return value


def map_merge(payload: bytes, source: str) -> dict[str, Any]:
    """`person-merge`: {"survivor": "<partner Patient id>", "retired": "<partner Patient id>"} →
    a Parameters naming both by their hub ids (the recorder links and merges them)."""
    try:
        body = json.loads(payload)
        survivor, retired = str(body["survivor"]), str(body["retired"])
    except (ValueError, KeyError, TypeError):
        raise FhirError("structure", "a person-merge needs survivor and retired Patient ids") from None
    return {"resourceType": "Parameters", "parameter": [
        {"name": "survivor", "valueReference": {"reference": f"Patient/{source_id(source, 'Patient', survivor)}"}},
        {"name": "retired", "valueReference": {"reference": f"Patient/{source_id(source, 'Patient', retired)}"}},
    ]}


MAPPINGS = {"fhir-bundle": map_bundle, "person-merge": map_merge}
