"""What a subscriber may be told of its events, decided at the moment of telling: each event's
focus is read with the subscriber's own access, exactly as a read would be (SMART scopes, the
partner class and organisation, the person's Consent as it stands now). An event whose focus it
may not read is withheld whole — no focus, no resource — though its number stays taken, so the
numbering says nothing about what was hidden (see hub/subscriptions/README.md)."""
from __future__ import annotations

from psycopg import AsyncConnection

from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.store import resources
from hub.store.resources import Version
from hub.store.subscriptions import EventRow
from hub.subscriptions.notification import Event


async def as_seen_by(conn: AsyncConnection, rows: list[EventRow], access: Access,
                     payload: str) -> tuple[list[Event], list[Version]]:
    """The events as `access` may see them, and the versions disclosed (for the audit trail)."""
    events, disclosed = [], []
    for row in rows:
        version = None
        if access.permits(row.res_type, "r"):
            try:
                version = await resources.vread(conn, row.res_type, row.res_id, row.version, access=access)
            except FhirError:  # not visible to this subscriber (or gone): withheld
                version = None
        if version is not None and payload != "empty":
            disclosed.append(version)
        events.append(Event(row.number, row.occurred_at, row.res_type, row.res_id, row.version, row.method,
                            shown=version is not None,
                            content=version.content if version is not None and payload == "full-resource" else None))
    return events, disclosed
