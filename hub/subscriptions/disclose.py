"""What a subscriber may be told of its events, decided at the moment of telling: each event's
focus is read with the subscriber's own access, exactly as a read would be (SMART scopes, the
partner class and organisation, the person's Consent as it stands now).

Event numbers follow the same judgement (`judge`): an event waits unnumbered in its
subscription's queue until it is first judged (when the notifier comes to send it, or `$events`
asks); then it takes the subscription's next number only if the subscriber may read its focus,
and is withheld whole otherwise — no number, no focus, no resource. So the numbers a receiver
sees run without gaps over everything it was allowed to see, and a gap means a real loss (see
hub/subscriptions/README.md)."""
from __future__ import annotations

from dataclasses import replace

from psycopg import AsyncConnection

from hub.auth.principal import grants
from hub.consent.defaults import parse_defaults
from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.store import resources
from hub.store import subscriptions as state
from hub.store.resources import Version
from hub.store.subscriptions import EventRow
from hub.subscriptions.notification import Event


def subscriber_access(owner: state.Owner, consent_defaults: str | None) -> Access:
    """The subscribing client's access, built as the API builds it for the client's token."""
    if owner.client_id == "system":
        return Access.system()
    return Access(partner_class=owner.partner_class, org_code=owner.organisation,
                  org_system=owner.organisation_system or None,
                  default_parts=parse_defaults(consent_defaults).get(owner.partner_class, ()),
                  scopes=grants(frozenset(owner.scopes)))


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


async def judge(conn: AsyncConnection, sub_id: str, access: Access, limit: int,
                payload: str = "empty") -> tuple[list[Event], list[Version], int]:
    """Judge up to `limit` of the subscription's queued events, in match order, with the
    subscriber's `access` now: each it may read takes the next event number, each it may not is
    withheld without one. One transaction, the subscription row locked, so two notifiers (or a
    notifier and `$events`) never number one event twice. Returns the numbered events as the
    subscriber may see them (with `payload`'s content), the versions disclosed, and how many
    were withheld."""
    async with conn.transaction():
        _, queued = await state.unjudged(conn, sub_id, limit)
        if not queued:
            return [], [], 0
        seen, disclosed = await as_seen_by(conn, [row for _, row in queued], access, payload)
        numbers = await state.judged_events(conn, sub_id, [(seq, event.shown) for (seq, _), event in zip(queued, seen)])
    told = [replace(event, number=number) for event, number in zip(seen, numbers) if number is not None]
    return told, disclosed, len(seen) - len(told)
