"""Subscriptions' delivery state on PostgreSQL (migrations 0070-0072): who owns each Subscription,
the events its topic matched (queued in match order, numbered per subscription only once judged
tellable), the time-based deadlines raised, and how far delivery has got. The
Subscription resource itself is an ordinary resource (hub.store.resources); this is what the
delivery worker (hub.subscriptions.delivery) and `$status` / `$events` read and write."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

_COLUMNS = ("id, client_id, partner_class, organisation, organisation_system, scopes, topic, filters, endpoint, "
            "headers, payload, heartbeat_s, max_count, status, error, paused, events_since_start, "
            "delivered_through, attempts, first_failure_at, next_attempt_at, last_sent_at, delivered_count, "
            "withheld_count, retried_count, created_at, kind, matched, judged, timeout_s")


@dataclass(frozen=True, slots=True)
class Owner:
    """The client a Subscription belongs to, as its token said when it was written."""

    client_id: str
    partner_class: str
    organisation: str
    organisation_system: str
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    client_id: str
    partner_class: str
    organisation: str
    organisation_system: str
    scopes: list[str]
    topic: str
    filters: list[list[str]]
    endpoint: str
    headers: list[str]
    payload: str
    heartbeat_s: int | None
    max_count: int
    status: str
    error: str | None
    paused: bool
    events_since_start: int
    delivered_through: int
    attempts: int
    first_failure_at: datetime | None
    next_attempt_at: datetime
    last_sent_at: datetime | None
    delivered_count: int
    withheld_count: int
    retried_count: int
    created_at: datetime
    kind: str  # topic (R5 Backport) or criteria (classic R4)
    matched: int  # events queued for it (the last `seq`)
    judged: int   # queued events judged: numbered (the subscriber may read them) or withheld
    timeout_s: int | None  # its own backport-timeout; None: the hub-wide one

    @property
    def owner(self) -> Owner:
        return Owner(self.client_id, self.partner_class, self.organisation, self.organisation_system,
                     tuple(self.scopes))


@dataclass(frozen=True, slots=True)
class EventRow:
    number: int
    res_type: str
    res_id: str
    version: int
    method: str
    patient_id: str | None
    part: str | None
    occurred_at: datetime


async def save(conn: AsyncConnection, res_id: str, owner: Owner, *, topic: str, filters: list[tuple[str, str]],
               endpoint: str, headers: list[str], payload: str, heartbeat_s: int | None, max_count: int,
               status: str, kind: str = "topic", timeout_s: int | None = None) -> None:
    """Create or replace what a Subscription asks for. A rewrite keeps its event numbering and
    delivery position; a rewrite asking `requested` is handshaken again."""
    await conn.execute(
        "INSERT INTO subscription (id, client_id, partner_class, organisation, organisation_system, scopes, topic, "
        "filters, endpoint, headers, payload, heartbeat_s, max_count, status, kind, timeout_s) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET topic = EXCLUDED.topic, filters = EXCLUDED.filters, "
        "endpoint = EXCLUDED.endpoint, headers = EXCLUDED.headers, payload = EXCLUDED.payload, "
        "heartbeat_s = EXCLUDED.heartbeat_s, max_count = EXCLUDED.max_count, status = EXCLUDED.status, "
        "kind = EXCLUDED.kind, timeout_s = EXCLUDED.timeout_s, "
        "error = NULL, attempts = 0, first_failure_at = NULL, next_attempt_at = now()",
        (res_id, owner.client_id, owner.partner_class, owner.organisation, owner.organisation_system,
         list(owner.scopes), topic, Jsonb([list(f) for f in filters]), endpoint, headers, payload, heartbeat_s,
         max_count, status, kind, timeout_s))


async def remove(conn: AsyncConnection, res_id: str) -> None:
    await conn.execute("DELETE FROM subscription WHERE id = %s", (res_id,))


async def owner_of(conn: AsyncConnection, res_id: str) -> str | None:
    cur = await conn.execute("SELECT client_id FROM subscription WHERE id = %s", (res_id,))
    row = await cur.fetchone()
    return row[0] if row else None


async def owned_ids(conn: AsyncConnection, client_id: str) -> list[str]:
    cur = await conn.execute("SELECT id FROM subscription WHERE client_id = %s ORDER BY id", (client_id,))
    return [r[0] for r in await cur.fetchall()]


async def get(conn: AsyncConnection, res_id: str) -> Row | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM subscription WHERE id = %s", (res_id,))
    row = await cur.fetchone()
    return Row(*row) if row else None


async def listed(conn: AsyncConnection) -> list[Row]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM subscription ORDER BY created_at, id")
    return [Row(*r) for r in await cur.fetchall()]


async def listening(conn: AsyncConnection) -> list[Row]:
    """Subscriptions that are given new events: requested or active (paused ones too, so
    that nothing is missed while paused; an `error` or `off` subscription is given none)."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM subscription WHERE status IN ('requested', 'active')")
    return [Row(*r) for r in await cur.fetchall()]


