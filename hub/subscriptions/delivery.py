"""The notifier: from the record's change events to partners' endpoints, in two halves.

Matching (`Matcher`, a handler on hub.bus's worker loop, consumer group `<prefix>.notifier` on
record.events, so it scales across machines like the other workers): each change event is read
with the hub's own access, shown to each topic (hub.subscriptions.topics) with the version
before it, filtered (hub.subscriptions.matching), and queued for every subscription it matches,
in one database transaction; the offsets are committed only after it, and a redelivered change
event is never queued twice (the bus coordinates are kept with each). Events are queued in the
order the group reads them: one person's events in commit order (the relay keys change events by
person: one key, one partition). The
sender's loop also runs the deadline scheduler (hub.subscriptions.deadlines) every minute.

Delivering (`Sender`): every subscription with something due gets its own task, so a slow or
dead endpoint holds up nobody else. A `requested` subscription is sent a handshake first (2xx
makes it `active`); then its queued events are judged with the subscriber's access at that
moment (hub.subscriptions.disclose: what it may read takes the next event number, what it may
not is withheld without one) and sent in number order, at most `max-count` per notification;
a heartbeat when it has been quiet for its heartbeat period. A failed POST (no answer within
the timeout, or not 2xx) is tried again after a back-off doubling from
HUB_SUBSCRIPTION_RETRY_FIRST_S to HUB_SUBSCRIPTION_RETRY_MAX_S; an endpoint still failing after
HUB_SUBSCRIPTION_GIVE_UP_S puts the subscription in `error` with the reason, and its undelivered
events stay for `$events`. Delivery is at-least-once: a crash after the POST and before the
database write sends that notification again, with the same event numbers."""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import httpx
import orjson
import psycopg
from prometheus_client import Counter, Gauge
from psycopg import AsyncConnection

from hub.bus.kafka import BusSettings
from hub.bus.topics import Topics
from hub.bus.worker import Message, Outcome, Transient, Worker
from hub.config import Settings
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.search.access import Access
from hub.search.parse import parse_search
from hub.store import clients, resources, searching
from hub.store import subscriptions as state
from hub.subscriptions import deadlines
from hub.subscriptions.disclose import as_seen_by, judge, subscriber_access
from hub.subscriptions.matching import queue_for
from hub.subscriptions.notification import About, notification
from hub.subscriptions.topics import BY_URL, Change, Topic

log = logging.getLogger(__name__)

DELIVERED = Counter("ipc_subscription_events_delivered", "Events delivered to a subscription's endpoint",
                    ["subscription"])
WITHHELD = Counter("ipc_subscription_events_withheld",
                   "Events not sent because the subscriber may not read their focus now", ["subscription"])
RETRIED = Counter("ipc_subscription_retries", "Notifications that failed and will be tried again", ["subscription"])
FAILED = Counter("ipc_subscription_errors", "Subscriptions put in error after their endpoint kept failing",
                 ["subscription"])
# The longest a subscription's own backport-timeout may make the hub wait for its endpoint (the
# wait holds only that subscription's own task, never another's).
MAX_TIMEOUT_S = 300

LAG = Gauge("ipc_subscription_lag", "Events numbered for a subscription and not yet settled", ["subscription"])


