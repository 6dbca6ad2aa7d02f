"""The recorder step: mapped Bundles → the shared record, in one database transaction per
polled batch (a savepoint per message, so one bad message is dead-lettered alone).

For each message: resolve who each Patient is (hub.identity), point the Bundle's references at
the shared-record Patient, write every resource with update(skip_unchanged) under its
deterministic id (a replay writes nothing), and write one Provenance naming the source system
and the envelope for the versions written. Change events come from the outbox rows each write
adds. The worker loop commits Kafka offsets only after this transaction has committed."""
from __future__ import annotations

import asyncio
import logging
import zlib
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from hub.bus.envelope import Envelope, EnvelopeError, from_record
from hub.bus.worker import Message, Outcome, Rejected, Transient
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import ENVELOPE, SOURCE_SYSTEM
from hub.fhir.ids import derived_id
from hub.fhir.references import repoint
from hub.identity import matching
from hub.store import people, repository
from hub.store.repository import UNCHANGED, Version

log = logging.getLogger(__name__)

_TRANSIENT = (psycopg.OperationalError, psycopg.errors.SerializationFailure,
              psycopg.errors.DeadlockDetected)


class Recorder:
    """The recorder's handler for hub.bus.worker.Worker. A batch is split into lanes by person
    key, each recorded in order on a connection of its own, the lanes concurrently: one
    person's messages stay in order, and the database is kept busy instead of waiting on one
    connection's round trips (profiled: one connection left the recorder idle half the time).
    Connections are reopened after the database comes back."""

    def __init__(self, database_url: str, lanes: int = 4) -> None:
        self.database_url = database_url
        self.lanes = lanes
        self._conns: dict[int, AsyncConnection] = {}

    async def __call__(self, batch: list[Message]) -> Outcome:
        lanes: dict[int, list[Message]] = {}
        for message in batch:
            lanes.setdefault(zlib.crc32(message.key or b"") % self.lanes, []).append(message)
        results = await asyncio.gather(*(self._record(lane, msgs) for lane, msgs in lanes.items()),
                                       return_exceptions=True)
        outcome = Outcome()
        for result in results:
            if isinstance(result, _TRANSIENT):
                await self._drop_all()
                raise Transient(type(result).__name__) from None
            if isinstance(result, BaseException):
                raise result
            outcome.rejected += result.rejected
        try:
            await self._review()
        except _TRANSIENT as exc:
            await self._drop_all()
            raise Transient(type(exc).__name__) from None
        return outcome

    async def _review(self) -> None:
        conn = self._conns.get(0)
        if conn is None or conn.closed:
            conn = self._conns[0] = await AsyncConnection.connect(self.database_url, connect_timeout=5)
        async with conn.transaction():
            await review_pass(conn)

    async def _record(self, lane: int, batch: list[Message]) -> Outcome:
        conn = self._conns.get(lane)
        if conn is None or conn.closed:
            conn = self._conns[lane] = await AsyncConnection.connect(self.database_url, connect_timeout=5)
        return await record_batch(conn, batch)

    async def _drop_all(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            try:
                await conn.close()
            except psycopg.Error:
                pass


async def record_batch(conn: AsyncConnection, batch: list[Message]) -> Outcome:
    """Record a lane's messages in one transaction. Bundles are written together (record_together:
    a few statements for the whole batch); if that fails, or a merge is among them, each message
    is recorded alone in a savepoint, so one bad message is still dead-lettered alone."""
    outcome = Outcome()
    decoded: list[tuple[Message, Envelope, dict[str, Any]]] = []
    for message in batch:
        try:
            envelope, document = _decode(message)
            if document.get("resourceType") == "Bundle":
                _resources(document)
            decoded.append((message, envelope, document))
        except FhirError as error:
            issue = error.issues[0]
            outcome.rejected.append(Rejected(message, issue.code, issue.diagnostics, "record"))
        except EnvelopeError as exc:
            outcome.rejected.append(Rejected(message, "invalid-envelope", str(exc), "decode"))
    async with conn.transaction():
        if decoded and all(doc.get("resourceType") == "Bundle" for _, _, doc in decoded):
            try:
                async with conn.transaction():
                    await record_together(conn, decoded)
                return outcome
            except _TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded again one message at a time below
                log.info("recording %d messages together failed (%s): one at a time instead",
                         len(decoded), type(exc).__name__)
        for message, _, _ in decoded:
            try:
                async with conn.transaction():
                    await record_message(conn, message)  # decoded afresh: the batch may have stamped it
            except FhirError as error:
                issue = error.issues[0]
                outcome.rejected.append(Rejected(message, issue.code, issue.diagnostics, "record"))
            except _TRANSIENT:
                raise
            except psycopg.Error as exc:
                outcome.rejected.append(Rejected(message, "exception", type(exc).__name__, "record"))
    return outcome


def _decode(message: Message) -> tuple[Envelope, dict[str, Any]]:
    envelope = from_record(message.value, message.headers)
    try:
        document = jsontext.loads(envelope.payload)
    except ValueError:
        raise FhirError("structure", "the mapped payload is not JSON") from None
    if not isinstance(document, dict):
        raise FhirError("structure", "the mapped payload is not a JSON object")
    return envelope, document


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    resources = [e["resource"] for e in bundle.get("entry") or [] if isinstance(e, dict) and "resource" in e]
    for r in resources:
        if not isinstance(r, dict) or not r.get("resourceType") or not r.get("id"):
            raise FhirError("required", "every mapped resource needs a type and an id")
    return resources


async def record_message(conn: AsyncConnection, message: Message) -> list[Version]:
    """Record one mapped message; returns the versions it wrote (none for a replay)."""
    envelope, document = _decode(message)
    return await _record_decoded(conn, message, envelope, document)


async def _record_decoded(conn: AsyncConnection, message: Message, envelope: Envelope,
                          document: dict[str, Any]) -> list[Version]:
    if document.get("resourceType") == "Parameters":
        written = await merge_people(conn, envelope.source, document)
    elif document.get("resourceType") == "Bundle":
        written = await record_bundle(conn, envelope.source, document)
    else:
        raise FhirError("not-supported", "the recorder takes a Bundle or a merge Parameters")
    if written:
        await _write(conn, provenance(written, envelope, message))
    return written


async def record_bundle(conn: AsyncConnection, source: str, bundle: dict[str, Any]) -> list[Version]:
    resources = _resources(bundle)
    moved: dict[str, str] = {}
    for patient in (r for r in resources if r["resourceType"] == "Patient"):
        resolution = await matching.resolve(conn, source, patient)
        if resolution.patient_id != patient["id"]:
            moved[f"Patient/{patient['id']}"] = f"Patient/{resolution.patient_id}"
    written = []
    for resource in resources:
        if moved:
            resource = repoint(resource, moved)
        if resource["resourceType"] == "Patient":
            resource = await _merged_patient(conn, resource, moved)
        version = await _write(conn, resource)
        if version is not None:
            written.append(version)
    return written


async def record_together(conn: AsyncConnection, items: list[tuple[Message, Envelope, dict[str, Any]]]) -> None:
    """Record Bundles as record_bundle and record_message do one at a time, with the same
    result, in a handful of statements: links looked up at once, every resource locked at once,
    the versions (and each message's Provenance) worked out in memory in message order, then
    written with one statement or COPY per table."""
    bundles = [(message, envelope, _resources(document)) for message, envelope, document in items]
    links = await people.linked_patients(conn, {(envelope.source, r["id"]) for _, envelope, resources in bundles
                                                for r in resources if r["resourceType"] == "Patient"})
    pending: dict[tuple[str, str], set[str]] = {}  # identifiers the batch's Patients will carry
    moves: list[dict[str, str]] = []
    keys: set[tuple[str, str]] = set()
    for _, envelope, resources in bundles:
        moved: dict[str, str] = {}
        for resource in resources:
            if resource["resourceType"] != "Patient":
                keys.add((resource["resourceType"], resource["id"]))
                continue
            target = links.get((envelope.source, resource["id"]))
            if target is None:
                target = (await matching.resolve_unlinked(conn, envelope.source, resource, pending)).patient_id
                links[(envelope.source, resource["id"])] = target
            for identifier in matching.identifiers(resource):
                pending.setdefault(identifier, set()).add(target)
            if target != resource["id"]:
                moved[f"Patient/{resource['id']}"] = f"Patient/{target}"
            keys.add(("Patient", target))
        moves.append(moved)
    current = await repository.lock_current(conn, keys)
    existing = set(current)
    staged: list[repository.Staged] = []

    def write(resource: dict[str, Any]) -> Version | None:
        key = (resource["resourceType"], resource["id"])
        done = repository.stage(*key, resource, current.get(key))
        if done is None:
            return None
        current[key] = done.version
        staged.append(done)
        return done.version

    proofs = []
    for (message, envelope, resources), moved in zip(bundles, moves):
        written = []
        for resource in resources:
            if moved:
                resource = repoint(resource, moved)
            if resource["resourceType"] == "Patient":
                target = moved.get(f"Patient/{resource['id']}", f"Patient/{resource['id']}").removeprefix("Patient/")
                resource = _merge_patient(resource, target, current.get(("Patient", target)))
            version = write(resource)
            if version is not None:
                written.append(version)
        if written:
            proofs.append(provenance(written, envelope, message))
    found = await repository.lock_current(conn, {("Provenance", p["id"]) for p in proofs})
    current.update(found)
    existing |= set(found)
    for proof in proofs:
        write(proof)
    await repository.write_staged(conn, staged, existing)


async def review_pass(conn: AsyncConnection) -> None:
    """Raise a review Task (with its Provenance) for each probable duplicate among new people."""
    for source, patient_id, candidate in await matching.review_new_people(conn):
        task = await _write(conn, matching.review_task(patient_id, candidate, source))
        if task is not None:
            await _write(conn, hub_provenance([task], source))
            log.info("review task %s raised for a possible duplicate person", task.res_id)


async def merge_people(conn: AsyncConnection, source: str, parameters: dict[str, Any]) -> list[Version]:
    """A source says two of its records are one person: the retired Patient is linked
    `replaced-by` the survivor (and made inactive), the survivor `replaces` it and gains its
    identifiers; both keep their history, and the source's links now lead to the survivor."""
    refs = {p.get("name"): (p.get("valueReference") or {}).get("reference", "")
            for p in parameters.get("parameter") or []}
    survivor = await _patient_for(conn, source, refs.get("survivor", ""))
    retired = await _patient_for(conn, source, refs.get("retired", ""))
    if survivor == retired:
        return []
    kept = jsontext.loads((await repository.read(conn, "Patient", survivor)).content)
    gone = jsontext.loads((await repository.read(conn, "Patient", retired)).content)
    kept["identifier"] = _union(kept.get("identifier"), gone.get("identifier"))
    kept["link"] = _union(kept.get("link"), [{"other": {"reference": f"Patient/{retired}"}, "type": "replaces"}])
    gone["active"] = False
    gone["link"] = _union(gone.get("link"), [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}])
    await people.repoint_links(conn, retired, survivor)
    return [v for v in (await _write(conn, kept), await _write(conn, gone)) if v is not None]


