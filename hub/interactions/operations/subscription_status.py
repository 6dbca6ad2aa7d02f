"""Subscription/[id]/$status and Subscription/$status (Subscriptions R5 Backport): the state of
the caller's own subscriptions — status, topic, events-since-subscription-start and any error —
as a searchset of `backport-subscription-status-r4` Parameters (type `query-status`). A client
sees only its own: another's id answers as absent."""
from __future__ import annotations

from hub.fhir.errors import not_found
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, parameters
from hub.store import subscriptions as state
from hub.subscriptions.notification import About, status_bundle

DEFINITION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"


def about(row: state.Row) -> About:
    return About(row.id, row.topic, row.status, row.events_since_start, row.error)


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    ctx.access.require("Subscription", "r")
    pairs, _ = parameters(request)
    ids = [res_id] if res_id else [i.strip() for k, v in pairs if k == "id" for i in v.split(",") if i.strip()]
    statuses = {s.strip() for k, v in pairs if k == "status" for s in v.split(",") if s.strip()}
    client = None if ctx.access.trusted else (ctx.principal.client_id if ctx.principal else None)
    async with ctx.reading() as conn:
        if ids:
            rows = [row for i in ids if (row := await state.get(conn, i)) is not None]
        else:
            rows = await state.listed(conn)
    rows = [r for r in rows if (client is None and ctx.access.trusted) or r.client_id == client]
    if res_id and not rows:
        raise not_found("Subscription", res_id)
    if statuses:
        rows = [r for r in rows if r.status in statuses]
    return Outcome(200, body=status_bundle(ctx.base, [about(r) for r in rows]))


OPERATION = Operation(
    name="status", definition=DEFINITION, levels=frozenset({"type", "instance"}), run=run,
    types=frozenset({"Subscription"}),
    documentation="The status of the caller's own subscriptions (type level: `id` and `status` to narrow).")