class Matcher:
    """The worker-loop handler that numbers each change event for the subscriptions it matches."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def __call__(self, batch: list[Message]) -> Outcome:
        try:
            async with await AsyncConnection.connect(self.database_url, connect_timeout=5) as conn:
                async with conn.transaction():
                    await self._number(conn, batch)
        except psycopg.OperationalError as exc:
            raise Transient(type(exc).__name__) from None
        return Outcome()

    async def _number(self, conn: AsyncConnection, batch: list[Message]) -> None:
        listening = await state.listening(conn)
        by_type: dict[str, list[tuple[state.Row, Topic]]] = {}
        classic: dict[str, list[state.Row]] = {}
        for row in listening:
            topic = BY_URL.get(row.topic)
            if topic is not None:
                by_type.setdefault(topic.resource_type, []).append((row, topic))
            elif row.kind == "criteria":
                classic.setdefault(row.topic.split("?", 1)[0], []).append(row)
        if not by_type and not classic:
            return
        for message in batch:
            try:
                event = orjson.loads(message.value or b"")
                res_type, res_id = event["resourceType"], event["id"]
                number, method = int(event["versionId"]), event["method"]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("notifier: a change event it cannot read at %s", message.coordinates)
                continue
            headers = dict(message.headers)
            published = datetime.fromtimestamp(message.timestamp_ms / 1000, UTC)
            patient = (headers.get("ipc-patient") or b"").decode() or None
            part = (headers.get("ipc-record-part") or b"").decode() or None
            for row in classic.get(res_type, ()):
                if published >= row.created_at and method in ("POST", "PUT") and \
                        await _meets(conn, row.topic, res_type, res_id):
                    await state.queue_event(conn, row.id, message.coordinates, res_type, res_id, number, method,
                                            patient, part)
            candidates = by_type.get(res_type)
            if not candidates:
                continue
            change = Change(res_type, res_id, method, part, await _version(conn, res_type, res_id, number),
                            await _version(conn, res_type, res_id, number - 1) if number > 1 else None)
            await queue_for(conn, [(row, topic) for row, topic in candidates if topic.matches(change)],
                            occurred=published, source=message.coordinates, res_type=res_type, res_id=res_id,
                            version=number, method=method, resource=change.resource, patient=patient, part=part)


async def _version(conn: AsyncConnection, res_type: str, res_id: str, number: int) -> dict | None:
    try:
        found = await resources.vread(conn, res_type, res_id, number, access=Access.system())
    except FhirError:
        return None
    return jsontext.loads(found.content)


async def _meets(conn: AsyncConnection, criteria: str, res_type: str, res_id: str) -> bool:
    """Whether the resource (as it is now) is found by a classic subscription's search: the
    same search engine as `GET [criteria]`, narrowed to this one resource by `_id`."""
    query = parse_qsl(criteria.split("?", 1)[1], keep_blank_values=True) + [("_id", res_id), ("_count", "1")]
    try:
        found = await searching.search(conn, parse_search(res_type, query), access=Access.system())
    except FhirError:
        return False
    return bool(found.matches)


class Sender:
    """Sends what is due, one task per subscription."""

    def __init__(self, database_url: str, settings: Settings, poll_s: float = 0.1) -> None:
        self.database_url = database_url
        self.settings = settings
        self.base = f"{settings.public_base_url()}/fhir"
        self.poll_s = poll_s
        self.last_loop = time.monotonic()
        self.connected = False

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < 30

    def run(self, stop: threading.Event) -> None:
        asyncio.run(self._run(stop))

    async def _run(self, stop: threading.Event) -> None:
        inflight: dict[str, asyncio.Task] = {}
        looking: AsyncConnection | None = None  # the connection that looks for due work, kept open
        next_scan = 0.0  # when to look next for deadlines passed (the time-based topics)
        async with httpx.AsyncClient(timeout=self.settings.subscription_timeout_s, follow_redirects=False,
                                     verify=tls_context(self.settings)) as http:
            while not stop.is_set():
                self.last_loop = time.monotonic()
                for sub_id in [i for i, task in inflight.items() if task.done()]:
                    task = inflight.pop(sub_id)
                    if not task.cancelled() and task.exception() is not None:
                        log.warning("notifier: delivery for a subscription failed: %s",
                                    type(task.exception()).__name__)
                try:
                    if looking is None or looking.closed:
                        looking = await AsyncConnection.connect(self.database_url, autocommit=True,
                                                                connect_timeout=5)
                    if time.monotonic() >= next_scan:
                        next_scan = time.monotonic() + deadlines.SCAN_EVERY_S
                        await self._scan_deadlines(looking)
                    rows = await state.due(looking)
                    self.connected = True
                except psycopg.OperationalError:
                    self.connected = False
                    looking = None
                    rows = []
                for row in rows:
                    if row.id not in inflight:
                        inflight[row.id] = asyncio.create_task(self._serve(http, row))
                await asyncio.sleep(self.poll_s)  # the next look for due work (a poll interval)
            for task in inflight.values():
                task.cancel()
            await asyncio.gather(*inflight.values(), return_exceptions=True)
            if looking is not None:
                await looking.close()

    async def _scan_deadlines(self, conn: AsyncConnection) -> None:
        """The deadline scheduler's pass. A fault in it (other than the database being away,
        which the loop handles) is logged and tried again next minute: it must not stop the
        delivery of everything else. Nothing is lost: an unraised deadline stays unraised."""
        try:
            await deadlines.raise_due(conn, datetime.now(UTC))
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.warning("notifier: the deadline scan failed (%s); trying again next minute", type(exc).__name__)

    async def _serve(self, http: httpx.AsyncClient, row: state.Row) -> None:
        LAG.labels(row.id).set(row.matched - row.judged + row.events_since_start - row.delivered_through)
        async with await AsyncConnection.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            if row.kind == "criteria":
                await self._classic(conn, http, row)
                return
            if row.status == "requested":
                body = notification(self.base, _about(row, row.events_since_start), "handshake", [], "empty")
                await self._post(conn, http, row, body, row.delivered_through, 0, 0, became="active")
                return
            if row.delivered_through < row.events_since_start or row.judged < row.matched:
                await self._events(conn, http, row)
                return
            body = notification(self.base, _about(row, row.events_since_start), "heartbeat", [], "empty")
            await self._post(conn, http, row, body, row.delivered_through, 0, 0)

    async def _events(self, conn: AsyncConnection, http: httpx.AsyncClient, row: state.Row) -> None:
        """Send the numbered events not yet delivered (a retry: judged again, since consent may
        have changed while the endpoint was failing); when there are none, number what may be
        told of the queued events (judged now, with the subscriber's access) and send those."""
        registered = await clients.get_client(conn, row.client_id)
        if registered is not None and not registered.active:
            await self._stop(conn, row, "the subscribing client's registration was revoked")
            return
        access = subscriber_access(row.owner, self.settings.consent_defaults)
        numbered = row.events_since_start
        if row.delivered_through < row.events_since_start:
            pending = await state.events(conn, row.id, row.delivered_through, None, row.max_count)
            events, _ = await as_seen_by(conn, pending, access, row.payload)
            withheld = sum(1 for e in events if not e.shown)
        else:
            events, _, judged_out = await judge(conn, row.id, access, row.max_count, row.payload)
            WITHHELD.labels(row.id).inc(judged_out)
            withheld = 0
            if not events:
                return  # every queued event withheld: nothing to send, and no number taken
            numbered = events[-1].number
        if not events:
            return
        last = max(e.number for e in events)
        shown = sum(1 for e in events if e.shown)
        if not shown:  # numbered, then hidden by a change of consent before it could be sent
            await state.delivered(conn, row.id, last, 0, withheld)
            WITHHELD.labels(row.id).inc(withheld)
            return
        body = notification(self.base, _about(row, max(numbered, last)), "event-notification", events, row.payload)
        await self._post(conn, http, row, body, last, shown, withheld)

    async def _classic(self, conn: AsyncConnection, http: httpx.AsyncClient, row: state.Row) -> None:
        """A classic R4 rest-hook: R4 defines no handshake, so `requested` becomes `active` at
        once; then one event per request, in number order: an empty POST to the endpoint, or the
        resource PUT to `[endpoint]/[type]/[id]` — either only if the subscriber may read it now."""
        if row.status == "requested":
            await state.delivered(conn, row.id, row.delivered_through, 0, 0, status="active")
            await _set_resource_status(conn, row.id, "active", None)
        access = subscriber_access(row.owner, self.settings.consent_defaults)
        if row.delivered_through >= row.events_since_start and row.judged < row.matched:
            _, _, withheld = await judge(conn, row.id, access, 1)
            WITHHELD.labels(row.id).inc(withheld)
        pending = await state.events(conn, row.id, row.delivered_through, None, 1)
        if not pending:
            return
        event = pending[0]
        seen, _ = await as_seen_by(conn, pending, access, row.payload)
        if not seen[0].shown:
            await state.delivered(conn, row.id, event.number, 0, 1)
            WITHHELD.labels(row.id).inc()
            return
        if row.payload == "empty":
            await self._post(conn, http, row, b"", event.number, 1, 0, content_type=None)
        else:
            url = f"{row.endpoint.rstrip('/')}/{event.res_type}/{event.res_id}"
            await self._post(conn, http, row, (seen[0].content or "").encode(), event.number, 1, 0, method="PUT",
                             url=url)

    async def _post(self, conn: AsyncConnection, http: httpx.AsyncClient, row: state.Row, body: bytes,
                    through: int, shown: int, withheld: int, became: str | None = None, *, method: str = "POST",
                    url: str | None = None, content_type: str | None = "application/fhir+json") -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        for line in row.headers:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        try:
            answer = await http.request(method, url or row.endpoint, content=body, headers=headers,
                                        timeout=min(row.timeout_s, MAX_TIMEOUT_S) if row.timeout_s
                                        else self.settings.subscription_timeout_s)
            reason = None if 200 <= answer.status_code < 300 else f"the endpoint answered HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            reason = f"the endpoint could not be reached ({type(exc).__name__})"
        if reason is None:
            await state.delivered(conn, row.id, through, shown, withheld, status=became or "active")
            LAG.labels(row.id).set(max(row.events_since_start - through, 0))
            DELIVERED.labels(row.id).inc(shown)
            WITHHELD.labels(row.id).inc(withheld)
            if became:
                await _set_resource_status(conn, row.id, became, None)
            return
        status = await state.failed(conn, row.id, reason, first_delay_s=self.settings.subscription_retry_first_s,
                                    max_delay_s=self.settings.subscription_retry_max_s,
                                    give_up_s=self.settings.subscription_give_up_s)
        RETRIED.labels(row.id).inc()
        if status == "error":
            FAILED.labels(row.id).inc()
            await _set_resource_status(conn, row.id, "error", reason)
            log.warning("notifier: a subscription went to error: %s", reason)

    async def _stop(self, conn: AsyncConnection, row: state.Row, reason: str) -> None:
        await state.set_state(conn, row.id, status="error", error=reason)
        await _set_resource_status(conn, row.id, "error", reason)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """How the hub speaks TLS to receivers: their certificate checked (against
    HUB_SUBSCRIPTION_TLS_CA, else the system's CAs), and the hub's own client certificate
    offered (HUB_SUBSCRIPTION_TLS_CERT and _KEY) to a receiver that asks for mutual TLS."""
    context = ssl.create_default_context(cafile=str(settings.subscription_tls_ca) if settings.subscription_tls_ca
                                         else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.subscription_tls_cert and settings.subscription_tls_key:
        context.load_cert_chain(str(settings.subscription_tls_cert), str(settings.subscription_tls_key))
    return context


def _about(row: state.Row, events_since_start: int) -> About:
    return About(row.id, row.topic, row.status, events_since_start, row.error)


async def _set_resource_status(conn: AsyncConnection, sub_id: str, status: str, error: str | None) -> None:
    """The stored Subscription says what the hub decided (a new version: active after the
    handshake, error with the reason), so a client reading it sees the same as `$status`."""
    async with conn.transaction():
        try:
            current = await resources.read(conn, "Subscription", sub_id, access=Access.system())
        except FhirError:
            return  # deleted meanwhile
        resource = jsontext.loads(current.content)
        if resource.get("status") == status and resource.get("error") == error:
            return
        resource["status"] = status
        if error:
            resource["error"] = error
        else:
            resource.pop("error", None)
        await resources.update(conn, "Subscription", sub_id, resource, if_match=None, access=Access.system())


class Notifier:
    """`ipc-hub worker notifier`: the matcher on the worker loop (its own thread) and the sender."""

    name = "notifier"

    def __init__(self, bus: BusSettings, database_url: str, settings: Settings) -> None:
        topics = Topics(bus.topic_prefix)
        self.worker = Worker("notifier", bus, topics.record_events, topics.deadletter, Matcher(database_url))
        self.sender = Sender(database_url, settings)

    def alive(self) -> bool:
        return self.worker.alive() and self.sender.alive()

    def ready(self) -> bool:
        return self.worker.ready() and self.sender.connected

    def run(self, stop: threading.Event, group: str) -> None:
        thread = threading.Thread(target=self.worker.run, args=(stop, group), name="notifier-matcher", daemon=True)
        thread.start()
        try:
            self.sender.run(stop)
        finally:
            stop.set()
            thread.join(30)
