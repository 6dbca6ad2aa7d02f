"""Group/[id]/$cohort-report: the summary of a cohort as a `MeasureReport` — people identified,
offered, accepted, with a plan, with a PB/PHB/IPB, reviews on time, spend against budget,
outcome measures — counted from the same rows a linked dataset of the cohort would hold
(hub/datasets/records.py, hub/datasets/summary.py), under the caller's own access: a person
whose record the caller may not read is not counted, and of the others only what their consent
lets the caller see.

Only figures leave, never a row: a count from 1 to `HUB_DATASET_MIN_COUNT`-1 and a sum or mean
over fewer people are withheld. So, unlike `$linked-dataset`, it needs no secondary-use token or
stated purpose and records no release; the request's AuditEvent names the cohort Group (not each
person: nothing about any one person is disclosed). It changes nothing (GET or POST).
The commissioners' workspace page (hub/web/commissioning.py) shows it as charts and CSV.

Read scopes needed: as `$linked-dataset` (records.READS), 403 otherwise."""
from __future__ import annotations

from datetime import UTC, datetime

from hub.datasets import linked, records, summary
from hub.fhir.identifiers import CANONICAL_BASE
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_id is not None
    for name in records.READS:
        ctx.access.require(name, "r")
    today = datetime.now(UTC).date()
    async with ctx.reading() as conn:
        found = await records.members(conn, res_id, ctx.access)
    minimum = ctx.settings.dataset_min_count
    # The rows are built only to be counted: the key is throwaway, no pseudonym leaves.
    rows = [linked.row(person, b"summary-only", today) for person in found.people.values()]
    ctx.touched += found.disclosed[:1]  # the Group
    report = summary.report(f"Group/{res_id}", rows, minimum, today)
    return Outcome(200, body=report, headers={"Cache-Control": "no-store"})


OPERATION = Operation(
    name="cohort-report",
    definition=f"{CANONICAL_BASE}/OperationDefinition/cohort-report",
    levels=frozenset({"instance"}),
    types=frozenset({"Group"}),
    affects_state=False,
    run=run,
    documentation="The summary of a cohort's members as a MeasureReport (identified, offered, with a plan, "
                  "with a budget, reviews on time, spend against budget, outcome measures), counted under the "
                  "caller's access; small numbers withheld.",
)