async def queue_event(conn: AsyncConnection, sub_id: str, source: str, res_type: str, res_id: str, version: int,
                      method: str, patient_id: str | None, part: str | None) -> int | None:
    """Queue an event the subscription's topic and filters matched, after those before it (its
    `seq`); it has no event number until judged (`judge`). None if this source was queued
    already (the change event came again after a crash) or the subscription has gone."""
    cur = await conn.execute(
        "WITH bump AS (UPDATE subscription SET matched = matched + 1 WHERE id = %s "
        "AND NOT EXISTS (SELECT 1 FROM subscription_event WHERE subscription_id = %s AND source = %s) "
        "RETURNING matched) "
        "INSERT INTO subscription_event (subscription_id, seq, res_type, res_id, version, method, "
        "patient_id, part, source) SELECT %s, bump.matched, %s, %s, %s, %s, %s, %s, %s FROM bump "
        "RETURNING seq",
        (sub_id, sub_id, source, sub_id, res_type, res_id, version, method, patient_id, part, source))
    row = await cur.fetchone()
    return row[0] if row else None


async def unjudged(conn: AsyncConnection, sub_id: str, limit: int) -> tuple[int, list[tuple[int, EventRow]]]:
    """Lock the subscription (until the caller's transaction ends, so two judges never give one
    number twice) and return its last event number and up to `limit` queued events not judged
    yet, in match order, each with its `seq`."""
    cur = await conn.execute("SELECT events_since_start, judged FROM subscription WHERE id = %s FOR UPDATE",
                             (sub_id,))
    found = await cur.fetchone()
    if found is None:
        return 0, []
    last, judged = found
    cur = await conn.execute(
        "SELECT seq, 0, res_type, res_id, version, method, patient_id, part, occurred_at FROM subscription_event "
        "WHERE subscription_id = %s AND seq > %s ORDER BY seq LIMIT %s", (sub_id, judged, limit))
    return last, [(r[0], EventRow(*r[1:])) for r in await cur.fetchall()]


async def judged_events(conn: AsyncConnection, sub_id: str, verdicts: list[tuple[int, bool]]) -> list[int | None]:
    """Record the verdicts (seq, may be told) on queued events, in order: each told one takes the
    subscription's next event number, a withheld one none. Returns each event's number (None
    for a withheld one), in the verdicts' order."""
    if not verdicts:
        return []
    cur = await conn.execute("SELECT events_since_start FROM subscription WHERE id = %s", (sub_id,))
    found = await cur.fetchone()
    if found is None:
        return [None] * len(verdicts)
    number, numbers = found[0], []
    for _, shown in verdicts:
        if shown:
            number += 1
        numbers.append(number if shown else None)
    withheld = sum(1 for n in numbers if n is None)
    await conn.execute(
        "UPDATE subscription_event e SET event_number = v.number, withheld = v.number IS NULL "
        "FROM unnest(%s::bigint[], %s::bigint[]) AS v(seq, number) WHERE e.subscription_id = %s AND e.seq = v.seq",
        ([seq for seq, _ in verdicts], numbers, sub_id))
    await conn.execute("UPDATE subscription SET events_since_start = %s, judged = greatest(judged, %s), "
                       "withheld_count = withheld_count + %s WHERE id = %s",
                       (number, verdicts[-1][0], withheld, sub_id))
    return numbers