async def _patient_for(conn: AsyncConnection, source: str, reference: str) -> str:
    source_id = reference.removeprefix("Patient/")
    if not source_id or "/" in source_id:
        raise FhirError("required", "a merge names a survivor and a retired Patient")
    linked = await people.linked_patient(conn, source, source_id)
    if linked is None:
        raise FhirError("not-found", "a merge names a person this source has not sent")
    return linked


async def _merged_patient(conn: AsyncConnection, incoming: dict[str, Any],
                          moved: dict[str, str]) -> dict[str, Any]:
    target = moved.get(f"Patient/{incoming['id']}", f"Patient/{incoming['id']}").removeprefix("Patient/")
    return _merge_patient(incoming, target, await repository.current_version(conn, "Patient", target))


def _merge_patient(incoming: dict[str, Any], target: str, current: Version | None) -> dict[str, Any]:
    """What to store for a source's Patient resolved to `target` (currently `current`). The
    source's own person takes the source's fields (keeping identifiers and links others added);
    a person first recorded by another source keeps its fields, gains this source's identifiers
    and gets only the gaps filled."""
    if current is None or current.deleted:
        return {**incoming, "id": target}
    existing = jsontext.loads(current.content)
    if target == incoming["id"]:
        merged = {**incoming}
        merged["identifier"] = _merge_identifiers(existing.get("identifier"), incoming.get("identifier"),
                                                  incoming_first=True)
        if existing.get("link"):
            merged["link"] = existing["link"]
        if existing.get("active") is False and "active" not in incoming:
            merged["active"] = False
    else:
        merged = {**{k: v for k, v in incoming.items() if k != "meta"}, **existing, "id": target}
        merged["identifier"] = _merge_identifiers(existing.get("identifier"), incoming.get("identifier"),
                                                  incoming_first=False)
    merged.pop("meta", None)
    return merged


