"""Deterministic resource ids for records that come from a source system.

The same (source system, resource type, source identifier) always gives the same id, so the
pipeline can replay any message and land on the same resources instead of new copies."""
from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("3f5c8a4e-6b0d-5d8e-9a51-1c2b7e0f4a90")


def source_id(source: str, res_type: str, local_id: str) -> str:
    """The hub's id for `res_type` `local_id` as known by `source` (a UUID, valid as a FHIR id)."""
    return str(uuid.uuid5(_NAMESPACE, f"{source}\x1f{res_type}\x1f{local_id}"))


def derived_id(*parts: str) -> str:
    """An id derived from other ids (a Provenance from the versions it covers, a review Task
    from the two people it asks about): the same parts always give the same id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))
