"""Provenance the recorder writes: for every version a message wrote, which source system said
it, in which envelope, read from where — so each fact in the shared record can be traced back to
the message it came from, and replays land on the same Provenance (its id derives from the
versions it covers)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hub.audit.provenance import agent, build
from hub.bus.envelope import Envelope
from hub.bus.worker import Message
from hub.fhir.identifiers import ENVELOPE, SOURCE_SYSTEM
from hub.store.resources import Version


def hub_provenance(written: list[Version], source: str, derived_from: Iterable[Version] = ()) -> dict[str, Any]:
    """Provenance for what the recorder itself raised (a review Task) or concluded (a handover
    completed) about a source's record. `derived_from`: the versions the conclusion rests on (the
    Patient version naming the GP), whose own Provenance names the feed that said it — so a
    conclusion of the hub can be traced back to its source like any fact a feed sent."""
    record = build(_targets(written), "CREATE", [
        agent("assembler", {"display": "IPC Hub recorder"}),
        agent("informant", {"identifier": {"system": SOURCE_SYSTEM, "value": source}, "display": source}),
    ])
    grounds = sorted({f"{v.res_type}/{v.res_id}/_history/{v.version}" for v in derived_from})
    if grounds:
        record["entity"] = [{"role": "derivation", "what": {"reference": g}} for g in grounds]
    return record


def provenance(written: list[Version], envelope: Envelope, message: Message) -> list[dict[str, Any]]:
    """The Provenance for the versions one message wrote — which source system said it, in
    which envelope, read from which topic, partition and offset — one per place in the record
    the versions sit in (person, record part), so each is exactly as private as what it is
    about and never names what its reader may not see."""
    where = message.coordinates + (f" (inbound {envelope.origin})" if envelope.origin else "")
    records = []
    for group in by_place(written):
        record = build(_targets(group), "UPDATE", [
            agent("author", {"identifier": {"system": SOURCE_SYSTEM, "value": envelope.source},
                              "display": envelope.source}),
        ])
        record["entity"] = [{"role": "source",
                             "what": {"identifier": {"system": ENVELOPE, "value": envelope.id},
                                      "display": f"envelope {envelope.id} at {where}"}}]
        records.append(record)
    return records


def by_place(written: list[Version]) -> list[list[Version]]:
    """The versions grouped by where they sit (person, part, owner), in a stable order."""
    groups: dict[tuple[str, str, str], list[Version]] = {}
    for v in written:
        groups.setdefault((v.patient_id or "", v.part or "", v.owner or ""), []).append(v)
    return [groups[k] for k in sorted(groups)]


def _targets(written: list[Version]) -> list[str]:
    return [f"{v.res_type}/{v.res_id}/_history/{v.version}" for v in written]
