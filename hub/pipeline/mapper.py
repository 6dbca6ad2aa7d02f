"""The mapper step: envelope on the inbound topic → FHIR transaction Bundle on the bundles topic.

Pure work, no database: find the mapping for the kind, run it, pass the result on with the
same envelope identity, person key and receipt time, and the fingerprint of the id key the
mapping derived its ids with (header `ipc-id-key`): the recorder refuses a message mapped under
another key than the record's (hub/fhir/ids.py), so a mapper started with the wrong
`HUB_ID_KEY_FILE` cannot split people's records even where it has no database to check against. Whatever cannot be mapped is rejected
(dead-lettered by the worker loop) with the reason and the step."""
from __future__ import annotations

from hub.bus.envelope import EnvelopeError, from_record
from hub.bus.topics import Topics
from hub.bus.worker import Message, Outcome, Output, Rejected
from hub.fhir import ids, jsontext
from hub.fhir.errors import FhirError
from hub.pipeline.registry import Registry

FHIR_JSON = "application/fhir+json"
ID_KEY_HEADER = "ipc-id-key"


def map_batch(batch: list[Message], registry: Registry, topics: Topics) -> Outcome:
    outcome = Outcome()
    for message in batch:
        result = map_one(message, registry, topics)
        (outcome.rejected if isinstance(result, Rejected) else outcome.outputs).append(result)
    return outcome


def map_one(message: Message, registry: Registry, topics: Topics) -> Output | Rejected:
    try:
        envelope = from_record(message.value, message.headers)
    except EnvelopeError as exc:
        return Rejected(message, "invalid-envelope", str(exc), "decode")
    mapping = registry.find(envelope.source, envelope.kind)
    if mapping is None:
        return Rejected(message, "not-supported", f"no mapping for kind {envelope.kind!r}", "find-mapping")
    try:
        mapped = mapping(envelope.payload, envelope.source)
    except FhirError as error:
        issue = error.issues[0]
        return Rejected(message, issue.code, issue.diagnostics, "map")
    except Exception as exc:  # a mapping bug is permanent for this input; the DLQ limit guards a bad deploy
        return Rejected(message, "exception", f"{type(exc).__name__} in mapping {envelope.kind}", "map")
    kind = "fhir-merge" if mapped.get("resourceType") == "Parameters" else "fhir-transaction"
    out = envelope.with_payload(jsontext.dumps(mapped), kind, FHIR_JSON, message.coordinates)
    headers = [*out.headers(), (ID_KEY_HEADER, ids.fingerprint().encode())]
    return Output(topics.bundles, out.key(), out.payload, headers, source=message)
