"""Writing the implementation guide's conformance resources (StructureDefinitions, CodeSystems,
ValueSets) into the store at start-up, so the hub serves the guide it enforces."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from hub.search.access import Access
from hub.store import resources as store
from hub.store.resources import UNCHANGED

_LOCK_KEY = "ipc-hub:load-conformance"


async def load_conformance(conn: AsyncConnection, resources: Iterable[dict[str, Any]]) -> int:
    """Store each resource unless the stored version already says the same; return how many
    were written. One transaction under an advisory lock, so API processes starting together
    neither race to create the same resource nor write it twice."""
    written = 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_LOCK_KEY,))
        for resource in resources:
            version, _ = await store.update(conn, resource["resourceType"], resource["id"],
                                            dict(resource), skip_unchanged=True, access=Access.system())
            written += version.method != UNCHANGED
    return written
