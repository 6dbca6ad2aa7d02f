"""The change-event outbox: rows written beside each resource version (hub.store.resources and
delete) and drained by the pipeline's relay. Only one relay drains at a time (a session
advisory lock), so events leave in commit order per resource.

Each event carries the patient whose record the resource is in and its record part (Kafka
headers `ipc-patient` and `ipc-record-part`; absent for resources in nobody's record), written
with the version in the same statement. Whatever delivers record.events to partners (a
subscription, a notification) can so apply the same consent rule as a read, by header, without
fetching the resource."""
from __future__ import annotations

from dataclasses import dataclass

import psycopg

_RELAY_LOCK = 0x1BC_0B0C


@dataclass(slots=True, frozen=True)
class ChangeEvent:
    seq: int
    res_type: str
    res_id: str
    version: int
    method: str
    patient_id: str | None = None
    part: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers that say whose record, and which part of it, this event is about."""
        if self.patient_id is None:
            # Outside every record: only a part it is held in (a cohort's member Group) is said.
            return [("ipc-record-part", self.part.encode())] if self.part else []
        return [("ipc-patient", self.patient_id.encode()), ("ipc-record-part", (self.part or "").encode())]


def try_become_relay(conn: psycopg.Connection) -> bool:
    """True if this connection now holds the relay lock (held until it closes)."""
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (_RELAY_LOCK,)).fetchone()[0])


def pending(conn: psycopg.Connection, limit: int) -> list[ChangeEvent]:
    rows = conn.execute("SELECT seq, res_type, res_id, version, method, patient_id, part FROM outbox "
                        "ORDER BY seq LIMIT %s",
                        (limit,)).fetchall()
    return [ChangeEvent(*row) for row in rows]


def remove(conn: psycopg.Connection, seqs: list[int]) -> None:
    """Forget these events once the broker has acknowledged them. By exact seq, not a range: a
    transaction that took a lower seq may commit after a higher one was read."""
    conn.execute("DELETE FROM outbox WHERE seq = ANY(%s)", (seqs,))


def backlog(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
