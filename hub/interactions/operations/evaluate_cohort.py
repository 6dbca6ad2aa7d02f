"""Group/[id]/$evaluate-cohort: evaluate one cohort definition now, for everyone (or for the
people named by `patient`), rather than waiting for the record to change. The cohort worker does
the same from change events; this is for a definition just approved, or a check by its reviewer.

The caller needs read and update on Group, create and update on Task (it writes the member Group and the
offers). The definition must be readable by the caller and approved; a definition that cannot be
read answers 422 naming what is wrong, never a partial evaluation. The answer is a Parameters of
counts and references (the member Group, the new offers) — never names: who is in the cohort is
read from the Group, under the reader's own consent."""
from __future__ import annotations

from hub.cohorts.definitions import is_definition, read_definition
from hub.cohorts.evaluate import evaluate
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, parameters
from hub.store.resources import read


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_id is not None
    ctx.access.require("Group", "ru")
    ctx.access.require("Task", "cu")
    pairs, _ = parameters(request)
    scope = [v.removeprefix("Patient/") for k, v in pairs if k == "patient"] or None
    async with ctx.writing() as conn:
        stored = await read(conn, "Group", res_id, access=ctx.access)
        group = jsontext.loads(stored.content)
        if not is_definition(group):
            raise FhirError("invalid", f"Group/{res_id} is not a cohort definition (profile ipc-cohort-definition)",
                            status=422)
        definition = read_definition(group, stored.version)
        if not definition.evaluated:
            raise FhirError("business-rule", f"Group/{res_id} is {definition.status}: only an approved "
                            "definition is evaluated", status=422)
        result = await evaluate(conn, definition, scope)
    ctx.touched.append(stored)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "cohort", "valueReference": {"reference": f"Group/{result.cohort}"}},
        {"name": "definition", "valueReference": {"reference": definition.reference}},
        {"name": "members", "valueInteger": result.members},
        {"name": "entered", "valueInteger": len(result.entered)},
        {"name": "left", "valueInteger": len(result.left)},
        *({"name": "offer", "valueReference": {"reference": f"Task/{t}"}} for t in result.offers),
    ]}
    return Outcome(200, body=body)


OPERATION = Operation(
    name="evaluate-cohort",
    definition=f"{CANONICAL_BASE}/OperationDefinition/evaluate-cohort",
    levels=frozenset({"instance"}),
    types=frozenset({"Group"}),
    affects_state=True,
    run=run,
    documentation="Evaluate an approved cohort definition now (optionally for the people named by `patient`): "
                  "updates the cohort's member Group and raises an offer Task for each person who entered.",
)
