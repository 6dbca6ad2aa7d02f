"""The look-alike review pass: each person new to the record (from a feed, or created over the
API) is scored against everyone already recorded (hub.identity.matching), and each probable
duplicate raises one review Task for a coordinator, with its Provenance.

It runs after the recorder's batches commit, and also on its own in the plan worker (woken by
the NOTIFY an API write of a Patient sends, and on its schedule), so a look-alike created over
the API is reviewed with no feed traffic at all. Passes are serialised by a transaction-level
advisory lock: however many recorders and plan workers run at once, each new person is scored
once and each pair raises its Task once."""
from __future__ import annotations

import logging
import threading

from psycopg import AsyncConnection

from hub.identity import matching
from hub.pipeline.provenance import hub_provenance
from hub.store import batch as store_batch
from hub.store import people

log = logging.getLogger(__name__)


async def review_pass(conn: AsyncConnection) -> int:
    """Raise a review Task (with its Provenance) for each probable duplicate among new people,
    written together as the recorder writes a batch (a backlog of look-alikes raises many).
    Call it inside a transaction. Returns the number of Tasks raised."""
    await people.lock_review_pass(conn)
    tasks = [(source, matching.review_task(patient_id, candidate, source))
             for source, patient_id, candidate in await matching.review_new_people(conn)]
    if not tasks:
        return 0
    current = await store_batch.lock_current(conn, {("Task", task["id"]) for _, task in tasks})
    existing = set(current)
    staged: list[store_batch.Staged] = []
    proofs = []
    for source, task in tasks:
        if ("Task", task["id"]) in current:
            continue  # raised before: a coordinator may be working on (or have closed) it
        done = store_batch.stage("Task", task["id"], task, None)
        if done is not None:
            current[("Task", task["id"])] = done.version
            staged.append(done)
            proofs.append(hub_provenance([done.version], source))
    found = await store_batch.lock_current(conn, {("Provenance", proof["id"]) for proof in proofs})
    existing |= set(found)
    for proof in proofs:
        done = store_batch.stage("Provenance", proof["id"], proof, found.get(("Provenance", proof["id"])))
        if done is not None:
            staged.append(done)
    await store_batch.write_staged(conn, staged, existing)
    if staged:
        log.info("%d review tasks raised for possible duplicate people", len(proofs))
    return len(proofs)


async def review_all(conn: AsyncConnection, stop: threading.Event | None = None) -> int:
    """Review passes until no new person is left unscored (a pass takes a thousand at a time),
    each in its own transaction, or until `stop` is set (a worker asked to stop finishes the pass
    in hand, not the backlog); the number of Tasks raised."""
    raised = 0
    while stop is None or not stop.is_set():
        async with conn.transaction():
            if not await people.anyone_to_review(conn):
                return raised
            raised += await review_pass(conn)
    return raised
