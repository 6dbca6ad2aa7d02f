"""Every `$operation` the hub serves, listed in one place (see README.md in this folder). The
router finds an operation here by name; the HTTP layer makes its routes from this list; the
CapabilityStatement advertises exactly what it holds."""
from __future__ import annotations

from hub.interactions.operations import (
    budget_position,
    cohort_report,
    cost_of_care,
    evaluate_cohort,
    everything,
    export,
    indicative_budget,
    linked_dataset,
    subscription_events,
    subscription_status,
    terminology,
    validate,
)
from hub.interactions.operations.operation import Operation

OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    validate.OPERATION,
    everything.OPERATION,
    export.OPERATION,
    evaluate_cohort.OPERATION,
    linked_dataset.OPERATION,
    cohort_report.OPERATION,
    terminology.LOOKUP,
    terminology.VALIDATE_CODE,
    terminology.EXPAND,
    indicative_budget.OPERATION,
    budget_position.OPERATION,
    cost_of_care.OPERATION,
    subscription_status.OPERATION,
    subscription_events.OPERATION,
)}
