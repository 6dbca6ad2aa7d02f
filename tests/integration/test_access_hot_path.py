"""What the secured read path does to be cheap must not change what it decides or stores: the
consent predicate carries the caller's organisation as SQL literals (any characters, quotes,
`%` and backslashes included), the audit writer hands arrays to COPY as literals, and audit
record ids are made without asking the kernel for randomness per request."""
from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import AsyncConnection

from hub.api.audit import _from_row, _row
from hub.audit.record import build_record, new_record_id
from hub.fhir.errors import FhirError
from hub.search.access import Access, visible_sql
from hub.store import audit as audit_store
from hub.store import resources

AWKWARD = ("O'Brien %s 100% \\x\\", "a%%b", "plain")
ORG_SYSTEM = "https://example.org/Id/org'%"


def _viewer(org: str, org_system: str | None = ORG_SYSTEM) -> Access:
    return Access(partner_class="charity", org_code=org, org_system=org_system, default_parts=(),
                  scopes={"*": frozenset("cruds")})


async def _seed(url: str, org: str) -> tuple[str, str]:
    """A person with a health Observation that only a charity named `org` may see."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        patient = await resources.create(conn, {"resourceType": "Patient"}, access=Access.system())
        observation = await resources.create(conn, access=Access.system(), resource={
            "resourceType": "Observation", "status": "final", "code": {"text": "weight"},
            "subject": {"reference": f"Patient/{patient.res_id}"}})
        await conn.execute("INSERT INTO consent_grant (consent_id, patient_id, role, org_system, org_code, part, permit) "
                           "VALUES (%s, %s, 'charity', %s, %s, 'health', true)",
                           (f"c-{patient.res_id}", patient.res_id, ORG_SYSTEM, org))
    return patient.res_id, observation.res_id


async def _visible(url: str, viewer: Access, res_id: str) -> bool:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        try:
            await resources.read(conn, "Observation", res_id, access=viewer)
        except FhirError as exc:
            assert exc.status == 404
            return False
    return True


@pytest.mark.parametrize("org", AWKWARD)
def test_a_grant_to_an_organisation_with_awkward_characters_admits_it_and_no_other(pg_url, org):
    _, observation = asyncio.run(_seed(pg_url, org))
    predicate, params = visible_sql(_viewer(org), "r")
    assert params == []  # the viewer's values are literals in the text, not bound per query
    assert asyncio.run(_visible(pg_url, _viewer(org), observation))
    assert not asyncio.run(_visible(pg_url, _viewer(org + "x"), observation))
    assert not asyncio.run(_visible(pg_url, _viewer("plain" if org != "plain" else "other"), observation))


def test_a_viewer_value_no_literal_can_hold_is_bound_instead(pg_url):
    _, observation = asyncio.run(_seed(pg_url, "plain"))
    odd = _viewer("pla\x00in")
    predicate, params = visible_sql(odd, "r")
    assert "pla\x00in" in params and "\x00" not in predicate
    with pytest.raises(psycopg.DataError):  # PostgreSQL refuses NUL in text: an error, never a leak
        asyncio.run(_visible(pg_url, odd, observation))


def test_audit_arrays_with_awkward_characters_round_trip_through_copy(pg_url):
    entities = ['Patient/p1', 'Odd/a"b', 'Odd/c\\d', 'Odd/e,f{g}', 'Odd/tab\there', 'Odd/nl\nhere', 'Odd/NULL']
    record = build_record(method="GET", path="/fhir/Odd/a\tb", query="x=%s&y='\\", status=200,
                          recorded=datetime.now(UTC), address="127.0.0.1",
                          state={"audit_patients": {'p1', 'q"2', ''}, "audit_entities": entities})

    async def scenario() -> tuple:
        store = audit_store.AuditStore(pg_url)
        try:
            await store.write([_row(record)])
            await store.write([_row(record)], retry=True)  # a retried batch is stored once
        finally:
            await store.close()
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return await audit_store.read(conn, record.id)

    stored = _from_row(asyncio.run(scenario()))
    assert stored.patients == record.patients and stored.entities == record.entities
    assert (stored.path, stored.query, stored.recorded) == (record.path, record.query, record.recorded)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM audit_event WHERE id = %s", (record.id,)).fetchone()[0] == 1


def test_record_ids_are_uuids_unique_and_rising_in_a_process_and_fresh_in_a_fork():
    ids = [new_record_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 and str(uuid.UUID(i)) == i for i in ids[:10])
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports its first id and leaves at once
        os.write(write, new_record_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    forked = os.read(read, 64).decode()
    os.close(read)
    assert forked[:24] != ids[0][:24] and forked not in ids
