"""Patient/[id]/$cost-of-care: what a person's care cost in each period asked for (before and
after a personal budget, say), by funder and setting, with the cost a week
(hub/money/costing.py: spend lines and invoices, NHS hospital activity priced by the tariff,
allocations nobody sends lines for). `period` is repeated, each `start/end` (dates, inclusive),
optionally labelled `label:start/end`. Needs read on Patient, ChargeItem, Encounter and Account;
the person's consent decides what is counted, as for any read."""
from __future__ import annotations

from datetime import date

from hub.fhir.errors import FhirError
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, parameters
from hub.money.costing import cost_of_care
from hub.store import resources


def parse_period(text: str) -> tuple[str, date, date]:
    label, _, span = text.rpartition(":") if ":" in text else ("", "", text)
    start, sep, end = span.partition("/")
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        raise FhirError("value", f"`period` {text!r} is not start/end dates (YYYY-MM-DD/YYYY-MM-DD)") from None
    if not sep or last < first:
        raise FhirError("value", f"`period` {text!r} must be start/end with the end not before the start")
    return label or span, first, last


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_id is not None
    ctx.access.require("Patient", "r")
    pairs, _ = parameters(request)
    periods = [parse_period(v) for k, v in pairs if k == "period"]
    if not periods:
        raise FhirError("required", "$cost-of-care needs at least one `period` (start/end)")
    async with ctx.reading() as conn:
        patient = await resources.read(conn, "Patient", res_id, access=ctx.access)
        ctx.touched.append(patient)
        table = await cost_of_care(conn, [res_id], periods, access=ctx.access)
    return Outcome(200, body=table.parameters())


OPERATION = Operation(
    name="cost-of-care",
    definition="https://ipc-hub.example.org/fhir/OperationDefinition/Patient-cost-of-care",
    levels=frozenset({"instance"}),
    types=frozenset({"Patient"}),
    run=run,
    documentation="A person's cost of care for each `period` (start/end, repeated), by funder and setting, with the "
                  "cost a week: spend lines and invoices, NHS hospital activity priced by the tariff, allocations "
                  "without lines.",
)
