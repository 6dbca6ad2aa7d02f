"""One audited request as a compact, flat record: what the API middleware captures and what the
store keeps (one row per request). The AuditEvent resource is rendered from it only when someone
asks (`hub.audit.events`), so the request path builds no FHIR structures and the table stays
small and indexed by patient."""
from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime

# Paths under the FHIR base that are not audited: they disclose no one's record.
_UNAUDITED = frozenset({"metadata"})
# How many entity references one record keeps (the access layer caps its list at the same size).
MAX_ENTITIES = 100
# The longest path and query string kept: enough to say what was asked, bounded against abuse.
MAX_QUERY_CHARS = 2048

_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(slots=True)
class AuditRecord:
    """Field order is the audit table's column order (`hub.store.audit.COLUMNS`). Not frozen:
    a frozen dataclass pays a `object.__setattr__` per field, and one is made per request."""

    id: str
    recorded: datetime
    interaction: str  # a restful-interaction code: read, search-type, create…
    action: str  # C R U D E
    outcome: int  # 0 success, 4 minor failure (refused), 8 serious failure (server), 12 major
    status: int  # the HTTP status answered (0 when none was sent)
    method: str
    path: str
    query: str
    client_id: str | None
    organisation: str | None
    organisation_system: str | None
    partner_class: str | None
    purpose_of_use: str | None
    token_id: str | None
    address: str | None
    patients: list[str]
    entities: list[str]
    user_ref: str | None = None  # the signed-in person the app acted for (Practitioner/<id>)
    # `rest` for a request; `consent` for a change of someone's record-sharing consent, written
    # by the store with the change (hub.store.audit.record_consent_change).
    kind: str = "rest"
    policy: str | None = None  # the authority a consent change was made on (agent.policy)


def _id_source() -> tuple[str, itertools.count]:
    """Record ids as UUIDs (version 8, RFC 9562's custom layout): this process's start in
    milliseconds and 28 random bits, then a 48-bit counter. Unique across processes and
    restarts like a random UUID, but made with a string format and an add instead of 16 bytes
    from the kernel per request, and rising in write order, so the primary key grows at its
    right-hand edge instead of touching a random index page for every row."""
    stamp = f"{int(time.time() * 1000) & (2**48 - 1):012x}"
    noise = os.urandom(4).hex()
    variant = "89ab"[int(noise[0], 16) & 3]
    prefix = f"{stamp[:8]}-{stamp[8:]}-8{noise[1:4]}-{variant}{noise[5:8]}-"
    return prefix, itertools.count(int.from_bytes(os.urandom(2), "big") << 16)


def _reset_ids() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = _id_source()


_ID_PREFIX, _ID_COUNTER = _id_source()
os.register_at_fork(after_in_child=_reset_ids)  # a forked worker must not repeat its parent's ids


def new_record_id() -> str:
    """A fresh record id (see `_id_source`)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


def is_audited(path: str) -> bool:
    """FHIR interactions are audited; the CapabilityStatement, health and token endpoints are not."""
    if path == "/fhir" or path == "/fhir/":
        return True
    if not path.startswith("/fhir/"):
        return False
    first = path[6:].split("/", 1)[0]
    return first not in _UNAUDITED


def classify(method: str, path: str) -> tuple[str, str]:
    """(restful-interaction code, AuditEvent action) for a request to the FHIR API. Searches and
    operations are 'E' (execute), as the FHIR AuditEvent guidance and IHE BALP have them."""
    return _classify(method, _parts(path))


def _parts(path: str) -> list[str]:
    return [p for p in path[len("/fhir"):].split("/") if p]


def _classify(method: str, parts: list[str]) -> tuple[str, str]:
    if parts and parts[-1].startswith("$"):
        return "operation", "E"
    if method == "POST" and not parts:
        return "transaction", "E"
    if "_history" in parts:
        at = parts.index("_history")
        if at + 1 < len(parts):
            return "vread", "R"
        return ("history-system", "history-type", "history-instance")[min(at, 2)], "R"
    if method == "POST" and len(parts) == 2 and parts[1] == "_search":
        return "search-type", "E"
    if method in ("GET", "HEAD"):
        if not parts:
            return "search-system", "E"
        return ("search-type", "E") if len(parts) == 1 else ("read", "R")
    return _WRITES.get(method, ("operation", "E"))


_WRITES = {"POST": ("create", "C"), "PUT": ("update", "U"), "PATCH": ("patch", "U"),
           "DELETE": ("delete", "D")}


def outcome_of(status: int) -> int:
    """AuditEvent.outcome for an HTTP status: refusals and bad requests are minor failures
    (4), server faults serious (8), and a request that got no answer at all major (12)."""
    if status == 0:
        return 12
    if status < 400:
        return 0
    if status < 500:
        return 4
    return 8


def target_of(path: str) -> str | None:
    """`Type/id` the path names (read, vread, update, delete, instance history), if any: what
    was attempted even when nothing was disclosed (a refused read is still findable)."""
    return _target(_parts(path))


def _target(parts: list[str]) -> str | None:
    if len(parts) < 2:
        return None
    res_type, res_id = parts[0], parts[1]
    if not res_type[:1].isupper() or res_id[:1] in ("_", "$") or len(res_id) > 64:
        return None
    if _TYPE.match(res_type) and _ID.match(res_id):
        return f"{res_type}/{res_id}"
    return None


def _fhir_path(location: str) -> str:
    """`/fhir/Type/id/...` from an absolute Location (whatever the public base URL is)."""
    at = location.find("/fhir/")
    return location[at:] if at >= 0 else ""


def build_record(
    *,
    method: str,
    path: str,
    query: str,
    status: int,
    recorded: datetime,
    state: dict,
    address: str | None,
    location: str | None = None,
) -> AuditRecord:
    """The record of one finished request, from what the inner layers left in the ASGI
    `scope["state"]`: the caller (`principal`, absent when the token was missing or bad), the
    patients disclosed or written (`audit_patients`) and the resources touched
    (`audit_entities`). `location` is the Location a create answered with: the new resource.
    A NUL character (refused by the API, but still a request to record) is kept as `%00`, as it
    came on the wire: PostgreSQL text cannot hold it, and one unstorable record would hold up
    the writer's whole queue."""
    if "\x00" in path or "\x00" in query:
        path, query = path.replace("\x00", "%00"), query.replace("\x00", "%00")
    parts = _parts(path)
    interaction, action = _classify(method, parts)
    principal = state.get("principal")
    noted = state.get("audit_entities")
    entities = list(dict.fromkeys(noted))[:MAX_ENTITIES] if noted else []
    patients = set(state.get("audit_patients") or ())
    target = _target(parts) or (target_of(_fhir_path(location)) if location else None)
    if target is not None:
        if target not in entities:
            entities.insert(0, target)
            del entities[MAX_ENTITIES:]
        if target.startswith("Patient/"):
            patients.add(target[8:])
    return AuditRecord(
        id=new_record_id(),
        recorded=recorded,
        interaction=interaction,
        action=action,
        outcome=outcome_of(status),
        status=status,
        method=method,
        path=path[:MAX_QUERY_CHARS],
        query=query[:MAX_QUERY_CHARS],
        client_id=getattr(principal, "client_id", None),
        organisation=getattr(principal, "organisation", None),
        organisation_system=getattr(principal, "organisation_system", None),
        partner_class=getattr(principal, "partner_class", None),
        purpose_of_use=getattr(principal, "purpose_of_use", None),
        token_id=getattr(principal, "token_id", None),
        address=address,
        patients=sorted(patients),
        entities=entities,
        user_ref=getattr(principal, "user", None),
    )
