"""What a re-import of the council's children's extract may change, and what it may not.

The extract restates the council's view of each EHC needs assessment every time it is sent, and
its Tasks land under the same deterministic ids. Meanwhile a coordinator works on those Tasks
through the API or the workspace: takes one on (`owner`), moves it on (`status`, with its
`statusReason` and `businessStatus`) and writes `note`s. A re-import must never undo that. So for a
Task the extract wrote before, the **council owns** what its dates say — the step, its
description, its statutory period (`restriction`), the day it was done (`executionPeriod`), the
decision (`output`), ids and links — and **people own** `status`, `statusReason`,
`businessStatus`, `owner` and `note`:

- the council's status applies only while the stored status is still the council's starting
  point (`requested`) or already agrees with it;
- otherwise the status a person set is kept, and where the council now says something else — the
  step done (a date given) while the Task is not completed, or still open while it is completed or
  cancelled here — the Task gets a note saying so, once (the same note is never added twice, so a
  replay changes nothing). The children's worklist shows such Tasks as "differs from the council";
- `owner` and `note` are never replaced.

The EHC plan itself is shared the same way: the council owns its status, period, author, title,
identifiers, its own need (`addresses`), its placement activity and its review dates; what others
added — the health part's activities and needs from the trust, Goals, the young person's views
(`supportingInfo`), notes, other extensions — stays when the council re-sends the plan.

The continuing-care Flag the extract writes keeps a status a person set (e.g. `inactive` when
continuing care ended). Everything here is pure; the recorder applies it to each such resource
against its current version."""
from __future__ import annotations

import json
from typing import Any

from hub.fhir.identifiers import CANONICAL_BASE

EHC_REQUEST = f"{CANONICAL_BASE}/Id/ehc-request"
EHC_PLAN_ID = f"{CANONICAL_BASE}/Id/ehc-plan"
SD = f"{CANONICAL_BASE}/StructureDefinition/"
# What the council's EHC plan says that is the council's to say (hub/plans docstring above).
PLAN_FIELDS = ("identifier", "status", "intent", "category", "title", "subject", "period", "author")
PLAN_EXTENSIONS = frozenset({SD + "next-review-date", SD + "last-review"})
PLACEMENT = "placement"
FLAG_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/ipc-flag"
CONTINUING_CARE_FLAG = "childrens-continuing-care"
PEOPLE_OWN = ("status", "statusReason", "businessStatus", "owner", "note")
CONFLICT_AUTHOR = "IPC Hub: the council's children's extract"
_CLOSED = frozenset({"completed", "cancelled", "failed", "rejected", "entered-in-error"})


def is_council_owned(resource: dict[str, Any]) -> bool:
    """An EHC timeline Task, EHC plan or continuing-care Flag as the children's extract writes them."""
    if resource.get("resourceType") == "Task":
        return (resource.get("groupIdentifier") or {}).get("system") == EHC_REQUEST
    if resource.get("resourceType") == "CarePlan":
        return any(i.get("system") == EHC_PLAN_ID for i in resource.get("identifier") or ())
    if resource.get("resourceType") == "Flag":
        return any(c.get("system") == FLAG_SYSTEM and c.get("code") == CONTINUING_CARE_FLAG
                   for c in (resource.get("code") or {}).get("coding") or ())
    return False


def merge(incoming: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    """What to store for the extract's `incoming` resource over the `existing` current version
    (None: not stored yet, or deleted). Returns `existing` itself when nothing would change."""
    if existing is None:
        return incoming
    if incoming["resourceType"] == "Flag":
        merged = {**incoming, "status": existing.get("status", incoming["status"])}
    elif incoming["resourceType"] == "CarePlan":
        merged = _plan(incoming, existing)
    else:
        merged = _task(incoming, existing)
    return existing if _body(merged) == _body(existing) else merged


def _task(incoming: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in incoming.items() if k not in PEOPLE_OWN}
    council, stored = incoming["status"], existing.get("status", "requested")
    if stored in ("requested", council):
        for field in ("status", "statusReason"):
            if field in incoming:
                merged[field] = incoming[field]
    else:
        for field in ("status", "statusReason"):
            if field in existing:
                merged[field] = existing[field]
    for field in ("businessStatus",):
        if field in existing:
            merged[field] = existing[field]
    merged["owner"] = existing.get("owner") or incoming.get("owner")
    if merged["owner"] is None:
        del merged["owner"]
    notes = list(existing.get("note") or ())
    conflict = _conflict(incoming, stored)
    if conflict and not any(n.get("authorString") == CONFLICT_AUTHOR and n.get("text") == conflict for n in notes):
        notes.append({"authorString": CONFLICT_AUTHOR, "text": conflict})
    if notes:
        merged["note"] = notes
    return merged


def _plan(incoming: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    """The council's fields from `incoming`, everyone else's additions from `existing`."""
    merged = {k: v for k, v in existing.items() if k not in PLAN_FIELDS}
    merged.update((k, incoming[k]) for k in PLAN_FIELDS if k in incoming)
    extensions = [e for e in existing.get("extension") or () if e.get("url") not in PLAN_EXTENSIONS]
    extensions += [e for e in incoming.get("extension") or () if e.get("url") in PLAN_EXTENSIONS]
    addresses = list(incoming.get("addresses") or ())
    addresses += [a for a in existing.get("addresses") or () if a not in addresses]
    activities = list(incoming.get("activity") or ())
    activities += [a for a in existing.get("activity") or () if a.get("id") != PLACEMENT]
    for field, values in (("extension", extensions), ("addresses", addresses), ("activity", activities)):
        if values:
            merged[field] = values
        else:
            merged.pop(field, None)
    return merged


def _conflict(incoming: dict[str, Any], stored: str) -> str | None:
    """The note for a Task whose kept status disagrees with what the council now says, or None."""
    council = incoming["status"]
    done = ((incoming.get("executionPeriod") or {}).get("end"))
    if council == "completed" and stored not in ("completed", "requested"):
        when = f" on {done}" if done else ""
        return (f"The council's extract says this step was done{when}; the status set here ({stored}) is kept. "
                "Check with the council and complete the Task if it is done.")
    if council == "requested" and stored in _CLOSED:
        return (f"The council's extract gives no date for this step (still open there); the status set here "
                f"({stored}) is kept. Check with the council.")
    return None


def is_conflict_note(note: dict[str, Any]) -> bool:
    return note.get("authorString") == CONFLICT_AUTHOR


def _body(resource: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in resource.items() if k not in ("id", "meta")}, sort_keys=True, default=str)
