"""Operations (`/app/operations`, operators only): each feed's messages (received and
acknowledged, refused into the dead-letter topic, last seen), the consumer groups' lag, the dead
letters with their reason and original bytes and a replay button, and the demographic review
queue.

Replay is `hub.bus.replay.replay_dead_letters`, the code `ipc-hub replay --id` runs. Each replay
is noted (who, when), and the page says whether the replayed message has since reached the
record (its envelope named in a Provenance the recorder wrote)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from hub.bus.overview import Overview, overview
from hub.bus.kafka import BusSettings
from hub.bus.replay import replay_dead_letters
from hub.bus.topics import Topics
from hub.store import operations as store
from hub.web.access import posted, require_role, signed_in
from hub.web.context import page_context
from hub.web.errors import PageError
from hub.web.pages import render
from hub.web.worklist import review_queue

router = APIRouter(include_in_schema=False)


def _bus(request: Request) -> tuple[BusSettings, Topics] | None:
    settings = request.app.state.settings
    if not settings.kafka_bootstrap:
        return None
    return BusSettings(bootstrap=settings.kafka_bootstrap, topic_prefix=settings.topic_prefix), Topics(settings.topic_prefix)


@router.get("/app/operations")
async def operations(request: Request) -> Response:
    workspace = await signed_in(request)
    require_role(workspace, "operator")
    bus = _bus(request)
    seen = Overview()
    if bus is not None:
        settings, topics = bus
        seen = await run_in_threadpool(overview, settings, topics, {topics.group("mapper"): topics.inbound,
                                                                    topics.group("recorder"): topics.bundles})
    async with request.app.state.pool.connection() as conn:
        replays = await store.replays(conn)
        landed = await store.envelopes_recorded(conn, sorted({r.envelope_id for r in replays.values()}))
    reviews = await review_queue(workspace.record)
    return render("operations", **page_context(
        workspace, "operations", "Operations", bus=bus is not None, overview=seen, replays=replays, landed=landed,
        reviews=reviews, replayed=request.query_params.get("replayed")))


@router.post("/app/operations/replay")
async def replay(request: Request) -> Response:
    workspace = await signed_in(request)
    fields = await posted(request, workspace)
    require_role(workspace, "operator")
    bus = _bus(request)
    letter_id = fields.get("letter", "")
    if bus is None or not letter_id:
        raise PageError(400, "Nothing to replay", "Choose a dead letter to replay.")
    settings, topics = bus
    replayed = await run_in_threadpool(replay_dead_letters, settings, topics.deadletter, ids={letter_id})
    if letter_id not in replayed:
        raise PageError(404, "Dead letter not found", "That dead letter is no longer on the dead-letter topic.")
    async with request.app.state.pool.connection() as conn:
        await store.note_replay(conn, letter_id, fields.get("envelope", ""), workspace.user.practitioner)
    return RedirectResponse(f"/app/operations?replayed={letter_id}#dead-letters", status_code=303)
