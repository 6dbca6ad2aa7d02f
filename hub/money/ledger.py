"""An account's position computed from its spend lines, never typed in: spend to date, refunds,
money returned to the funder or clawed back, the balance, what is free to spend after the
contingency reserve, what the plan expected to be spent by now, and whether spend is running
ahead of it. Pure functions over Account and ChargeItem JSON; money is Decimal, never float."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from hub.money.statement import CS, FUNDING_SOURCE, MANAGEMENT_OPTION, SD, money_value

SPEND_KIND = f"{CS}/ipc-spend-kind"
KINDS = ("spend", "refund", "returned", "clawed-back")
# Spend is running ahead of plan when it is more than the plan expected by now (the allocation
# less its contingency, spread evenly over the statement's period) by more than this share of
# that money: a month's lump sum early in the year is normal, a quarter's is worth a look.
AHEAD_TOLERANCE = Decimal("0.10")
PENNY = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Line:
    """One spend line as the ledger needs it."""
    id: str
    day: date
    kind: str
    amount: Decimal
    account: str | None  # Account id the line names, if any
    funder: str | None
    option: str | None


@dataclass(slots=True)
class Position:
    account_id: str
    funder: str
    option: str
    start: date | None
    end: date | None
    allocated: Decimal
    contingency: Decimal = Decimal(0)
    contribution: Decimal = Decimal(0)
    spent: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    returned: Decimal = Decimal(0)
    clawed_back: Decimal = Decimal(0)
    expected: Decimal = Decimal(0)
    lines: list[str] = field(default_factory=list)

    @property
    def spent_net(self) -> Decimal:
        """Spend to date: what was paid out less what payees paid back."""
        return self.spent - self.refunded

    @property
    def balance(self) -> Decimal:
        return self.allocated - self.spent_net - self.returned - self.clawed_back

    @property
    def available(self) -> Decimal:
        """What is free to spend on the plan's support: the balance less the contingency reserve."""
        return self.balance - self.contingency

    @property
    def ahead_of_plan(self) -> bool:
        plan_money = self.allocated - self.contingency
        return self.spent_net > 0 and self.spent_net > self.expected + (plan_money * AHEAD_TOLERANCE)

    @property
    def overspent(self) -> bool:
        return self.balance < 0


def _code(concept: dict[str, Any] | None, system: str) -> str | None:
    return next((c.get("code") for c in (concept or {}).get("coding") or [] if c.get("system") == system), None)


def _ext(resource: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in resource.get("extension") or [] if e.get("url") == f"{SD}/{name}"), None)


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def line_of(charge: dict[str, Any]) -> Line | None:
    """A ChargeItem as a ledger line; None if it carries no amount or date, or was entered in error."""
    if charge.get("status") in ("entered-in-error", "aborted", "planned"):
        return None
    day = _day(charge.get("occurrenceDateTime") or (charge.get("occurrencePeriod") or {}).get("start"))
    if day is None or not charge.get("priceOverride"):
        return None
    kind = _code((_ext(charge, "spend-kind") or {}).get("valueCodeableConcept"), SPEND_KIND) or "spend"
    account = next((a["reference"].removeprefix("Account/") for a in charge.get("account") or []
                    if str(a.get("reference", "")).startswith("Account/")), None)
    return Line(charge.get("id", ""), day, kind, abs(money_value(charge["priceOverride"])), account,
                _code((_ext(charge, "funding-source") or {}).get("valueCodeableConcept"), FUNDING_SOURCE),
                _code((_ext(charge, "management-option") or {}).get("valueCodeableConcept"), MANAGEMENT_OPTION))


def position(account: dict[str, Any], lines: list[Line], today: date) -> Position:
    """The account's position on `today` from the lines booked to it (by reference, or by funder,
    management option and a date inside its period)."""
    period = account.get("servicePeriod") or {}
    found = Position(
        account["id"], _code((_ext(account, "funding-source") or {}).get("valueCodeableConcept"), FUNDING_SOURCE) or "",
        _code(account.get("type"), MANAGEMENT_OPTION) or "", _day(period.get("start")), _day(period.get("end")),
        money_value((_ext(account, "allocated-amount") or {}).get("valueMoney")),
        money_value((_ext(account, "contingency-reserve") or {}).get("valueMoney")),
        money_value((_ext(account, "personal-contribution") or {}).get("valueMoney")))
    for line in lines:
        if not books_to(line, found):
            continue
        found.lines.append(line.id)
        if line.kind == "refund":
            found.refunded += line.amount
        elif line.kind == "returned":
            found.returned += line.amount
        elif line.kind == "clawed-back":
            found.clawed_back += line.amount
        else:
            found.spent += line.amount
    found.expected = expected_by(found, today)
    return found


def books_to(line: Line, account: Position) -> bool:
    if line.account is not None:
        return line.account == account.account_id
    if (line.funder, line.option) != (account.funder, account.option):
        return False
    return (account.start is None or line.day >= account.start) and (account.end is None or line.day <= account.end)


def expected_by(account: Position, today: date) -> Decimal:
    """What the plan expected to be spent by `today`: the allocation less its contingency, spread
    evenly over the period (all of it once the period is over, none before it starts)."""
    plan_money = account.allocated - account.contingency
    if account.start is None or account.end is None or account.end < account.start:
        return plan_money
    if today < account.start:
        return Decimal(0)
    days = (account.end - account.start).days + 1
    elapsed = min(days, (today - account.start).days + 1)
    return (plan_money * elapsed / days).quantize(PENNY)
