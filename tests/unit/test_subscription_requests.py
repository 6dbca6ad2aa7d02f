"""Reading a Subscription into what the hub delivers (hub.subscriptions.requests), and the
notification Bundle's shape (hub.subscriptions.notification). Pure."""
from __future__ import annotations

from datetime import UTC, datetime

import orjson

from hub.subscriptions.notification import About, Event, notification
from hub.subscriptions.requests import BACKPORT, read_spec

TOPIC = "https://ipc-hub.example.org/fhir/SubscriptionTopic/mod-handover-received"


def test_backport_extensions_are_read():
    spec = read_spec({
        "resourceType": "Subscription", "status": "requested", "criteria": TOPIC,
        "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                     "valueString": "Task?owner=Organization/gp-1"}]},
        "channel": {"type": "rest-hook", "endpoint": "https://gp.example.org/hook",
                    "header": ["Authorization: Bearer x"], "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}]},
                    "extension": [{"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 120},
                                  {"url": BACKPORT + "backport-max-count", "valuePositiveInt": 5}]},
    }, allow_http=False)
    assert spec.topic.name == "mod-handover-received"
    assert spec.filters == [("owner", "Organization/gp-1")]
    assert (spec.payload, spec.heartbeat_s, spec.max_count) == ("id-only", 120, 5)


def test_withheld_events_leave_no_trace_in_the_notification():
    moment = datetime(2026, 5, 1, tzinfo=UTC)
    events = [Event(7, moment, "CarePlan", "a", 2, "PUT", shown=True, content='{"resourceType":"CarePlan","id":"a"}'),
              Event(8, moment, "CarePlan", "b", 1, "POST", shown=False)]
    bundle = orjson.loads(notification("https://hub/fhir", About("s1", TOPIC, "active", 8), "event-notification",
                                       events, "full-resource"))
    assert bundle["type"] == "history"
    params = bundle["entry"][0]["resource"]
    numbers = [p["part"][0]["valueString"] for p in params["parameter"] if p["name"] == "notification-event"]
    assert numbers == ["7"]
    assert [e["fullUrl"] for e in bundle["entry"][1:]] == ["https://hub/fhir/CarePlan/a"]
    assert "CarePlan/b" not in orjson.dumps(bundle).decode()
