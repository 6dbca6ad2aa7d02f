"""Which subscriptions an event goes to, once a topic has said the event is one of its own:
those listening since before the event, whose filters the focus passes. Shared by the two
sources of events — the record's change events (hub.subscriptions.delivery's Matcher) and
deadlines passing (hub.subscriptions.deadlines) — so both queue alike."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.store import resources
from hub.store import subscriptions as state
from hub.subscriptions.topics import Topic, identifier_tokens, passes, references


async def identifiers(conn: AsyncConnection, topic: Topic, filters: list[tuple[str, str]],
                      resource: dict[str, Any] | None, res_id: str) -> dict[str, list[str]]:
    """For `name:identifier` filters: the identifiers of each resource the focus refers to there."""
    found: dict[str, list[str]] = {}
    for name, _ in filters:
        if not name.endswith(":identifier"):
            continue
        for ref in references(topic, name.removesuffix(":identifier"), resource, res_id):
            if ref in found or ref.count("/") != 1:
                continue
            target_type, target_id = ref.split("/")
            try:
                target = await resources.read(conn, target_type, target_id, access=Access.system())
            except FhirError:
                found[ref] = []
                continue
            found[ref] = identifier_tokens(jsontext.loads(target.content))
    return found


async def queue_for(conn: AsyncConnection, listening: list[tuple[state.Row, Topic]], *, occurred: datetime,
                    source: str, res_type: str, res_id: str, version: int, method: str,
                    resource: dict[str, Any] | None, patient: str | None, part: str | None) -> int:
    """Queue the event for each subscription listening since before it (`occurred`) whose filters
    the focus passes; how many it was queued for."""
    queued = 0
    for row, topic in listening:
        if occurred < row.created_at:
            continue  # the event happened before the subscription existed
        filters = [(f[0], f[1]) for f in row.filters]
        found = await identifiers(conn, topic, filters, resource, res_id)
        if not passes(topic, filters, resource, res_id, found):
            continue
        if await state.queue_event(conn, row.id, source, res_type, res_id, version, method, patient, part):
            queued += 1
    return queued
