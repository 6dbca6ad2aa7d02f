"""$validate at type and instance level (FHIR R4 OperationDefinition Resource-validate): checks a
resource exactly as a write would (hub.fhir.resources.examine: the base specification, the
structure, the IPC profiles; or, with `profile`, that profile instead of the ones in scope) and
answers 200 with an OperationOutcome whether or not it is valid, adding the warnings a write does
not wait for (extensible bindings, best-practice invariants); nothing is stored.

Needs create or update on the type (validating is what a client does before writing); at
instance level without a resource in the body, it validates the stored one, so read too."""
from __future__ import annotations

from typing import Any

from hub.fhir import jsontext
from hub.fhir.errors import FhirError, Issue, operation_outcome
from hub.fhir.resources import examine
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, first, parameters
from hub.store import resources


def validation_outcome(resource: Any, res_type: str, profile: str | None) -> dict[str, Any]:
    """Every issue a write would be refused for, and the warnings besides."""
    issues, status = examine(resource, res_type, warnings=True, profile=profile)
    if status is None:
        issues.append(Issue("informational", f"{res_type} is valid" + (f" against {profile}" if profile else ""),
                            severity="information"))
    return operation_outcome(issues)


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_type is not None
    ctx.access.require_either(res_type, "cu")
    pairs, carried = parameters(request)
    profile = first(pairs, "profile")
    body = request.body
    resource = carried.get("resource") if isinstance(body, dict) and body.get("resourceType") == "Parameters" \
        else body
    if resource is None and res_id is not None:
        ctx.access.require(res_type, "r")
        async with ctx.reading() as conn:
            version = await resources.read(conn, res_type, res_id, access=ctx.access)
        ctx.touched.append(version)
        resource = jsontext.loads(version.content)
    if resource is None:
        raise FhirError("required", "$validate needs a resource: in the body or as the Parameters 'resource'")
    return Outcome(200, body=validation_outcome(resource, res_type, profile))


OPERATION = Operation(
    name="validate",
    definition="http://hl7.org/fhir/OperationDefinition/Resource-validate",
    levels=frozenset({"type", "instance"}),
    run=run,
    documentation="Checks a resource against R4 and the IPC profiles (or `profile`); stores nothing.",
)