def _merge_identifiers(existing: list | None, incoming: list | None, *, incoming_first: bool) -> list:
    """Every identifier either list names, each (system, value) once, in the wording the
    incoming message uses (the newer statement: after an A47 the prior identifier is `use: old`).
    The owner of the person decides the order."""
    newer = {_identifier_key(item): item for item in incoming or []}
    first, second = (incoming, existing) if incoming_first else (existing, incoming)
    merged, seen = [], set()
    for item in [*(first or []), *(second or [])]:
        key = _identifier_key(item)
        if key not in seen:
            seen.add(key)
            merged.append(newer.get(key, item))
    return merged


def _union(first: list | None, second: list | None) -> list:
    """`first`, then what `second` adds (compared by content): for links and merged records."""
    out = list(first or [])
    seen = [jsontext.dumps(x) for x in out]
    for item in second or []:
        text = jsontext.dumps(item)
        if text not in seen:
            out.append(item)
            seen.append(text)
    return out


def _identifier_key(identifier: Any) -> Any:
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        return (identifier["system"], identifier["value"])
    return jsontext.dumps(identifier)


async def _write(conn: AsyncConnection, resource: dict[str, Any]) -> Version | None:
    """Write under the resource's own id; None when the content was already there."""
    version, _ = await repository.update(conn, resource["resourceType"], resource["id"], resource,
                                         skip_unchanged=True)
    return None if version.method == UNCHANGED else version


