"""Notification Bundles as the Subscriptions R5 Backport defines them for R4: a `history` Bundle
whose first entry is a `Parameters` in the `backport-subscription-status-r4` profile (the
subscription, its topic and status, the notification type, events-since-subscription-start and
one `notification-event` per event), then the focus resources: none for `empty`, a fullUrl and
request for `id-only`, the resource as well for `full-resource`. `$status` answers a
`searchset` Bundle of status Parameters alone. Pure: the caller decides what each event may
show (hub.subscriptions.delivery reads each focus with the subscriber's own access)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
_STATUS = {"POST": "201", "PUT": "200", "DELETE": "204"}


@dataclass(frozen=True, slots=True)
class Event:
    """One numbered event as the subscriber may see it: `content` (the focus version's JSON text)
    only for full-resource, `shown` False when the subscriber may not read the focus."""

    number: int
    timestamp: datetime
    res_type: str
    res_id: str
    version: int
    method: str  # POST, PUT or DELETE
    shown: bool = True
    content: str | None = None


@dataclass(frozen=True, slots=True)
class About:
    """The subscription a notification speaks for."""

    id: str
    topic: str
    status: str
    events_since_start: int
    error: str | None = None


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_parameters(base: str, about: About, kind: str, events: list[Event], payload: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{about.id}"}},
        {"name": "status", "valueCode": about.status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(about.events_since_start)},
    ]
    if "://" in about.topic:  # a topic canonical (a classic subscription's criteria is not one)
        params.insert(1, {"name": "topic", "valueCanonical": about.topic})
    for event in events:
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(event.number)},
                                       {"name": "timestamp", "valueInstant": _instant(event.timestamp)}]
        if payload != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": f"{base}/{event.res_type}/{event.res_id}"}})
        params.append({"name": "notification-event", "part": parts})
    if about.error:
        params.append({"name": "error", "valueCodeableConcept": {"text": about.error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "meta": {"profile": [STATUS_PROFILE]},
            "parameter": params}


def _status_entry(base: str, about: About, parameters: dict[str, Any], operation: str) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters,
            "request": {"method": "GET", "url": f"{base}/Subscription/{about.id}/{operation}"},
            "response": {"status": "200"}}


def notification(base: str, about: About, kind: str, events: list[Event], payload: str) -> bytes:
    """A notification Bundle (handshake, heartbeat, event-notification or query-event) as JSON.
    Events the subscriber may not see are left out whole: not listed, no focus."""
    shown = [e for e in events if e.shown]
    parameters = status_parameters(base, about, kind, shown, payload)
    entries = [_status_entry(base, about, parameters, "$events" if kind == "query-event" else "$status")]
    if payload != "empty":
        for event in shown:
            method, status = event.method, _STATUS.get(event.method, "200")
            url = f"{event.res_type}/{event.res_id}" if method != "POST" else event.res_type
            entry: dict[str, Any] = {"fullUrl": f"{base}/{event.res_type}/{event.res_id}",
                                     "request": {"method": method, "url": url},
                                     "response": {"status": status,
                                                  "etag": f'W/"{event.version}"'}}
            if payload == "full-resource" and event.content is not None:
                entry["resource"] = orjson.Fragment(event.content)
            entries.append(entry)
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history",
              "timestamp": _instant(datetime.now(UTC)), "entry": entries}
    return orjson.dumps(bundle)


def status_bundle(base: str, abouts: list[About]) -> bytes:
    """`$status`: a searchset of status Parameters, type query-status, one per subscription."""
    entries = []
    for about in abouts:
        parameters = status_parameters(base, about, "query-status", [], "empty")
        entry = _status_entry(base, about, parameters, "$status")
        entry["search"] = {"mode": "match"}
        entries.append(entry)
    return orjson.dumps({"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset",
                         "total": len(entries), "timestamp": _instant(datetime.now(UTC)), "entry": entries})
