"""What the operations page keeps and asks of the store: the dead letters replayed from it, and
whether a message (by envelope id) has reached the record, which its Provenance says: the
recorder names the envelope in the Provenance of what each message wrote."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection

from hub.fhir.identifiers import ENVELOPE


@dataclass(frozen=True)
class Replay:
    letter_id: str
    envelope_id: str
    replayed_by: str
    replayed_at: datetime


async def note_replay(conn: AsyncConnection, letter_id: str, envelope_id: str, replayed_by: str) -> None:
    await conn.execute("INSERT INTO dead_letter_replay (letter_id, envelope_id, replayed_by) VALUES (%s, %s, %s)",
                       (letter_id, envelope_id, replayed_by))


async def replays(conn: AsyncConnection) -> dict[str, Replay]:
    """The latest replay of each dead letter."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (letter_id) letter_id, envelope_id, replayed_by, replayed_at FROM dead_letter_replay"
        " ORDER BY letter_id, replayed_at DESC")
    return {row[0]: Replay(*row) for row in await cur.fetchall()}


async def envelopes_recorded(conn: AsyncConnection, envelope_ids: list[str]) -> set[str]:
    """The envelopes (of these) whose message has written to the record."""
    found = set()
    for envelope_id in envelope_ids:
        probe = json.dumps({"entity": [{"what": {"identifier": {"system": ENVELOPE, "value": envelope_id}}}]})
        cur = await conn.execute(
            "SELECT 1 FROM resource WHERE res_type = 'Provenance' AND NOT deleted AND content::jsonb @> %s::jsonb"
            " LIMIT 1", (probe,))
        if await cur.fetchone():
            found.add(envelope_id)
    return found
