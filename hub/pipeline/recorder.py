"""The recorder step: mapped Bundles → the shared record, in one database transaction per
polled batch (a savepoint per message, so one bad message is dead-lettered alone).

For each message: check every resource as every write is checked (hub.fhir.resources.
check_structure: a breach dead-letters the message with the rule and its location), resolve who
each Patient is (hub.identity) and whom a source means by a
person it sent before, point the Bundle's references at the shared-record Patient, join plan
parts to the person's one plan (hub.pipeline.plans), keep what people changed in the children's
extract's Tasks (hub.plans.council_owned), skip what the source already said something
newer about (a late replay, hub.store.freshness), write every resource with
update(skip_unchanged) under its deterministic id (a replay writes nothing), settle GP
registration handovers (hub.pipeline.handover), and write one Provenance naming the source
system and the envelope for the versions written. Change events come from the outbox rows each
write adds. The worker loop commits Kafka offsets only after this transaction has committed,
and the same transaction deletes the messages' rows from the bus journal (hub/bus/journal.py):
recorded exactly once."""
from __future__ import annotations

import asyncio
import logging
import zlib
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from hub.bus import journal
from hub.bus.envelope import Envelope, EnvelopeError, from_record
from hub.bus.worker import Message, Outcome, Rejected, Transient
from hub.fhir import ids, jsontext
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import NHS_NUMBER
from hub.fhir.references import references, repoint
from hub.fhir.resources import check_structure
from hub.identity import matching
from hub.money import accounts as money_rules
from hub.pipeline import handover
from hub.pipeline.lookalikes import review_pass
from hub.pipeline.mapper import ID_KEY_HEADER
from hub.pipeline.plans import PlanTargets, join, plan_kind
from hub.pipeline.provenance import provenance
from hub.plans import council_owned
from hub.search.access import Access
from hub.store import batch as store_batch
from hub.store import freshness, idkeys, integrity, people
from hub.store import resources as store
from hub.store.resources import UNCHANGED, Version

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
        self._key_checked = False

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
            if not self._key_checked:
                await idkeys.ensure(conn)  # the id key this record was built with (hub/fhir/ids.py)
                self._key_checked = True
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
        mapped_with = _id_key_of(message)
        if mapped_with is not None and mapped_with != ids.fingerprint():
            outcome.rejected.append(Rejected(
                message, "id-key-mismatch", "mapped with another id key than the record's (HUB_ID_KEY_FILE must "
                "be the same file for every hub process): replay it from the inbound topic once the mapper "
                "uses the record's key", "record"))
            continue
        try:
            envelope, document = _decode(message)
            if document.get("resourceType") == "Bundle":
                for resource in _resources(document):
                    check_structure(resource)   # what every write passes: nothing invalid is stored
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
                    written = await record_together(conn, decoded)
                    await handover.settle(conn, decoded)
                    await money_rules.apply(conn, written)
                    await journal.settle(conn, [envelope.id for _, envelope, _ in decoded])
                return outcome
            except _TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded again one message at a time below
                log.info("recording %d messages together failed (%s): one at a time instead",
                         len(decoded), type(exc).__name__)
        written = []
        for message, _, _ in decoded:
            try:
                async with conn.transaction():
                    written += await record_message(conn, message)  # decoded afresh: the batch may have stamped it
            except FhirError as error:
                issue = error.issues[0]
                outcome.rejected.append(Rejected(message, issue.code, issue.diagnostics, "record"))
            except _TRANSIENT:
                raise
            except psycopg.Error as exc:
                outcome.rejected.append(Rejected(message, "exception", type(exc).__name__, "record"))
        await handover.settle(conn, decoded)
        await money_rules.apply(conn, written)
        failed = {r.message.coordinates for r in outcome.rejected}
        await journal.settle(conn, [envelope.id for message, envelope, _ in decoded
                                    if message.coordinates not in failed])
    return outcome


def _id_key_of(message: Message) -> str | None:
    """The fingerprint of the id key the mapper used (hub.pipeline.mapper), if it said."""
    for name, raw in message.headers or ():
        if name == ID_KEY_HEADER:
            return raw.decode("ascii", "replace")
    return None


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
        written = await record_bundle(conn, envelope, document)
    else:
        raise FhirError("not-supported", "the recorder takes a Bundle or a merge Parameters")
    for proof in provenance(written, envelope, message) if written else ():
        await _write(conn, proof)
    return written


