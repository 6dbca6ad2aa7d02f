"""After a client deletes a resource: the hub's review of what still refers to it.

A client's delete is judged only on the referrers that client may see (hub.store.integrity:
`check_delete`), so that no answer tells a hidden referrer from none (issue 20). A delete whose
only referrers are hidden from the deleting client therefore goes through, and leaves those
referrers pointing at a deleted resource. The record's other readers must learn of it: the delete
queued its resource in the plan worker's queue (`plan_followup`, in the delete's transaction), and
the plan worker hands it here, after the request has answered — so the request does the same
work whether or not anything hidden refers to it.

For each person whose record still refers to the deleted resource, one review Task (once per
deleted version and person: the id derives from both; owner: the coordinator of the person's
open care and support plan, so it is on their worklist) asks the coordinator to repoint the
referrers or restore the resource from its history — its last content stays readable with
vread for whoever may see it. The Task names the hidden referrers, so it is tagged into the
most protected record part, `safeguarding`: only those who see everything of that person's
record (NHS direct care by default; the coordinator) see it, never the client that deleted, nor
the person (hub.consent.delegation withholds that part). A referrer outside every shared record
(kept with the organisation that wrote it: `owner`) gets no Task, since no one but that
organisation may see it; its reference simply resolves to a deleted resource (410 on read)."""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.consent.parts import PART_SYSTEM, SAFEGUARDING
from hub.fhir.ids import derived_id
from hub.plans.model import PLAN, coordinator
from hub.search.access import Access
from hub.store import integrity
from hub.store.followups import open_plans_of
from hub.store import resources as store

log = logging.getLogger(__name__)

TASK_CODE_SYSTEM = "https://ipc-hub.example.org/fhir/CodeSystem/task-code"
REVIEW_CODE = "review-reference-to-deleted"


async def deleted_version(conn: AsyncConnection, res_type: str, res_id: str) -> int | None:
    """The version number of the deletion when the resource is currently deleted, else None (it
    was restored since, or never deleted: nothing to review)."""
    cur = await conn.execute("SELECT version FROM resource WHERE res_type = %s AND res_id = %s AND deleted",
                             (res_type, res_id))
    row = await cur.fetchone()
    return row[0] if row else None


async def review_deleted(conn: AsyncConnection, res_type: str, res_id: str, version: int) -> int:
    """Raise (once) the review Tasks for what still refers to `res_type/res_id`, deleted as
    `version`; the number of Tasks written."""
    found = await integrity.referrers(conn, res_type, res_id)
    by_person: dict[str, list[tuple[str, str]]] = {}
    for ref_type, ref_id, patient_id, _part, owner in found:
        if patient_id is None or owner is not None:
            continue   # kept with its writer alone: no one else may be told of it
        by_person.setdefault(patient_id, []).append((ref_type, ref_id))
    written = 0
    for patient_id, keys in sorted(by_person.items()):
        plans = await open_plans_of(conn, patient_id, PLAN)
        owner = next((found for _, plan in plans if (found := coordinator(plan))), None)
        task = review_task(res_type, res_id, version, patient_id, keys, owner)
        if await store.current_version(conn, "Task", task["id"], access=Access.system()) is not None:
            continue   # raised already (a queue entry handed back after a crash)
        await store.update(conn, "Task", task["id"], task, access=Access.system())
        written += 1
    if written:
        log.info("review of a deleted resource: %d review tasks raised", written)
    return written


def review_task(res_type: str, res_id: str, version: int, patient_id: str,
                referrers: list[tuple[str, str]], owner: str | None = None) -> dict[str, Any]:
    """The FHIR Task asking a coordinator to put right references left pointing at a resource a
    client deleted (never repointed here: which is right is a person's judgement). `owner`: the
    coordinator of the person's open care and support plan, whose worklist it then joins."""
    last = f"{res_type}/{res_id}/_history/{version - 1}"
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": derived_id("reference-to-deleted", res_type, res_id, str(version), patient_id),
        "meta": {"tag": [{"system": PART_SYSTEM, "code": SAFEGUARDING}]},
        "status": "requested",
        "intent": "proposal",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": REVIEW_CODE,
                             "display": "Review references to a deleted resource"}]},
        "description": (f"{res_type}/{res_id} was deleted by a client that may not see every resource referring "
                        f"to it. Repoint these references, or restore it from its last version ({last})."),
        "authoredOn": datetime.now(UTC).isoformat(timespec="seconds"),
        # A literal reference must name a current resource (hub.store.integrity), so the deleted
        # version is named in words; the referrers are current.
        "input": [{"type": {"text": "deleted resource, last version"}, "valueString": last},
                  *({"type": {"text": "still refers to it"}, "valueReference": {"reference": f"{t}/{i}"}}
                    for t, i in referrers[:100])],
    }
    if owner:
        task["owner"] = {"reference": owner}
    if (res_type, res_id) != ("Patient", patient_id):
        task["for"] = {"reference": f"Patient/{patient_id}"}
    else:   # the person's own Patient was deleted: the Task sits outside every record, in the same part
        task["description"] += " The deleted resource is this person's Patient record."
    return task
