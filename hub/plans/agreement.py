"""Who must agree a plan before it is in effect (Annex A, "Record and agree": the plan is agreed
by the individual or their representative and those responsible for commissioning their
support): the person or their representative, and the commissioner of every funding source its
budget statement names. An agreement that was withdrawn no longer counts; the withdrawal stays on
the plan (who, when, why) and the hub flags the plan."""
from __future__ import annotations

from collections.abc import Iterable

from hub.plans.model import Agreement, agreements

PERSON_ROLES = ("person", "representative")
# The agreement role that answers for each funding source of a budget statement.
ROLE_FOR_FUNDER = {
    "nhs": "nhs-commissioner",
    "local-authority": "local-authority-commissioner",
    "education": "education-commissioner",
    "other": "other-funder",
}
ROLE_NAMES = {
    "person": "the person", "representative": "their representative",
    "nhs-commissioner": "the NHS commissioner", "local-authority-commissioner": "the local authority commissioner",
    "education-commissioner": "the education commissioner", "other-funder": "the other funder",
}
# The name the person-or-representative requirement goes by in messages and lists.
PERSON_OR_REPRESENTATIVE = "person-or-representative"

RULE = "ipc-agree-1"
RULE_TEXT = ("a plan becomes active only once the person (or their representative) and the "
             "commissioner of every funding source in its budget statement have agreed it")


def commissioner_roles(funders: Iterable[str]) -> list[str]:
    """The agreement roles the funders of a plan's budget statements call for, in a stable order."""
    wanted = {ROLE_FOR_FUNDER[f] for f in funders if f in ROLE_FOR_FUNDER}
    return [role for role in ROLE_FOR_FUNDER.values() if role in wanted]


def live(plan: dict) -> list[Agreement]:
    return [a for a in agreements(plan) if a.live]


def agreed_roles(plan: dict) -> set[str]:
    return {a.role for a in live(plan) if a.role}


def missing(plan: dict, funders: Iterable[str]) -> list[str]:
    """Who has still to agree: `person-or-representative` and/or commissioner roles."""
    roles = agreed_roles(plan)
    out = [] if roles & set(PERSON_ROLES) else [PERSON_OR_REPRESENTATIVE]
    return out + [role for role in commissioner_roles(funders) if role not in roles]


def describe(roles: Iterable[str]) -> str:
    names = [ROLE_NAMES.get(r, r) if r != PERSON_OR_REPRESENTATIVE else "the person or their representative"
             for r in roles]
    return ", ".join(names)


def agreed_on(plan: dict, funders: Iterable[str]) -> str | None:
    """The date the plan became agreed: the latest of the agreements that make it so (the person's
    or representative's earliest live one, and each commissioner's); None while any is missing."""
    if missing(plan, funders):
        return None
    live_ones = live(plan)
    dates = []
    person = sorted(a.date for a in live_ones if a.role in PERSON_ROLES and a.date)
    if person:
        dates.append(person[0])
    for role in commissioner_roles(funders):
        found = sorted(a.date for a in live_ones if a.role == role and a.date)
        if found:
            dates.append(found[0])
    return max(dates)[:10] if dates else None


def withdrawn(plan: dict) -> list[Agreement]:
    """Withdrawn agreements not since given again by the same party in the same role."""
    again = {(a.party, a.role) for a in live(plan)}
    return [a for a in agreements(plan) if not a.live and (a.party, a.role) not in again]


def awaiting(plan: dict, funders: Iterable[str]) -> list[str]:
    """The commissioner roles of funders whose agreement an active plan still waits for (a
    funder added to the budget statement after the plan was agreed, or one that withdrew): their
    allocation is not in effect until they agree."""
    roles = agreed_roles(plan)
    return [role for role in commissioner_roles(funders) if role not in roles]


def awaiting_by_source(plan: dict, sources: Iterable[str]) -> dict[str, str]:
    """For an agreed plan (active or on hold), funding source → who has still to agree it
    (ROLE_NAMES), for each of `sources` whose commissioner has not; nothing while the plan is a
    draft (nothing of its budget is in effect yet). The budget page and the hub's accounts both
    ask this (hub.money.accounts, hub.web.budget)."""
    if plan.get("status") not in ("active", "on-hold"):
        return {}
    missing = set(awaiting(plan, sources))
    return {source: ROLE_NAMES[role] for source, role in ROLE_FOR_FUNDER.items() if role in missing}
