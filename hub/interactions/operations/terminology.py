"""The terminology operations: CodeSystem/$lookup, CodeSystem/$validate-code,
ValueSet/$validate-code and ValueSet/$expand, at type level and (but $lookup) on a stored
instance, by GET (parameters in the query) or POST (a Parameters body). The answers come from
hub.fhir.terminology.operations over the R4 core and the IPC guide held in memory; this module
only reads the request, finds a stored instance and hands back the answer.

Terminology is not personal data: any token that may read CodeSystems or ValueSets may ask, as it
may read the guide's own (hub.search.access CONFORMANCE_TYPES)."""
from __future__ import annotations

from typing import Any

from hub.fhir import jsontext
from hub.fhir.terminology import operations
from hub.fhir.terminology.operations import Inputs
from hub.fhir.validation import terminology
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation
from hub.store import resources

_CORE = "http://hl7.org/fhir/OperationDefinition/"


def _inputs(request: FhirRequest) -> Inputs:
    if request.body is not None:
        return Inputs.from_parameters(request.body)
    return Inputs.from_query(request.query)


async def _stored(ctx: Context, res_type: str, res_id: str) -> dict[str, Any]:
    ctx.access.require(res_type, "r")
    async with ctx.reading() as conn:
        version = await resources.read(conn, res_type, res_id, access=ctx.access)
    ctx.touched.append(version)
    return jsontext.loads(version.content)


def _held_or_stored(stored: dict[str, Any], inputs: Inputs) -> tuple[Inputs, dict[str, Any] | None]:
    """A stored ValueSet that is the one held in memory (the guide's) is answered by its url, from
    the expansion already worked out; any other is expanded for this request."""
    held = terminology().value_set(stored.get("url") or "")
    if held is not None and {k: v for k, v in held.items() if k != "meta"} == \
            {k: v for k, v in stored.items() if k != "meta"}:
        return Inputs({**inputs.values, "url": [stored["url"]]}), None
    return inputs, stored


async def _lookup(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    ctx.access.require("CodeSystem", "r")
    return Outcome(200, body=operations.lookup(terminology(), _inputs(request)))


async def _validate_code(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_type is not None
    inputs = _inputs(request)
    if res_type == "CodeSystem":
        if res_id is None:
            ctx.access.require("CodeSystem", "r")
            return Outcome(200, body=operations.validate_code_in_code_system(terminology(), inputs))
        stored = await _stored(ctx, "CodeSystem", res_id)
        return Outcome(200, body=operations.validate_code_in_code_system(terminology(), inputs, stored))
    if res_id is None:
        ctx.access.require("ValueSet", "r")
        return Outcome(200, body=operations.validate_code_in_value_set(terminology(), inputs))
    inputs, value_set = _held_or_stored(await _stored(ctx, "ValueSet", res_id), inputs)
    return Outcome(200, body=operations.validate_code_in_value_set(terminology(), inputs, value_set))


async def _expand(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    inputs = _inputs(request)
    if res_id is None:
        ctx.access.require("ValueSet", "r")
        return Outcome(200, body=operations.expand(terminology(), inputs))
    inputs, value_set = _held_or_stored(await _stored(ctx, "ValueSet", res_id), inputs)
    return Outcome(200, body=operations.expand(terminology(), inputs, value_set))


LOOKUP = Operation(
    name="lookup", definition=_CORE + "CodeSystem-lookup", levels=frozenset({"type"}),
    types=frozenset({"CodeSystem"}), run=_lookup,
    documentation="A code's display, designations and properties, from the R4 core and the IPC guide.",
)
VALIDATE_CODE = Operation(
    name="validate-code", definition=_CORE + "ValueSet-validate-code", levels=frozenset({"type", "instance"}),
    types=frozenset({"CodeSystem", "ValueSet"}), run=_validate_code,
    definitions=(("CodeSystem", _CORE + "CodeSystem-validate-code"),),
    documentation="Whether a code (or Coding, CodeableConcept) is in a code system or value set.",
)
EXPAND = Operation(
    name="expand", definition=_CORE + "ValueSet-expand", levels=frozenset({"type", "instance"}),
    types=frozenset({"ValueSet"}), run=_expand,
    documentation="A value set's codes, with `filter`, `offset` and `count`.",
)
