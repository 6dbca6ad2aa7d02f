"""Python equivalents of the guide's own FHIRPath invariants, by constraint key.

The FHIRPath expression in the StructureDefinition is the definition of each rule; fhirpathpy
evaluates it for any constraint without an entry here. For the guide's own keys the hub runs
these equivalents instead, because fhirpathpy took 100-700 µs per expression here (more than
the whole structural check of a Patient), which broke the bench's budget for profile checks.
tests/unit/test_validation_rules.py proves each one agrees with its FHIRPath expression on every
example and every mutated example."""
from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hub.fhir.identifiers import is_valid_nhs_number
from hub.fhir.validation.guide import CANONICAL_BASE

_SD = f"{CANONICAL_BASE}/StructureDefinition/"
_COORDINATOR_ROLE = (f"{CANONICAL_BASE}/CodeSystem/ipc-care-team-role", "care-coordinator")
_SERVICE_NUMBER = re.compile(r"^[A-Z0-9]{5,10}$")


def _extensions(node: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(node, dict):
        return []
    return [e for e in node.get("extension", ()) if isinstance(e, dict) and e.get("url") == url]


def _money(extension: dict[str, Any]) -> Any:
    value = extension.get("valueMoney")
    return value.get("value") if isinstance(value, dict) else None


def service_number_format(value: Any) -> bool:
    return isinstance(value, str) and bool(_SERVICE_NUMBER.match(value))


def active_plan_agreed(plan: dict[str, Any]) -> bool:
    """ipc-cp-1: a plan written as active carries an agreement. Who must have agreed (ipc-agree-1)
    needs the plan's budget statements, so the store judges that (hub.plans.lifecycle); the
    store also sets the next review date when the plan becomes active, so the writer need not."""
    return plan.get("status") != "active" or bool(_extensions(plan, _SD + "plan-agreement"))


def active_plan_has_coordinator(plan: dict[str, Any]) -> bool:
    return plan.get("status") != "active" or bool(_extensions(plan, _SD + "care-coordinator"))


def allocations_add_up(budget: dict[str, Any]) -> bool | None:
    """ipc-bud-1: the agreed amount is the sum of the allocations. None (no verdict, as FHIRPath
    gives empty) when there is no agreed amount yet. The indicative amount is an estimate made
    before planning and may differ."""
    agreed = [_money(e) for e in _extensions(budget, _SD + "agreed-amount")]
    if not agreed or agreed[0] is None:
        return None
    amounts = [_money(a) for alloc in _extensions(budget, _SD + "budget-allocation")
               for a in _extensions(alloc, "amount")]
    total = sum((Decimal(str(a)) for a in amounts if a is not None), Decimal(0))
    return total == Decimal(str(agreed[0]))


_FUNDING_SOURCE = f"{CANONICAL_BASE}/CodeSystem/ipc-funding-source"
_BUDGET_TYPE = f"{CANONICAL_BASE}/CodeSystem/ipc-budget-type"
STATUTORY_FUNDERS = ("nhs", "local-authority", "education")


def budget_types_for(funders: set[str]) -> tuple[str, ...]:
    """The budget types a funding mix allows (Nottinghamshire's types, reference 004): money
    from two or more of the NHS, the council and education is an integrated personal budget; NHS
    money alone a personal health budget (a carer's, for a carer); anything else a personal
    budget. The first is the one the hub gives a statement whose mix it joined."""
    statutory = set(funders) & set(STATUTORY_FUNDERS)
    if len(statutory) > 1:
        return ("integrated-personal-budget",)
    if statutory == {"nhs"}:
        return ("personal-health-budget", "carer-personal-health-budget")
    return ("personal-budget",)


def funders_of(budget: dict[str, Any]) -> set[str]:
    return {c.get("code") for alloc in _extensions(budget, _SD + "budget-allocation")
            for source in _extensions(alloc, "fundingSource")
            for c in (source.get("valueCodeableConcept") or {}).get("coding", ())
            if isinstance(c, dict) and c.get("system") == _FUNDING_SOURCE}


def budget_type_follows_mix(budget: dict[str, Any]) -> bool:
    """ipc-bud-3."""
    types = [c.get("code") for e in _extensions(budget, _SD + "budget-type")
             for c in (e.get("valueCodeableConcept") or {}).get("coding", ())
             if isinstance(c, dict) and c.get("system") == _BUDGET_TYPE]
    return not types or all(t in budget_types_for(funders_of(budget)) for t in types)


def carer_has_contingency(carer: dict[str, Any]) -> bool:
    return not _extensions(carer, _SD + "caring-role") or bool(_extensions(carer, _SD + "carer-contingency"))


def one_coordinator(team: dict[str, Any]) -> bool:
    found = 0
    for participant in team.get("participant", ()):
        for role in participant.get("role", ()) if isinstance(participant, dict) else ():
            for coding in role.get("coding", ()) if isinstance(role, dict) else ():
                found += isinstance(coding, dict) and (coding.get("system"), coding.get("code")) == _COORDINATOR_ROLE
    return found == 1


def declined_request_says_why(task: dict[str, Any]) -> bool:
    return task.get("status") != "rejected" or bool(task.get("statusReason"))


def finished_meeting_has_end(encounter: dict[str, Any]) -> bool:
    return encounter.get("status") != "finished" or bool((encounter.get("period") or {}).get("end"))


def answers_a_guide_questionnaire(response: dict[str, Any]) -> bool | None:
    """ipc-or-1. None (no verdict) without a questionnaire: cardinality reports that."""
    questionnaire = response.get("questionnaire")
    if questionnaire is None:
        return None
    return isinstance(questionnaire, str) and questionnaire.startswith(f"{CANONICAL_BASE}/Questionnaire/")


_EHC_SECTION = f"{CANONICAL_BASE}/CodeSystem/ipc-ehc-section"


def ehc_plan_has_end(plan: dict[str, Any]) -> bool:
    """ehc-1 (the day itself, against the birth date, is judged by the store: hub.plans.ehc)."""
    period = plan.get("period")
    return isinstance(period, dict) and period.get("end") is not None


def ehc_provision_names_section(plan: dict[str, Any]) -> bool:
    """ehc-2: every activity's detail.code has a coding from the EHC section CodeSystem."""
    for activity in plan.get("activity") or ():
        detail = activity.get("detail") if isinstance(activity, dict) else None
        code = detail.get("code") if isinstance(detail, dict) else None
        codings = code.get("coding") if isinstance(code, dict) else None
        if not any(isinstance(c, dict) and c.get("system") == _EHC_SECTION for c in codings or ()):
            return False
    return True


def issued_ehc_plan_addresses_needs(plan: dict[str, Any]) -> bool:
    """ehc-3."""
    return plan.get("status") == "draft" or bool(plan.get("addresses"))


def views_are_the_senders_own(communication: dict[str, Any]) -> bool | None:
    """ypv-1: sender and subject are one reference. None (no verdict, as FHIRPath's empty
    comparison) when either reference is missing: cardinality reports that."""
    sender, subject = communication.get("sender"), communication.get("subject")
    sender_ref = sender.get("reference") if isinstance(sender, dict) else None
    subject_ref = subject.get("reference") if isinstance(subject, dict) else None
    if sender_ref is None or subject_ref is None:
        return None
    return sender_ref == subject_ref


NATIVE: dict[str, Callable[[Any], bool | None]] = {
    "ipc-nhs-1": is_valid_nhs_number,
    "ipc-mod-1": service_number_format,
    "ipc-cp-1": active_plan_agreed,
    "ipc-cp-2": active_plan_has_coordinator,
    "ipc-bud-1": allocations_add_up,
    "ipc-bud-3": budget_type_follows_mix,
    "ipc-car-1": carer_has_contingency,
    "ipc-ct-1": one_coordinator,
    "ipc-rr-1": declined_request_says_why,
    "ipc-mt-1": finished_meeting_has_end,
    "ipc-or-1": answers_a_guide_questionnaire,
    "ehc-1": ehc_plan_has_end,
    "ehc-2": ehc_provision_names_section,
    "ehc-3": issued_ehc_plan_addresses_needs,
    "ypv-1": views_are_the_senders_own,
}
