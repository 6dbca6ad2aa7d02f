"""Provenance the recorder writes: for every version a message wrote, which source system said
it, in which envelope, read from where — so each fact in the shared record can be traced back to
the message it came from, and replays land on the same Provenance (its id derives from the
versions it covers)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub.bus.envelope import Envelope
from hub.bus.worker import Message
from hub.fhir.identifiers import ENVELOPE, SOURCE_SYSTEM
from hub.fhir.ids import derived_id
from hub.store.repository import Version

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
