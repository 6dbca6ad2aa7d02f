"""Subscription/[id]/$events (Subscriptions R5 Backport): the subscription's numbered events
again, to catch up after a gap or an `error` — a `history` Bundle of type `query-event`, shaped
as a notification. `eventsSinceNumber` and `eventsUntilNumber` (both inclusive) choose the
range, `content` the payload (the subscription's own by default).

Events still queued unnumbered (a subscription in `error` stops being sent to, so what matched
before is judged here) are first judged as the notifier would, with the subscribing client's
own access: those it may read take their numbers, the rest are withheld without one. Then each
numbered event in the range is judged again with the caller's access at the moment of asking:
what it may not read now is left out, even if it was delivered before."""
from __future__ import annotations

from hub.fhir.errors import FhirError, not_found
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, first, parameters
from hub.interactions.operations.subscription_status import about
from hub.store import subscriptions as state
from hub.subscriptions.disclose import as_seen_by, judge, subscriber_access
from hub.subscriptions.notification import notification
from hub.subscriptions.requests import PAYLOADS

DEFINITION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events"
MAX_EVENTS = 1000


def _number(pairs: list[tuple[str, str]], name: str) -> int | None:
    raw = first(pairs, name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise FhirError("invalid", f"{name} must be a positive event number, not '{raw[:40]}'", status=400)
    return int(raw)


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_id is not None
    ctx.access.require("Subscription", "r")
    pairs, _ = parameters(request)
    since = _number(pairs, "eventsSinceNumber")
    until = _number(pairs, "eventsUntilNumber")
    content = first(pairs, "content")
    if content is not None and content not in PAYLOADS:
        raise FhirError("invalid", "content must be empty, id-only or full-resource", status=400)
    async with ctx.writing() as conn:
        row = await state.get(conn, res_id)
        if row is None:
            raise not_found("Subscription", res_id)
        if row.judged < row.matched:
            await judge(conn, res_id, subscriber_access(row.owner, ctx.settings.consent_defaults), MAX_EVENTS)
            row = await state.get(conn, res_id) or row
        payload = content or row.payload
        rows = await state.events(conn, res_id, max((since or 1) - 1, 0), until, MAX_EVENTS)
        events, disclosed = await as_seen_by(conn, rows, ctx.access, payload)
    ctx.touched += disclosed
    return Outcome(200, body=notification(ctx.base, about(row), "query-event", events, payload))


OPERATION = Operation(
    name="events", definition=DEFINITION, levels=frozenset({"instance"}), run=run,
    types=frozenset({"Subscription"}),
    documentation="The subscription's numbered events (eventsSinceNumber, eventsUntilNumber, content), "
                  f"at most {MAX_EVENTS} per call, each only if the caller may read its focus now.")
