"""What a cohort's linked dataset and summary read: each member of the cohort's member Group, with
what the reader may see of their record (consent and scopes, as the reader's own searches would),
gathered into `linked.Person`s. One place for both `$linked-dataset` and `$cohort-report`, so the
summary a commissioner sees is always counted from the same rows a release would hold."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from hub.datasets import linked
from hub.fhir import jsontext
from hub.search.access import Access
from hub.store import datasets
from hub.store.resources import Version, read

# The resources each person's row is made from, and the Person list each fills.
_PARTS = (("CarePlan", "plans"), ("Goal", "goals"), ("Task", "offers"), ("ChargeItem", "lines"),
          ("Encounter", "meetings"), ("Observation", "measures"))
# The read scopes a reader needs: a narrower dataset is never passed off as whole (ChargeItem is
# read when allowed: spend is shown only to those who may see the spend lines).
READS = ("Group", "Patient", "CarePlan", "Goal", "Task", "Encounter", "Observation")


@dataclass
class Members:
    group: dict[str, Any]
    people: dict[str, linked.Person] = field(default_factory=dict)
    disclosed: list[Version] = field(default_factory=list)


async def members(conn: AsyncConnection, group_id: str, access: Access) -> Members:
    """The cohort `Group/group_id` (404 as a read would, if the reader may not see it) and its
    members' records. A member whose Patient the reader may not read is left out altogether."""
    stored = await read(conn, "Group", group_id, access=access)
    group = jsontext.loads(stored.content)
    people = {pid: linked.Person(pid, member=member) for pid, member in _member_entries(group).items()}
    found = Members(group, disclosed=[stored])
    async for pid, rid, version, content in datasets.visible_rows(conn, "Patient", access, people):
        people[pid].patient = jsontext.loads(content)
        found.disclosed.append(Version("Patient", rid, version, stored.last_updated, None, patient_id=pid))
    found.people = {pid: p for pid, p in people.items() if p.patient is not None}
    for res, attribute in _PARTS:
        if res == "ChargeItem" and not access.permits(res, "r"):
            for person in found.people.values():
                person.lines = None  # spend unknown to this reader, not nil
            continue
        async for pid, _rid, _version, content in datasets.visible_rows(conn, res, access, found.people):
            resource = jsontext.loads(content)
            person = found.people[pid]
            if res == "Task":
                if linked.is_review_task(resource):
                    person.reviews.append(resource)
                elif _offer_of(resource, group_id):
                    person.offers.append(resource)
                continue
            getattr(person, attribute).append(resource)
    return found


def _member_entries(group: dict) -> dict[str, dict]:
    """Every member entry by patient (the latest entry of each person: their current or last
    spell in the cohort)."""
    found: dict[str, dict] = {}
    for member in group.get("member") or []:
        ref = (member.get("entity") or {}).get("reference") or ""
        if ref.startswith("Patient/"):
            found[ref[len("Patient/"):].split("/")[0]] = member
    return found


def _offer_of(task: dict, group_id: str) -> bool:
    codes = {c.get("code") for c in (task.get("code") or {}).get("coding") or ()}
    return linked.OFFER_CODE in codes and (task.get("focus") or {}).get("reference") == f"Group/{group_id}"