async def record_bundle(conn: AsyncConnection, envelope: Envelope, bundle: dict[str, Any]) -> list[Version]:
    source = envelope.source
    (resources,) = await idkeys.apply(conn, [_resources(bundle)])
    resources = await _people_named_by_nhs_number(conn, resources)
    moved: dict[str, str] = {}
    for patient in (r for r in resources if r["resourceType"] == "Patient"):
        resolution = await matching.resolve(conn, source, patient)
        if resolution.patient_id != patient["id"]:
            moved[f"Patient/{patient['id']}"] = f"Patient/{resolution.patient_id}"
    links: dict[tuple[str, str], str] = {}
    moved.update((await _people_referenced(conn, [(source, resources)], links))[0])
    if moved:
        resources = [repoint(resource, moved) for resource in resources]
    resources, joined = await PlanTargets().retarget(conn, resources)
    await _no_dangling_references(conn, resources, moved)
    keys = {_freshness_key(r, moved, source): r for r in resources}
    newest = await freshness.newest(conn, set(keys))
    written, said = [], {}
    for key, resource in keys.items():
        stale = _stale(newest.get(key), envelope)
        if stale and resource["resourceType"] != "Patient":
            continue
        if resource["resourceType"] == "Patient":
            resource = await _merged_patient(conn, resource, moved, stale=stale)
        elif plan_kind(resource) is not None:
            resource = _joined_plan(resource, await store.current_version(
                conn, "CarePlan", resource["id"], access=Access.system()), joined)
        elif council_owned.is_council_owned(resource):
            resource = _kept_peoples_changes(resource, await store.current_version(
                conn, resource["resourceType"], resource["id"], access=Access.system()))
        version = await _write(conn, resource)
        said[key] = max(envelope.received_at, newest.get(key, envelope.received_at))
        if version is not None:
            written.append(version)
    await freshness.remember(conn, said)
    return written


def _freshness_key(resource: dict[str, Any], moved: dict[str, str], source: str) -> freshness.Key:
    """(type, the id it is written under, source): a source's Patient is written as its person."""
    res_id = resource["id"]
    if resource["resourceType"] == "Patient":
        res_id = moved.get(f"Patient/{res_id}", f"Patient/{res_id}").removeprefix("Patient/")
    return resource["resourceType"], res_id, source


def _stale(newest: datetime | None, envelope: Envelope) -> bool:
    """Whether the source already said something newer about this resource: a late replay, or a
    message about the person on another partition (an A47 is keyed by the identifier it
    changes) recorded after a newer one. The same instant counts too: it is this message again
    (a resend keeps its first copy's received-at, and one process never stamps two envelopes
    with one instant, hub.bus.envelope). A stale message's resources are skipped, but for its
    Patient, which it may not overwrite but may still add to (an A47's identifier change)."""
    return newest is not None and newest >= envelope.received_at


async def record_together(conn: AsyncConnection,
                          items: list[tuple[Message, Envelope, dict[str, Any]]]) -> list[Version]:
    """Record Bundles as record_bundle and record_message do one at a time, with the same
    result, in a handful of statements: links looked up at once, every resource locked at once,
    the versions (and each message's Provenance) worked out in memory in message order, then
    written with one statement or COPY per table."""
    renamed = await idkeys.apply(conn, [_resources(document) for _, _, document in items])
    bundles = [(message, envelope, await _people_named_by_nhs_number(conn, resources))
               for (message, envelope, _), resources in zip(items, renamed, strict=True)]
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
    referenced = await _people_referenced(conn, [(envelope.source, resources) for _, envelope, resources in bundles],
                                          links)
    targets = PlanTargets()
    prepared = []
    for (message, envelope, resources), moved, extra in zip(bundles, moves, referenced):
        moved.update(extra)
        if moved:
            resources = [repoint(resource, moved) for resource in resources]
        resources, joined = await targets.retarget(conn, resources)
        keys.update((r["resourceType"], r["id"]) for r in resources if r["resourceType"] != "Patient")
        prepared.append((message, envelope, resources, joined))
    newest = await freshness.newest(conn, {_freshness_key(r, moved, envelope.source)
                                           for (_, envelope, resources, _), moved in zip(prepared, moves)
                                           for r in resources})
    current = await store_batch.lock_current(conn, keys)
    existing = set(current)
    staged: list[store_batch.Staged] = []

    def write(resource: dict[str, Any]) -> Version | None:
        key = (resource["resourceType"], resource["id"])
        done = store_batch.stage(*key, resource, current.get(key))
        if done is None:
            return None
        current[key] = done.version
        staged.append(done)
        return done.version

    proofs = []
    said: dict[freshness.Key, datetime] = {}
    for (message, envelope, resources, joined), moved in zip(prepared, moves):
        written = []
        for resource in resources:
            key = _freshness_key(resource, moved, envelope.source)
            stale = _stale(newest.get(key), envelope)
            if stale and resource["resourceType"] != "Patient":
                continue
            newest[key] = said[key] = max(envelope.received_at, newest.get(key, envelope.received_at))
            if resource["resourceType"] == "Patient":
                target = moved.get(f"Patient/{resource['id']}", f"Patient/{resource['id']}").removeprefix("Patient/")
                resource = _merge_patient(resource, target, current.get(("Patient", target)), stale=stale)
            elif plan_kind(resource) is not None:
                resource = _joined_plan(resource, current.get(("CarePlan", resource["id"])), joined)
            elif council_owned.is_council_owned(resource):
                resource = _kept_peoples_changes(resource, current.get((resource["resourceType"], resource["id"])))
            version = write(resource)
            if version is not None:
                written.append(version)
        if written:
            proofs.extend(provenance(written, envelope, message))
    found = await store_batch.lock_current(conn, {("Provenance", p["id"]) for p in proofs})
    current.update(found)
    existing |= set(found)
    for proof in proofs:
        write(proof)
    await store_batch.write_staged(conn, staged, existing)
    await freshness.remember(conn, said)
    return [s.version for s in staged if s.version.res_type != "Provenance"]


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
    kept = jsontext.loads((await store.read(conn, "Patient", survivor, access=Access.system())).content)
    gone = jsontext.loads((await store.read(conn, "Patient", retired, access=Access.system())).content)
    kept["identifier"] = jsontext.union(kept.get("identifier"), gone.get("identifier"))
    kept["link"] = jsontext.union(kept.get("link"), [{"other": {"reference": f"Patient/{retired}"}, "type": "replaces"}])
    gone["active"] = False
    gone["link"] = jsontext.union(gone.get("link"), [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}])
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


