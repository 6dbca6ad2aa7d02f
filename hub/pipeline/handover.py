"""Handovers completed by the record itself: a GP registration handover Task (a service
leaver's handover to the receiving GP practice, raised by the MOD feed) is completed as soon as
the shared record holds the person's GP registration (Patient.generalPractitioner, e.g. from an
HL7 v2 A04/A28), whichever of the two arrives first. An open handover past its due date is
overdue, found with a standard search (see connectors/mod/README.md).

Called by the recorder after a lane's messages are written, in the same transaction. Only
messages that can change the answer cost anything: a Patient carrying a GP registration, or a
handover Task; the rest of the feed is not looked at twice."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.identifiers import CANONICAL_BASE
from hub.pipeline.provenance import hub_provenance
from hub.search.parse import parse_search
from hub.search.access import Access
from hub.store import people, resources, searching
from hub.store.resources import UNCHANGED, Version

TRANSITION = f"{CANONICAL_BASE}/CodeSystem/ipc-transition"
HANDOVER_CODE = "gp-registration-handover"
OPEN_STATUSES = "requested,received,accepted,ready,in-progress,on-hold"


def _is_handover(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "Task" and any(
        c.get("system") == TRANSITION and c.get("code") == HANDOVER_CODE
        for c in (resource.get("code") or {}).get("coding") or [])


def people_to_check(items: list[tuple[Any, Any, dict[str, Any]]]) -> set[tuple[str, str]]:
    """(source, the source's Patient id) of each person these messages may settle a handover for."""
    found = set()
    for _, envelope, document in items:
        if document.get("resourceType") != "Bundle":
            continue
        for entry in document.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            if resource.get("resourceType") == "Patient" and resource.get("generalPractitioner"):
                found.add((envelope.source, resource["id"]))
            elif _is_handover(resource):
                ref = (resource.get("for") or {}).get("reference", "")
                if ref.startswith("Patient/"):
                    found.add((envelope.source, ref.removeprefix("Patient/")))
    return found


async def settle(conn: AsyncConnection, items: list[tuple[Any, Any, dict[str, Any]]]) -> list[Version]:
    """Complete the open handovers of every person in `items` whose record now names a GP. Two
    statements for a batch without open handovers: the person links, and one search."""
    wanted = people_to_check(items)
    if not wanted:
        return []
    links = await people.linked_patients(conn, wanted)
    patient_ids = sorted({links.get(key, key[1]) for key in wanted})
    written: list[Version] = []
    grounds: list[Version] = []
    for start in range(0, len(patient_ids), _CHUNK):
        for task in await _open_handovers(conn, patient_ids[start:start + _CHUNK]):
            done = await _complete_if_registered(conn, task)
            if done is not None:
                written.append(done[0])
                grounds.append(done[1])
    if written:
        proof = hub_provenance(written, "ipc-hub", derived_from=grounds)
        await resources.update(conn, "Provenance", proof["id"], proof, skip_unchanged=True,
                               access=Access.system())
    return written


_CHUNK = 100


async def _open_handovers(conn: AsyncConnection, patient_ids: list[str]) -> list[dict[str, Any]]:
    request = parse_search("Task", [("subject", ",".join(f"Patient/{p}" for p in patient_ids)),
                                    ("code", f"{TRANSITION}|{HANDOVER_CODE}"), ("status", OPEN_STATUSES),
                                    ("_count", "1000")], max_count=1000)
    found = await searching.search(conn, request, with_total=False, access=Access.system())
    return [jsontext.loads(v.content) for v in found.matches]


async def _complete_if_registered(conn: AsyncConnection, task: dict[str, Any]) -> tuple[Version, Version] | None:
    """The completed Task's version and the Patient version whose GP registration completed it."""
    patient_id = (task.get("for") or {}).get("reference", "").removeprefix("Patient/")
    current = await resources.current_version(conn, "Patient", patient_id, access=Access.system())
    if current is None or current.deleted:
        return None
    practitioners = jsontext.loads(current.content).get("generalPractitioner") or []
    if not practitioners:
        return None
    registered_with = {k: v for k, v in practitioners[0].items() if k in ("reference", "display")}
    done = completed(task, registered_with, datetime.now(UTC))
    version, _ = await resources.update(conn, "Task", done["id"], done, skip_unchanged=True,
                                        access=Access.system())
    return None if version.method == UNCHANGED else (version, current)


def completed(task: dict[str, Any], registered_with: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The handover Task once the GP registration is recorded: the due date stays in
    `restriction.period.end`; `executionPeriod.end` becomes when it was done."""
    stamp = now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    done = {**task, "status": "completed", "lastModified": stamp,
            "businessStatus": {"text": "GP registration recorded"},
            "executionPeriod": {**(task.get("executionPeriod") or {}), "end": stamp},
            "output": [{"type": {"text": "GP registration"}, "valueReference": registered_with}]}
    profiles = (task.get("meta") or {}).get("profile")
    done.pop("meta", None)
    if profiles:
        done["meta"] = {"profile": profiles}
    return done