async def due(conn: AsyncConnection, heartbeat_due: bool = True) -> list[Row]:
    """Subscriptions with something to send now: a handshake, events to judge or deliver, or a
    heartbeat."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM subscription WHERE status IN ('requested', 'active') AND NOT paused "
        "AND next_attempt_at <= now() AND (status = 'requested' OR delivered_through < events_since_start "
        "OR judged < matched "
        "OR (heartbeat_s IS NOT NULL AND heartbeat_s > 0 AND %s AND "
        "    coalesce(last_sent_at, created_at) + make_interval(secs => heartbeat_s) <= now())) "
        "ORDER BY next_attempt_at", (heartbeat_due,))
    return [Row(*r) for r in await cur.fetchall()]


async def events(conn: AsyncConnection, sub_id: str, after: int, until: int | None, limit: int) -> list[EventRow]:
    """Numbered events after `after` (and up to `until`), in number order."""
    cur = await conn.execute(
        "SELECT event_number, res_type, res_id, version, method, patient_id, part, occurred_at "
        "FROM subscription_event WHERE subscription_id = %s AND event_number IS NOT NULL AND event_number > %s "
        "AND (%s::bigint IS NULL OR event_number <= %s::bigint) ORDER BY event_number LIMIT %s",
        (sub_id, after, until, until, limit))
    return [EventRow(*r) for r in await cur.fetchall()]


async def delivered(conn: AsyncConnection, sub_id: str, through: int, shown: int, withheld: int,
                    *, status: str = "active") -> None:
    """A notification was taken (2xx): delivery moves past `through`, failures are forgotten."""
    await conn.execute(
        "UPDATE subscription SET delivered_through = greatest(delivered_through, %s), status = %s, error = NULL, "
        "attempts = 0, first_failure_at = NULL, next_attempt_at = now(), last_sent_at = now(), "
        "delivered_count = delivered_count + %s, withheld_count = withheld_count + %s WHERE id = %s",
        (through, status, shown, withheld, sub_id))


async def failed(conn: AsyncConnection, sub_id: str, reason: str, *, first_delay_s: float, max_delay_s: float,
                 give_up_s: float) -> str:
    """A notification was not taken: try again after an exponential back-off, or, once the
    endpoint has failed for longer than `give_up_s`, put the subscription in `error` with the
    reason (its events stay, for `$events`). Returns the status now."""
    cur = await conn.execute(
        "UPDATE subscription SET attempts = attempts + 1, retried_count = retried_count + 1, "
        "first_failure_at = coalesce(first_failure_at, now()), "
        "next_attempt_at = now() + make_interval(secs => least(%s::float8 * power(2, attempts), %s::float8)), "
        "status = CASE WHEN coalesce(first_failure_at, now()) + make_interval(secs => %s::float8) <= now() "
        "              THEN 'error' ELSE status END, "
        "error = CASE WHEN coalesce(first_failure_at, now()) + make_interval(secs => %s::float8) <= now() "
        "             THEN %s ELSE error END "
        "WHERE id = %s RETURNING status",
        (first_delay_s, max_delay_s, give_up_s, give_up_s, reason, sub_id))
    row = await cur.fetchone()
    return row[0] if row else "off"


async def set_state(conn: AsyncConnection, sub_id: str, *, status: str | None = None, error: str | None = None,
                    paused: bool | None = None) -> bool:
    cur = await conn.execute(
        "UPDATE subscription SET status = coalesce(%s, status), error = CASE WHEN %s::text IS NULL "
        "THEN error ELSE %s END, paused = coalesce(%s, paused), next_attempt_at = now() WHERE id = %s RETURNING 1",
        (status, error, error, paused, sub_id))
    return await cur.fetchone() is not None


async def rewind(conn: AsyncConnection, sub_id: str, since: int) -> bool:
    """Send again every event after `since` (the operator's `resend`), and re-activate."""
    cur = await conn.execute(
        "UPDATE subscription SET delivered_through = least(delivered_through, %s), status = 'active', "
        "error = NULL, attempts = 0, first_failure_at = NULL, next_attempt_at = now() WHERE id = %s RETURNING 1",
        (max(since, 0), sub_id))
    return await cur.fetchone() is not None


def as_json(row: Row) -> dict[str, Any]:
    """What an operator listing shows (no endpoint headers: they hold the receiver's secrets)."""
    return {"id": row.id, "client": row.client_id, "topic": row.topic, "status": row.status,
            "paused": row.paused, "error": row.error, "events": row.events_since_start,
            "delivered_through": row.delivered_through, "waiting": row.matched - row.judged, "delivered": row.delivered_count,
            "withheld": row.withheld_count, "retried": row.retried_count}