_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def hub_provenance(written: list[Version], source: str) -> dict[str, Any]:
    """Provenance for what the recorder itself raised (a review Task) about a source's record."""
    return _provenance(written, "CREATE", [
        _agent("assembler", {"display": "IPC Hub recorder"}),
        _agent("informant", {"identifier": {"system": SOURCE_SYSTEM, "value": source}, "display": source}),
    ])


def provenance(written: list[Version], envelope: Envelope, message: Message) -> dict[str, Any]:
    """One Provenance for the versions one message wrote: which source system said it, in which
    envelope, read from which topic, partition and offset."""
    where = message.coordinates + (f" (inbound {envelope.origin})" if envelope.origin else "")
    record = _provenance(written, "UPDATE", [
        _agent("author", {"identifier": {"system": SOURCE_SYSTEM, "value": envelope.source},
                          "display": envelope.source}),
    ])
    record["entity"] = [{"role": "source",
                         "what": {"identifier": {"system": ENVELOPE, "value": envelope.id},
                                  "display": f"envelope {envelope.id} at {where}"}}]
    return record


def _provenance(written: list[Version], activity: str, agents: list[dict[str, Any]]) -> dict[str, Any]:
    """Targets each version written; its id derives from them, so a replay yields the same one."""
    targets = sorted(f"{v.res_type}/{v.res_id}/_history/{v.version}" for v in written)
    return {
        "resourceType": "Provenance",
        "id": derived_id("provenance", *targets),
        "target": [{"reference": t} for t in targets],
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": activity}]},
        "agent": agents,
    }


def _agent(role: str, who: dict[str, Any]) -> dict[str, Any]:
    return {"type": {"coding": [{"system": _PARTICIPANT_TYPE, "code": role}]}, "who": who}