_PERSON_FIELDS = ("subject", "patient", "for", "beneficiary")


async def _people_named_by_nhs_number(conn: AsyncConnection, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A feed that never sent the person (a direct payment support service's statement) names
    them by NHS number: a reference with only an identifier. It is pointed at the person the
    record holds, so the resource lands in their record (and under their consent); a person the
    record does not hold yet sends the message to the dead-letter topic, to replay once they
    arrive, rather than leave a resource in nobody's record."""
    wanted: set[str] = set()
    for resource in resources:
        for name in _PERSON_FIELDS:
            for ref in _as_list(resource.get(name)):
                if _nhs_only(ref):
                    wanted.add(ref["identifier"]["value"])
    if not wanted:
        return resources
    found = await people.people_by_identifier(conn, NHS_NUMBER, wanted)
    if wanted - found.keys():
        raise FhirError("not-found", f"the message names {len(wanted - found.keys())} person(s) by NHS number "
                                     "whom the record does not hold yet")
    out = []
    for resource in resources:
        changed = dict(resource)
        for name in _PERSON_FIELDS:
            value = resource.get(name)
            if isinstance(value, list):
                changed[name] = [_pointed(ref, found) for ref in value]
            elif isinstance(value, dict):
                changed[name] = _pointed(value, found)
        out.append(changed)
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if isinstance(value, dict) else []


def _nhs_only(ref: Any) -> bool:
    return (isinstance(ref, dict) and "reference" not in ref and isinstance(ref.get("identifier"), dict)
            and ref["identifier"].get("system") == NHS_NUMBER and isinstance(ref["identifier"].get("value"), str))


def _pointed(ref: Any, found: dict[str, str]) -> Any:
    if not _nhs_only(ref):
        return ref
    return {**ref, "reference": f"Patient/{found[ref['identifier']['value']]}"}


async def _people_referenced(conn: AsyncConnection, bundles: list[tuple[str, list[dict[str, Any]]]],
                             links: dict[tuple[str, str], str]) -> list[dict[str, str]]:
    """For each (source, resources) bundle, where its references to people it does not carry
    lead: a source may name a person it sent before by its own id (an event row names the person
    of an earlier people row), which the source's person link turns into the shared record's
    Patient. A reference to neither a linked person nor a Patient in the record is refused, so the
    message waits in the dead-letter topic for replay instead of pointing at nobody. `links`
    holds (source, source id) → Patient already known (the batch's own people) and gains the rest."""
    wanted: list[set[tuple[str, str]]] = []
    for source, resources in bundles:
        carried = {r["id"] for r in resources if r["resourceType"] == "Patient"}
        wanted.append({(source, ref[len("Patient/"):]) for ref in references(resources)
                       if ref.startswith("Patient/") and "/" not in ref[len("Patient/"):]
                       and ref[len("Patient/"):] not in carried})
    unknown = set().union(*wanted) - links.keys()
    links.update(await people.linked_patients(conn, unknown))
    in_record = await people.existing_patients(conn, {pid for source, pid in unknown
                                                      if (source, pid) not in links})
    moves = []
    for needed in wanted:
        moved = {}
        for source, pid in needed:
            target = links.get((source, pid))
            if target is not None:
                if target != pid:
                    moved[f"Patient/{pid}"] = f"Patient/{target}"
            elif pid not in in_record:
                raise FhirError("not-found", f"the message refers to a person (Patient/{pid}) that source "
                                             f"{source} has not sent and the record does not hold")
        moves.append(moved)
    return moves


async def _no_dangling_references(conn: AsyncConnection, resources: list[dict[str, Any]],
                                  moved: dict[str, str]) -> None:
    """A message never leaves a reference pointing at nobody: each literal reference must name
    something the record holds or the message itself writes (hub.store.integrity), or the
    message goes to the dead-letter topic with the reason. (A batch written together is checked
    by store_batch.write_staged.)"""
    pending = {(r["resourceType"], r["id"]) for r in resources}
    pending |= {("Patient", target.removeprefix("Patient/")) for target in moved.values()}
    await integrity.check_references(
        conn, Access.system(), [integrity.Written(r, r["resourceType"], r["id"]) for r in resources],
        pending=pending)


def _joined_plan(part: dict[str, Any], current: Version | None, joined: set[str]) -> dict[str, Any]:
    existing = jsontext.loads(current.content) if current is not None and not current.deleted else None
    return join(existing, part, own=part["id"] not in joined)


def _kept_peoples_changes(incoming: dict[str, Any], current: Version | None) -> dict[str, Any]:
    """A children's extract Task or Flag over its current version: what people changed stays
    (hub.plans.council_owned)."""
    existing = jsontext.loads(current.content) if current is not None and not current.deleted else None
    return council_owned.merge(incoming, existing)


async def _merged_patient(conn: AsyncConnection, incoming: dict[str, Any],
                          moved: dict[str, str], *, stale: bool = False) -> dict[str, Any]:
    target = moved.get(f"Patient/{incoming['id']}", f"Patient/{incoming['id']}").removeprefix("Patient/")
    return _merge_patient(incoming, target, await store.current_version(conn, "Patient", target,
                                                                             access=Access.system()),
                          stale=stale)


def _merge_patient(incoming: dict[str, Any], target: str, current: Version | None, *,
                   stale: bool = False) -> dict[str, Any]:
    """What to store for a source's Patient resolved to `target` (currently `current`). The
    source's own person takes the source's fields (keeping identifiers and links others added);
    a person first recorded by another source — or a message older than what the source last
    said about the person (`stale`) — keeps the fields there, adds its identifiers and fills
    only the gaps."""
    if current is None or current.deleted:
        return {**incoming, "id": target}
    existing = jsontext.loads(current.content)
    if target == incoming["id"] and not stale:
        merged = {**incoming}
        merged["identifier"] = _merge_identifiers(existing.get("identifier"), incoming.get("identifier"),
                                                  incoming_first=True)
        if existing.get("link"):
            merged["link"] = existing["link"]
        if existing.get("active") is False and "active" not in incoming:
            merged["active"] = False
    else:
        # The record's fields and their order stay (a body that differs only in key order would
        # be a new version); the message fills only the gaps.
        merged = {**existing, "id": target}
        merged.update((k, v) for k, v in incoming.items() if k != "meta" and k not in existing)
        # A stale message (older than what its source last said: a late replay or a resend) may
        # add an identifier but not reword one: the newer wording stays.
        merged["identifier"] = _merge_identifiers(existing.get("identifier"), incoming.get("identifier"),
                                                  incoming_first=False, incoming_wording=not stale)
    merged.pop("meta", None)
    return merged


def _merge_identifiers(existing: list | None, incoming: list | None, *, incoming_first: bool,
                       incoming_wording: bool = True) -> list:
    """Every identifier either list names, each (system, value) once, in the wording the
    incoming message uses (the newer statement: after an A47 the prior identifier is `use: old`)
    unless `incoming_wording` is false (the message is older than the record). The owner of the
    person decides the order."""
    newer = {_identifier_key(item): item for item in (incoming if incoming_wording else existing) or []}
    first, second = (incoming, existing) if incoming_first else (existing, incoming)
    merged, seen = [], set()
    for item in [*(first or []), *(second or [])]:
        key = _identifier_key(item)
        if key not in seen:
            seen.add(key)
            merged.append(newer.get(key, item))
    return merged


def _identifier_key(identifier: Any) -> Any:
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        return (identifier["system"], identifier["value"])
    return jsontext.dumps(identifier)


async def _write(conn: AsyncConnection, resource: dict[str, Any]) -> Version | None:
    """Write under the resource's own id; None when the content was already there."""
    version, _ = await store.update(conn, resource["resourceType"], resource["id"], resource,
                                        skip_unchanged=True, access=Access.system())
    return None if version.method == UNCHANGED else version
