"""What a person (or someone acting for them) may change in their own record from their own app.

Patient scopes let a person's app update their Goals, but a goal is agreed between the person and
their coordinator (and sometimes funders): the person adds their own notes on how it is going,
and changing the goal itself is a conversation with their team, not an edit. So a signed-in
person's update of a Goal may only add notes after those already there; everything else must be
as stored. Other types a person may write (their sharing Consents, a review request Task) are
theirs to write whole, and are judged by their scopes and the consent rules as any write."""
from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.store import resources

_ADD_ONLY = {"Goal": "note"}


async def check_person_update(conn: AsyncConnection, access: Access, res_type: str, res_id: str,
                              resource: dict[str, Any]) -> None:
    """403 when a person's own app changes more of a `_ADD_ONLY` resource than adding to its list."""
    element = _ADD_ONLY.get(res_type)
    if access.patient is None or element is None:
        return
    current = await resources.current_version(conn, res_type, res_id, access=access)
    if current is None or current.deleted or current.content is None:
        return  # nothing of theirs is there: the create scope and the id rules decide
    stored = jsontext.loads(current.content)

    def rest(value: dict[str, Any]) -> bytes:
        return jsontext.dumps({k: v for k, v in value.items() if k not in ("id", "meta", element)})

    before, after = stored.get(element) or [], resource.get(element) or []
    if rest(stored) != rest(resource) or jsontext.dumps(after[:len(before)]) != jsontext.dumps(before):
        raise FhirError("forbidden", f"from your own record you may add to a {res_type}'s {element}s; "
                        f"changing the {res_type.lower()} itself, or an earlier {element}, is agreed with "
                        "your coordinator", expression=f"{res_type}", status=403)
