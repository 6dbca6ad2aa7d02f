"""A Subscription as a client writes it, read into what the hub needs to deliver it — or a 422
naming what is wrong. Pure.

The form is the Subscriptions R5 Backport's `backport-subscription` profile for R4:
`criteria` is a SubscriptionTopic canonical (one of hub.subscriptions.topics), with
`backport-filter-criteria` extensions on it (`Type?name=value`); `channel.type` is `rest-hook`
with an http(s) `endpoint` and optional `header`s ("Authorization: Bearer …"); `channel.payload`
is `application/fhir+json` carrying `backport-payload-content` (`empty`, `id-only`,
`full-resource`); `backport-heartbeat-period`, `backport-timeout` and `backport-max-count` on the
channel are honoured. A `criteria` that is a search instead (`CarePlan?status=active`) is a
classic R4 rest-hook subscription."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hub.fhir.errors import FhirError
from hub.fhir.resources import require_supported
from hub.search.parse import parse_search
from hub.subscriptions.topics import BY_URL, TOPICS, Topic

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PROFILE = BACKPORT + "backport-subscription"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
CHANNEL_TYPE = BACKPORT + "backport-channel-type"
PAYLOADS = ("empty", "id-only", "full-resource")
JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class Spec:
    """A topic-based subscription (`topic` set) or a classic R4 one (`criteria` set)."""

    topic: Topic | None
    filters: list[tuple[str, str]]
    endpoint: str
    headers: list[str]
    payload: str
    heartbeat_s: int | None
    timeout_s: int | None
    max_count: int
    criteria: str | None = None

    @property
    def kind(self) -> str:
        return "topic" if self.topic is not None else "criteria"

    @property
    def watched(self) -> str:
        """What the delivery state keeps as its topic: the canonical, or the search criteria."""
        return self.topic.url if self.topic is not None else self.criteria or ""


def _invalid(message: str, expression: str) -> FhirError:
    return FhirError("processing", message, expression=f"Subscription.{expression}", status=422)


def _extensions(element: dict[str, Any] | None, url: str) -> list[dict[str, Any]]:
    return [e for e in (element or {}).get("extension") or [] if e.get("url") == url]


def _one_int(channel: dict[str, Any], url: str, key: str, name: str) -> int | None:
    found = _extensions(channel, url)
    if not found:
        return None
    value = found[0].get(key)
    if not isinstance(value, int) or value < (0 if key == "valueUnsignedInt" else 1):
        raise _invalid(f"the {name} extension needs a {key}", "channel.extension")
    return value


def _filters(resource: dict[str, Any], topic: Topic) -> list[tuple[str, str]]:
    pairs = []
    for i, ext in enumerate(_extensions(resource.get("_criteria"), FILTER_CRITERIA)):
        text = ext.get("valueString")
        where = f"criteria.extension[{i}]"
        if not isinstance(text, str) or "?" not in text:
            raise _invalid("a filter-criteria extension needs a valueString of the form "
                           f"{topic.resource_type}?name=value", where)
        res_type, query = text.split("?", 1)
        if res_type != topic.resource_type:
            raise _invalid(f"topic {topic.name} is about {topic.resource_type}, not {res_type}", where)
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name not in topic.filters:
                raise _invalid(f"topic {topic.name} can be filtered by {', '.join(topic.filters)} only; "
                               f"not by '{name}'", where)
            if not value:
                raise _invalid(f"filter '{name}' has no value", where)
            pairs.append((name, value))
    return pairs


_SEARCH = re.compile(r"^[A-Z][A-Za-z]+\?.*$")


def _channel(resource: dict[str, Any], allow_http: bool) -> tuple[dict[str, Any], str, list[str]]:
    channel = resource.get("channel") or {}
    if channel.get("type") != "rest-hook" or _extensions(channel.get("_type"), CHANNEL_TYPE):
        raise _invalid("only the rest-hook channel is offered", "channel.type")
    endpoint = channel.get("endpoint") or ""
    scheme = urlsplit(endpoint).scheme
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise _invalid("channel.endpoint must be an https URL" + (" (or http)" if allow_http else ""),
                       "channel.endpoint")
    headers = channel.get("header") or []
    for i, header in enumerate(headers):
        name, sep, value = header.partition(":")
        if not sep or not name.strip() or any(ch in header for ch in "\r\n"):
            raise _invalid("each channel.header is one 'Name: value' line", f"channel.header[{i}]")
    return channel, endpoint, list(headers)


def read_spec(resource: dict[str, Any], *, allow_http: bool) -> Spec:
    """What a Subscription asks for, or a 422 FhirError naming the element that is wrong."""
    criteria = resource.get("criteria") or ""
    topic = BY_URL.get(criteria)
    if topic is None and _SEARCH.match(criteria) and not _extensions(resource.get("_criteria"), FILTER_CRITERIA):
        return _classic(resource, criteria, allow_http)
    if topic is None:
        known = ", ".join(t.url for t in TOPICS)
        raise _invalid("criteria must be the canonical URL of a SubscriptionTopic this hub publishes "
                       f"(topic-based, Subscriptions R5 Backport; one of: {known}) or a search "
                       "(`Type?name=value`, a classic R4 subscription)", "criteria")
    channel, endpoint, headers = _channel(resource, allow_http)
    contents = _extensions(channel.get("_payload"), PAYLOAD_CONTENT)
    if not contents or contents[0].get("valueCode") not in PAYLOADS:
        raise _invalid("channel.payload needs the backport-payload-content extension with valueCode "
                       "empty, id-only or full-resource", "channel.payload")
    if channel.get("payload") != JSON:
        raise _invalid(f"notifications are sent as {JSON}: channel.payload must say so", "channel.payload")
    return Spec(topic=topic, filters=_filters(resource, topic), endpoint=endpoint, headers=headers,
                payload=contents[0]["valueCode"],
                heartbeat_s=_one_int(channel, HEARTBEAT_PERIOD, "valueUnsignedInt", "heartbeat-period"),
                timeout_s=_one_int(channel, TIMEOUT, "valueUnsignedInt", "timeout"),
                max_count=_one_int(channel, MAX_COUNT, "valuePositiveInt", "max-count") or 20)


def _classic(resource: dict[str, Any], criteria: str, allow_http: bool) -> Spec:
    """A classic R4 rest-hook: `criteria` a search the hub runs as any search (strict: an unknown
    parameter is refused); no `channel.payload` → an empty POST to the endpoint, or
    `application/fhir+json` → the resource PUT to `[endpoint]/[type]/[id]`."""
    res_type, query = criteria.split("?", 1)
    try:
        require_supported(res_type)
        parse_search(res_type, parse_qsl(query, keep_blank_values=True), strict=True)
    except FhirError as exc:
        raise _invalid(f"criteria is not a search the hub can run: {exc.issues[0].diagnostics}", "criteria") from None
    channel, endpoint, headers = _channel(resource, allow_http)
    payload = channel.get("payload")
    if payload not in (None, JSON):
        raise _invalid(f"a classic subscription's payload is absent (an empty POST) or {JSON}", "channel.payload")
    return Spec(topic=None, filters=[], endpoint=endpoint, headers=headers,
                payload="empty" if payload is None else "full-resource", heartbeat_s=None, timeout_s=None,
                max_count=1, criteria=criteria)
