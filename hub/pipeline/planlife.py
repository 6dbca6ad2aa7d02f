"""The plan worker (`ipc-hub worker plans`): what happens to a plan after it is written, and the
reviews that fall due with time.

- **Follow-ups.** Every write of a plan, a budget statement, a meeting about a plan or an outcome
  response queues a row in `plan_followup` in its own transaction, on every write path
  (hub.store.plans), and wakes the workers with NOTIFY at commit. A worker takes rows with
  `FOR UPDATE SKIP LOCKED` and holds a per-plan advisory lock while it reads the plan and all that
  hangs off it and writes what hub.plans.followups and hub.plans.outcomes say (sign-off
  requests, withdrawal Flags, the effect of a review meeting, a replaced plan closed, outcome
  Observations), so several workers on several machines never handle one plan at once, and a
  row is gone only when its work commits.
- **References to what a client deleted.** Every delete a client makes is queued in the same
  queue (hub.store.integrity); the worker raises a review Task wherever a resource hidden from
  that client still refers to what it deleted (hub.pipeline.dangling).
- **Look-alike people.** Woken by the NOTIFY an API write of a new Patient sends (and on every
  loop), the worker runs the identity review pass (hub.pipeline.lookalikes) until no new person
  is left unscored, so a look-alike created over the API gets its review Task with no feed
  traffic; passes are serialised, so each is raised once however many workers run.
- **Reviews.** Every `HUB_PLAN_WORKER_INTERVAL_S` (and whenever woken), agreed plans whose next
  review date is within `HUB_REVIEW_TASK_LEAD_DAYS` get a review Task for their coordinator, and
  active EHC plans their annual review Task for the council (hub.plans.ehc). The
  (plan, due date) is claimed in `plan_review_raised` (primary key) in the transaction that
  writes the Task: however many schedulers run at once, each review is raised exactly once.
- **Growing up.** In the same sweep, every child or young person with an EHC plan or in
  children's continuing care, and every assessed young carer, gets the growing-up steps whose day has come (hub.plans.growing_up):
  transition Tasks and, at 18, the adult plan replacing the child's. Each (person, step) is
  claimed in `child_transition_raised` in the transaction that writes it: raised exactly once.

Everything the worker writes goes through the store as the hub's own work (`Access.system()`),
passing every rule a write passes, with a Provenance naming the plan worker and the versions
its conclusion derives from."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection

from hub.audit.provenance import agent, build
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.validation import load_guide
from hub.pipeline import dangling
from hub.pipeline.lookalikes import review_all
from hub.plans import followups as plan_followups
from hub.plans import ehc, growing_up, outcomes, reviews
from hub.fhir.ages import parse_birth_date
from hub.plans.model import CARE_PLAN, CS, PLAN, SD, extensions, next_review, value
from hub.search.access import Access
from hub.store import followups as queue
from hub.store import resources as store
from hub.store.people import REVIEW_CHANNEL
from hub.store.plans import FOLLOWUP_CHANNEL
from hub.store.resources import UNCHANGED, Version

log = logging.getLogger(__name__)
WORKER = "IPC Hub plan worker"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class PlanWorker:
    """Runs follow-ups and the review schedule until stopped (a thread of `ipc-hub up`, or its
    own process: `ipc-hub worker plans`)."""

    name = "plans"

    def __init__(self, database_url: str, *, lead_days: int = 28, interval_s: float = 60.0,
                 batch: int = 100) -> None:
        self.database_url = database_url
        self.lead_days = lead_days
        self.interval_s = interval_s
        self.batch = batch
        self.last_loop = time.monotonic()
        self.connected = False

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < max(30.0, 3 * self.interval_s)

    def ready(self) -> bool:
        return self.alive() and self.connected

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        asyncio.run(self._run(stop, once))

    async def _run(self, stop: threading.Event, once: bool) -> None:
        delay = 0.05
        while not stop.is_set():
            try:
                await self._serve(stop, once)
                return
            except psycopg.OperationalError as exc:
                self.connected = False
                if once:
                    raise
                log.warning("plan worker: database unavailable (%s); retrying in %.2f s", type(exc).__name__, delay)
                if stop.wait(delay):   # the worker's own thread: waiting here holds up nothing else
                    return
                delay = min(delay * 2, 5.0)

    async def _serve(self, stop: threading.Event, once: bool) -> None:
        async with await AsyncConnection.connect(self.database_url, autocommit=True, connect_timeout=5) as listen, \
                await AsyncConnection.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            await listen.execute(f"LISTEN {FOLLOWUP_CHANNEL}")
            await listen.execute(f"LISTEN {REVIEW_CHANNEL}")
            self.connected = True
            log.info("plan worker: waiting for plan follow-ups; looking for reviews due every %.0f s", self.interval_s)
            next_sweep = 0.0
            while not stop.is_set():
                self.last_loop = time.monotonic()
                await self.follow_up(conn)
                await review_all(conn, stop)   # look-alike people created over the API (hub.pipeline.lookalikes)
                if once or time.monotonic() >= next_sweep:
                    await self.raise_reviews(conn, reviews.today())
                    await self.raise_growing_up(conn, reviews.today())
                    next_sweep = time.monotonic() + self.interval_s
                if once:
                    await self.follow_up(conn)   # what raising reviews queued
                    return
                # Sleep until a write wakes us, the next sweep, or a second (to notice `stop`).
                wait = max(0.0, min(1.0, next_sweep - time.monotonic()))
                async for _ in listen.notifies(timeout=wait, stop_after=1):
                    pass

    # --- follow-ups -------------------------------------------------------------------------------

    async def follow_up(self, conn: AsyncConnection) -> int:
        """Handle queued follow-ups until the queue is empty; the number handled."""
        handled = 0
        while True:
            async with conn.transaction():
                keys = await queue.claim(conn, self.batch)
                for res_type, res_id in keys:
                    try:
                        async with conn.transaction():
                            await self._one(conn, res_type, res_id)
                    except FhirError as error:
                        # A rule refused what the worker concluded: nothing is written for this
                        # one, and the next write of the plan tries again.
                        log.warning("plan follow-up of %s/%s refused: %s", res_type, res_id,
                                    error.issues[0].diagnostics)
            handled += len(keys)
            if keys:
                log.info("plan worker: %d follow-ups handled", len(keys))
            if len(keys) < self.batch:
                return handled

    async def _one(self, conn: AsyncConnection, res_type: str, res_id: str) -> None:
        deleted = await dangling.deleted_version(conn, res_type, res_id)
        if deleted is not None:   # a client's delete: what still refers to it (hub.pipeline.dangling)
            await dangling.review_deleted(conn, res_type, res_id, deleted)
        elif res_type == "QuestionnaireResponse":
            await self._outcomes(conn, res_id)
        elif res_type == "Encounter":
            meeting = await queue.content(conn, "Encounter", res_id)
            plan_ref = value(extensions(meeting, CARE_PLAN)[0]) if meeting and extensions(meeting, CARE_PLAN) else None
            plan_id = str((plan_ref or {}).get("reference", "")).removeprefix("CarePlan/")
            if plan_id and "/" not in plan_id:
                await self._plan(conn, plan_id, meeting=res_id)
        elif res_type == "CarePlan":
            await self._plan(conn, res_id)

    async def _plan(self, conn: AsyncConnection, plan_id: str, *, meeting: str | None = None) -> None:
        await queue.lock_plan(conn, plan_id)
        state = await queue.plan_state(conn, plan_id)
        if state is None:
            return
        now, grounds = _now(), [_version_of("CarePlan", plan_id, state.plan)]
        written: list[Version] = []
        if meeting is not None:
            grounds.append(_version_of("Encounter", meeting, state.encounters.get(meeting)))
            for resource in plan_followups.review_held(state, meeting, now):
                version = await _write(conn, resource)
                if version is None:
                    continue
                written.append(version)
                if resource["resourceType"] == "CarePlan":
                    state.plan = _stored(version)
                else:
                    state.tasks[resource["id"]] = _stored(version)
        today = reviews.today().isoformat()
        for resource in [*plan_followups.signoff_requests(state, now), *plan_followups.withdrawal_flags(state, now),
                         *plan_followups.stale_reviews(state, now), *plan_followups.superseded(state, today)]:
            version = await _write(conn, resource)
            if version is not None:
                written.append(version)
        await _attribute(conn, written, grounds)

    async def _outcomes(self, conn: AsyncConnection, response_id: str) -> None:
        response = await queue.content(conn, "QuestionnaireResponse", response_id)
        if response is None:
            return
        url = str(response.get("questionnaire", "")).split("|")[0]
        questionnaire = load_guide().questionnaires.get(url)
        written = [v for v in [await _write(conn, o) for o in outcomes.observations(response, response_id, questionnaire)]
                   if v is not None]
        await _attribute(conn, written, [_version_of("QuestionnaireResponse", response_id, response)])

    # --- reviews ----------------------------------------------------------------------------------

    async def raise_reviews(self, conn: AsyncConnection, day: Any) -> int:
        """Raise the review Task of every agreed plan whose next review is due within the lead
        time and not yet raised; the number this scheduler raised."""
        until = day + timedelta(days=self.lead_days + 1)
        raised = 0
        due_plans = [(p, c, reviews.review_task) for p, c in await queue.due_for_review(conn, until)]
        due_plans += [(p, c, ehc.annual_review_task) for p, c in await queue.ehc_due_for_review(conn, until)]
        for plan_id, plan, make_task in due_plans:
            due = reviews.as_day(next_review(plan))
            if due is None or not reviews.is_due(next_review(plan), self.lead_days, day):
                continue
            task = make_task(plan, plan_id, due.isoformat(), _now())
            async with conn.transaction():
                if not await queue.claim_review(conn, plan_id, due, task["id"]):
                    continue   # another scheduler raised it
                version = await _write(conn, task)
                await _attribute(conn, [version] if version else [], [_version_of("CarePlan", plan_id, plan)])
            raised += 1
        if raised:
            log.info("plan worker: %d review tasks raised", raised)
        return raised

    # --- growing up -------------------------------------------------------------------------------

    async def raise_growing_up(self, conn: AsyncConnection, day: Any) -> int:
        """Raise every growing-up step whose day has come and that was never raised, for children
        with an EHC plan and young carers; the number this scheduler raised."""
        raised = 0
        people = [(pid, born, growing_up.CHILD) for pid, born in await queue.children(conn)]
        people += [(pid, born, growing_up.YOUNG_CARER) for pid, born in
                   await queue.young_carers(conn, SD + "carer-own-record", SD + "carer-type")]
        recorded_by: dict[str, dict[str, Any] | None] = {}
        for pid, born, author in await queue.in_continuing_care(conn, CS + "ipc-flag", growing_up.CONTINUING_CARE_FLAG):
            people.append((pid, born, growing_up.CONTINUING_CARE))
            recorded_by[pid] = author
        done = await queue.steps_raised(conn)
        for patient_id, birth_date, who in people:
            born = parse_birth_date(birth_date)
            if born is None:
                continue   # no age-based step is decided without a full birth date
            due = {s.code for s in growing_up.due_steps(born, day, who)}
            if who == growing_up.CHILD and growing_up.adult_plan_due(born, day):
                due.add(growing_up.ADULT_PLAN)
            if due <= done.get(patient_id, set()):
                continue   # everything due is raised: no need to read their plans
            raised += await self._raise_steps(conn, patient_id, born, who, day, recorded_by.get(patient_id))
        if raised:
            log.info("plan worker: %d growing-up steps raised", raised)
        return raised

    async def _raise_steps(self, conn: AsyncConnection, patient_id: str, born: Any, who: str, day: Any,
                           recorded_by: dict[str, Any] | None = None) -> int:
        """`recorded_by`: for a child in continuing care, who recorded it (their check's owner)."""
        person = f"Patient/{patient_id}"
        ehc_plans = await queue.open_plans_of(conn, patient_id, ehc.EHC)
        child_plans = await queue.open_plans_of(conn, patient_id, PLAN)
        about_the_plan = ehc_plans and who in (growing_up.CHILD, growing_up.CONTINUING_CARE)
        focus = f"CarePlan/{ehc_plans[0][0]}" if about_the_plan else None
        owner = ehc_plans[0][1].get("author") if about_the_plan else None
        if who == growing_up.CONTINUING_CARE and recorded_by:
            owner = recorded_by
        writes: list[tuple[str, dict[str, Any], list[str | None]]] = []
        for step in growing_up.due_steps(born, day, who):
            task = growing_up.transition_task(step, person, born, _now(), focus=focus, owner=owner)
            writes.append((step.code, task, [_version_of("CarePlan", ehc_plans[0][0], ehc_plans[0][1])
                                             if ehc_plans else None]))
        if who == growing_up.CHILD and child_plans and growing_up.adult_plan_due(born, day):
            child_id, child_plan = next(((i, p) for i, p in child_plans if "ipc-adult" not in str(p.get("category"))),
                                        (None, None))
            if child_id is not None:
                adult = growing_up.adult_plan(child_plan, child_id, born, ehc_plans[0][0] if ehc_plans else None)
                writes.append((growing_up.ADULT_PLAN, adult, [_version_of("CarePlan", child_id, child_plan)]))
        raised = 0
        for step_code, resource, grounds in writes:
            try:
                async with conn.transaction():
                    if not await queue.claim_step(conn, patient_id, step_code,
                                                  f"{resource['resourceType']}/{resource['id']}"):
                        continue   # raised before (by this or another scheduler)
                    version = await _write(conn, resource)
                    await _attribute(conn, [version] if version else [], grounds)
                raised += 1
            except FhirError as error:
                # A rule refused it (e.g. the person's plans changed): nothing is claimed, the
                # next sweep tries again.
                log.warning("growing-up step %s for %s refused: %s", step_code, person, error.issues[0].diagnostics)
        return raised


def _version_of(res_type: str, res_id: str, resource: dict[str, Any] | None) -> str | None:
    version = ((resource or {}).get("meta") or {}).get("versionId")
    return f"{res_type}/{res_id}/_history/{version}" if version else None


def _stored(version: Version) -> dict[str, Any]:
    return jsontext.loads(version.content)


async def _write(conn: AsyncConnection, resource: dict[str, Any]) -> Version | None:
    version, _ = await store.update(conn, resource["resourceType"], resource["id"], resource,
                                    skip_unchanged=True, access=Access.system())
    return None if version.method == UNCHANGED else version


async def _attribute(conn: AsyncConnection, written: list[Version], grounds: list[str | None]) -> None:
    """One Provenance for what the worker wrote: the plan worker as assembler, and the versions
    (the plan, the meeting, the response) its conclusion derives from, whose own Provenance says
    who wrote them."""
    if not written:
        return
    record = build([f"{v.res_type}/{v.res_id}/_history/{v.version}" for v in written], "UPDATE",
                   [agent("assembler", {"display": WORKER})])
    found = sorted({g for g in grounds if g})
    if found:
        record["entity"] = [{"role": "derivation", "what": {"reference": g}} for g in found]
    await _write(conn, record)
