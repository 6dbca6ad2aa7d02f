"""The cohort worker: reads the record's change events (hub.bus's worker loop, its own consumer
group) and re-evaluates the approved cohort definitions as the record changes.

An event about a person's record (header `ipc-patient`) re-evaluates every definition for that
person alone; an event about a definition itself (a Group with the definition profile) re-evaluates
that definition for everyone. Events about the cohorts' own Groups and offers lead to no change,
so they end there. Evaluation is idempotent (a person already in a cohort is not entered again),
so a batch delivered twice changes nothing. The database away is `Transient` (the batch is
retried, nothing committed); a definition that cannot be read is logged by id and skipped, never
half-applied, and the events are still committed (re-reading them would not mend it: the
definition's own next version is an event of its own)."""
from __future__ import annotations

import logging

import psycopg

from hub.bus.kafka import BusSettings
from hub.bus.topics import Topics
from hub.bus.worker import Message, Outcome, Transient, Worker
from hub.cohorts.evaluate import approved_definitions, evaluate
from hub.fhir.errors import FhirError

log = logging.getLogger(__name__)


def _touched(batch: list[Message]) -> tuple[set[str], set[str]]:
    """(people whose record changed, Group ids that changed outside any record)."""
    people: set[str] = set()
    groups: set[str] = set()
    for m in batch:
        headers = dict(m.headers)
        patient = headers.get("ipc-patient")
        if patient:
            people.add(patient.decode("utf-8", "replace"))
        elif m.key and m.key.startswith(b"Group/"):
            groups.add(m.key[6:].decode("utf-8", "replace"))
    return people, groups


class CohortHandler:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def __call__(self, batch: list[Message]) -> Outcome:
        people, groups = _touched(batch)
        if not people and not groups:
            return Outcome()
        try:
            async with await psycopg.AsyncConnection.connect(self.database_url, connect_timeout=5) as conn:
                definitions, broken = await approved_definitions(conn)
                await conn.commit()
                if broken.keys() & groups:  # ids stay out of the logs: the definition says why on $evaluate-cohort
                    log.warning("%d changed cohort definitions cannot be evaluated", len(broken.keys() & groups))
                for definition in definitions:
                    scope = None if definition.id in groups else people
                    if scope is not None and not scope:
                        continue
                    try:
                        result = await evaluate(conn, definition, scope)
                    except FhirError:  # a criterion that cannot be evaluated: nothing of it written
                        await conn.rollback()
                        log.warning("a cohort definition could not be evaluated; its cohort is left as it was")
                        continue
                    await conn.commit()
                    if result.entered or result.left:
                        log.info("a cohort changed: %d entered, %d left, %d members",
                                 len(result.entered), len(result.left), result.members)
        except psycopg.OperationalError as exc:
            raise Transient(type(exc).__name__) from None
        return Outcome()


def cohort_worker(bus: BusSettings, database_url: str) -> Worker:
    topics = Topics(bus.topic_prefix)
    return Worker("cohorts", bus, topics.record_events, topics.deadletter, CohortHandler(database_url))
