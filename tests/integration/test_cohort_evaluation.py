"""Cohort evaluation straight against the store (hub.cohorts.evaluate), for what the pipeline
tests do not reach: criteria over flags and the council's services, the whole-population reading
(hash joins, hub/store/cohorts.py) giving the same people as the few-people reading the change
events use, and the planner left as it was for whatever the transaction runs next."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection

from hub.cohorts.definitions import read_definition
from hub.cohorts.evaluate import evaluate
from hub.cohorts.membership import active_members
from hub.fhir import jsontext
from hub.search.access import Access
from hub.store import batch
from hub.store import cohorts as cohort_queries
from hub.store.resources import read
from tests.pipeline.cohort_cases import FHIRPATH, QUERY, characteristic, definition

FLAGS = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-flag"
SERVICES = "https://ipc-hub.example.org/fhir/CodeSystem/la-service"


def _person(n: int) -> tuple[list[dict], bool]:
    """Person n: every third has an active continuing-healthcare flag (every sixth's is inactive
    instead), every fourth a home care service from the council, every tenth has died."""
    pid = f"ce-{n}"
    subject = {"reference": f"Patient/{pid}"}
    patient = {"resourceType": "Patient", "id": pid, "name": [{"family": f"Crit{n}"}]}
    dead = n % 10 == 0
    if dead:
        patient["deceasedBoolean"] = True
    made = [patient]
    flagged = n % 3 == 0 and n % 6 != 0
    if n % 3 == 0:
        made.append({"resourceType": "Flag", "id": f"{pid}-f", "status": "active" if flagged else "inactive",
                     "code": {"coding": [{"system": FLAGS, "code": "chc"}]}, "subject": subject})
    served = n % 4 == 0
    if served:
        made.append({"resourceType": "ServiceRequest", "id": f"{pid}-s", "status": "active", "intent": "order",
                     "code": {"coding": [{"system": SERVICES, "code": "home-care"}]}, "subject": subject})
    return made, (flagged or served) and not dead


def _definition() -> dict:
    return definition("def-ce", "Continuing healthcare or council home care", [
        characteristic("continuing healthcare flag", FHIRPATH,
                       f"Flag.where(status = 'active' and code.coding.where(system = '{FLAGS}').code = 'chc')"),
        characteristic("home care from the council", QUERY, f"ServiceRequest?code={SERVICES}|home-care&status=active"),
        characteristic("has died", FHIRPATH, "Patient.where(deceased = true)", exclude=True),
    ], combination="any-of")


async def _write(conn: AsyncConnection, resources: list[dict], existing: set | None = None) -> None:
    current = await batch.lock_current(conn, {(r["resourceType"], r["id"]) for r in resources})
    staged = [s for r in resources if (s := batch.stage(r["resourceType"], r["id"], r,
                                                          current.get((r["resourceType"], r["id"])))) is not None]
    await batch.write_staged(conn, staged, set(current))


async def _members(conn: AsyncConnection) -> set[str]:
    found = await read(conn, "Group", "cohort-def-ce", access=Access.system())
    return set(active_members(jsontext.loads(found.content)))


def test_flags_and_council_services_whole_population_and_few_people_agree(clean_db, monkeypatch):
    async def run() -> None:
        async with await AsyncConnection.connect(clean_db) as conn:
            people = [_person(n) for n in range(60)]
            expected = {f"ce-{n}" for n, (_, member) in enumerate(people) if member}
            async with conn.transaction():
                await _write(conn, [r for made, _ in people for r in made])
            group = _definition()
            definition_ = read_definition(group, 1)
            now = datetime.now(UTC)

            async with conn.transaction():
                result = await evaluate(conn, definition_, None, now)   # everyone: the whole-population reading
                # The reading's planner setting is its own: the transaction goes on as before.
                assert (await (await conn.execute("SHOW enable_nestloop")).fetchone())[0] == "on"
            assert set(result.entered) == expected == await _members(conn)
            assert len(result.offers) == len(expected)

            # The flag of a member is ended and a service of a non-member starts: the change
            # event's few people are read one way, everyone the other; both say the same.
            leaving = next(f"ce-{n}" for n in range(60) if n % 3 == 0 and n % 6 != 0 and n % 4 and n % 10)
            joining = next(f"ce-{n}" for n in range(60) if f"ce-{n}" not in expected and n % 10 and n % 4)
            async with conn.transaction():
                await _write(conn, [
                    {"resourceType": "Flag", "id": f"{leaving}-f", "status": "inactive",
                     "code": {"coding": [{"system": FLAGS, "code": "chc"}]},
                     "subject": {"reference": f"Patient/{leaving}"}},
                    {"resourceType": "ServiceRequest", "id": f"{joining}-s", "status": "active", "intent": "order",
                     "code": {"coding": [{"system": SERVICES, "code": "home-care"}]},
                     "subject": {"reference": f"Patient/{joining}"}}])
            later = now + timedelta(minutes=1)
            async with conn.transaction(force_rollback=True):
                monkeypatch.setattr(cohort_queries, "BULK_SCOPE", 0)   # even two people read as a population
                as_population = await evaluate(conn, definition_, {leaving, joining}, later)
                monkeypatch.undo()
                population_members = await _members(conn)
            async with conn.transaction():
                as_few = await evaluate(conn, definition_, {leaving, joining}, later)
            assert (as_population.entered, as_population.left) == (as_few.entered, as_few.left) == ([joining], [leaving])
            assert population_members == await _members(conn) == expected - {leaving} | {joining}
            cancelled = await read(conn, "Task", result.offers[sorted(result.entered).index(leaving)],
                                   access=Access.system())
            assert jsontext.loads(cancelled.content)["status"] == "cancelled"   # the offer not yet made is withdrawn

            # Everyone again: nothing changed, nothing written.
            async with conn.transaction():
                again = await evaluate(conn, definition_, None, later + timedelta(minutes=1))
            assert (again.entered, again.left, again.offers) == ([], [], [])
    asyncio.run(run())
