"""Group/[id]/$linked-dataset: a de-identified, linked dataset about a cohort's members for a
commissioner (hub/datasets/linked.py says how it is de-identified), with its data dictionary and
a summary MeasureReport, as attachments in a Parameters.

Who and why:
- the recipient is the client that asks (its token): the pseudonyms are keyed by a secret of its
  own, so no two recipients' files join;
- it is secondary use, not care: a token whose purposeOfUse is direct care (TREAT) is refused
  (403), and the request must say why (`purpose`, required: it is kept with the release);
- everything is read under the recipient's own access: a person whose record (Patient) it may
  not read is not in the dataset at all, and of the others only what their consent lets it see;
- what left is recorded twice: a `dataset_release` row (recipient, organisation, purpose,
  cohort, rows, columns, suppressed values, the CSV's SHA-256) and the request's AuditEvent,
  which names every person in the file, so each can learn their data left and for whom.

Read scopes needed: Group, Patient, CarePlan, Goal, Task, Encounter (review meetings) and
Observation (outcome measures) (403 otherwise, never a narrower dataset passed off as whole);
spend comes from the spend lines only with ChargeItem read (else the column is empty)."""
from __future__ import annotations

import base64
import hashlib
from datetime import UTC, date, datetime

from hub.datasets import linked, records, summary
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, first, parameters
from hub.store import datasets

DIRECT_CARE = "TREAT"


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_id is not None
    for name in records.READS:
        ctx.access.require(name, "r")
    principal = ctx.principal
    if principal is None:
        raise FhirError("forbidden", "a linked dataset is released to an identified client: sign in with a token",
                        status=403)
    if principal.purpose_of_use == DIRECT_CARE:
        raise FhirError("forbidden", "a linked dataset is not direct care: ask with a token whose purposeOfUse "
                        "is the secondary use it serves (e.g. HOPERAT, POPHLTH)", status=403)
    pairs, _ = parameters(request)
    purpose = (first(pairs, "purpose") or "").strip()
    if not purpose:
        raise FhirError("required", "say why the dataset is needed: the parameter 'purpose'", status=400)
    today = datetime.now(UTC).date()
    async with ctx.writing() as conn:
        found = await records.members(conn, res_id, ctx.access)
        key = await datasets.recipient_key(conn, principal.client_id)
        minimum = ctx.settings.dataset_min_count
        dataset = linked.build(list(found.people.values()), key, minimum, today)
        report = summary.report(f"Group/{res_id}", dataset.rows, minimum, today)
        release = await datasets.record_release(
            conn, recipient=principal.client_id, organisation=principal.organisation,
            partner_class=principal.partner_class, purpose_of_use=principal.purpose_of_use, purpose=purpose[:500],
            cohort=f"Group/{res_id}", people=len(dataset.rows), columns=linked.COLUMNS,
            suppressed=dataset.suppressed, sha256=hashlib.sha256(dataset.csv.encode()).hexdigest(),
            created=datetime.now(UTC))
    disclosed = found.disclosed
    ctx.touched += disclosed
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "release", "valueIdentifier": {"system": f"{CANONICAL_BASE}/Id/dataset-release", "value": release}},
        {"name": "dataset", "valueAttachment": _attachment(dataset.csv, f"{res_id}-linked.csv", today)},
        {"name": "dictionary", "valueAttachment": _attachment(dataset.dictionary, f"{res_id}-dictionary.csv", today)},
        {"name": "summary", "resource": report},
    ]}
    return Outcome(200, body=body, headers={"Cache-Control": "no-store"})


def _attachment(text: str, title: str, today: date) -> dict:
    data = text.encode()
    return {"contentType": "text/csv; charset=utf-8", "data": base64.b64encode(data).decode(), "title": title,
            "size": len(data), "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),  # noqa: S324 - FHIR says SHA-1
            "creation": today.isoformat()}


OPERATION = Operation(
    name="linked-dataset",
    definition=f"{CANONICAL_BASE}/OperationDefinition/linked-dataset",
    levels=frozenset({"instance"}),
    types=frozenset({"Group"}),
    affects_state=True,
    run=run,
    documentation="A de-identified, linked dataset about a cohort's members for the calling commissioner "
                  "(pseudonym keyed per recipient, coarsened dates, small numbers suppressed), with its data "
                  "dictionary and a summary MeasureReport; `purpose` required; audited per person.",
)
