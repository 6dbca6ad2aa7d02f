"""What the core does differently for Subscription: a Subscription belongs to the client that
wrote it, and a client sees, changes and deletes only its own (another's answers 404, as an
absent one does); each write is read as a topic-based subscription (hub.subscriptions.requests:
422 naming the element when it is not one the hub can deliver) and its delivery state kept
beside it (hub.store.subscriptions), in the same transaction.

The status a client writes is a request: `requested` or `active` become `requested` until the
handshake succeeds (then the delivery worker makes it `active`); `off` stops delivery. The
endpoint's headers (a bearer token for the receiver) are kept in the delivery state only; the
stored resource says `header` values are withheld, so no history, search or export shows them."""
from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection

from hub.fhir.errors import FhirError, not_found
from hub.interactions.context import Context, FhirRequest
from hub.search.access import Access
from hub.store import resources
from hub.store import subscriptions as state
from hub.subscriptions.requests import Spec, read_spec

TYPE = "Subscription"
HIDDEN_HEADER = "withheld: the hub keeps channel headers for delivery only"


def _client(ctx: Context) -> str | None:
    return None if ctx.access.trusted else (ctx.principal.client_id if ctx.principal is not None else None)


def _owner(ctx: Context) -> state.Owner:
    p = ctx.principal
    if p is None:  # authorisation switched off: the hub's own
        return state.Owner("system", "system", "", "", ("system/*.cruds",))
    return state.Owner(p.client_id, p.partner_class, p.organisation, p.organisation_system, tuple(sorted(p.scopes)))


async def guard(ctx: Context, interaction: str, res_id: str | None, request: FhirRequest) -> None:
    """Before a Subscription interaction runs: refuse what would show or touch another client's."""
    client = _client(ctx)
    if client is None and ctx.access.trusted:
        return
    if interaction == "history-type":
        raise FhirError("not-supported", "type history of Subscription is not offered (a client sees only "
                        "its own Subscriptions: read the history of each one)", status=405)
    if interaction == "search-type":
        async with ctx.reading() as conn:
            owned = await state.owned_ids(conn, client or "")
        request.query.append(("_id", ",".join(owned) or f"none-{uuid.uuid4().hex}"))
        return
    if res_id is None:
        return
    async with ctx.reading() as conn:
        owner = await state.owner_of(conn, res_id)
        if owner is None and interaction == "update" and await resources.current_version(
                conn, TYPE, res_id, access=Access.system()) is None:
            return  # update-as-create: a new Subscription, this client's
    if owner != client:
        raise not_found(TYPE, res_id)


def prepare(ctx: Context, resource: dict[str, Any], previous_status: str | None) -> Spec:
    """Read the Subscription (422 if the hub cannot deliver it) and set the status the hub keeps."""
    spec = read_spec(resource, allow_http=ctx.settings.subscription_allow_http)
    asked = resource.get("status")
    if asked not in ("requested", "active", "off"):
        raise FhirError("processing", "a client asks for status requested (or active) or off; error is the "
                        "hub's to set", expression="Subscription.status", status=422)
    if asked == "off":
        resource["status"] = "off"
    else:
        resource["status"] = "active" if asked == "active" and previous_status == "active" else "requested"
    channel = resource.get("channel") or {}
    if channel.get("header"):
        channel["header"] = [HIDDEN_HEADER]
    return spec


async def previous_status(conn: AsyncConnection, res_id: str) -> str | None:
    row = await state.get(conn, res_id)
    return row.status if row else None


async def keep(conn: AsyncConnection, ctx: Context, res_id: str, resource: dict[str, Any], spec: Spec,
               headers: list[str] | None) -> None:
    """The delivery state beside the Subscription just written (same transaction). A rewrite
    that sends no new headers keeps the ones the hub holds."""
    if headers is None:
        row = await state.get(conn, res_id)
        headers = row.headers if row else []
    await state.save(conn, res_id, _owner(ctx), topic=spec.watched, filters=spec.filters, endpoint=spec.endpoint,
                     headers=headers, payload=spec.payload, heartbeat_s=spec.heartbeat_s, max_count=spec.max_count,
                     status=resource["status"], kind=spec.kind, timeout_s=spec.timeout_s)


def sent_headers(resource: dict[str, Any]) -> list[str] | None:
    """The headers a client sent (None when it sent only the withheld marker back)."""
    headers = (resource.get("channel") or {}).get("header") or []
    if headers == [HIDDEN_HEADER]:
        return None
    return list(headers)


async def forget(conn: AsyncConnection, res_id: str) -> None:
    """A deleted Subscription is told nothing more; its numbered events go with it."""
    await state.remove(conn, res_id)
