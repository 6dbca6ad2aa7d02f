"""The easy-read view of a person's plan (`/me?view=easy-read`, issue 18): the plan, their goals,
their budget (how much, who pays, how it is managed, what it has been spent on), who is involved
and when the plan will be looked at again, each said in short sentences of everyday words, about
"you" for the person and by name for someone acting for them.

Pure functions over what the page already read through the API (so the view shows nothing the
usual view would not). The sentences are English: the hub holds no translations. Where the record
knows the person's preferred language (Patient.communication) or written format (UK Core
ContactPreference), the view says so and tells them who to ask for it in that language; a
preferred format of easy read makes this the view `/me` opens with."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from hub.cohorts.membership import CONTACT_PREFERENCE
from hub.money.ledger import line_of
from hub.web import facts
from hub.web.pages import concept_text

FUNDERS = {"nhs": "the NHS", "local-authority": "the council", "education": "school or college funding",
           "other": "another organisation"}
MANAGED = {
    "direct-payment": "{who_cap} get{s} this money and {pay} for support {self}.",
    "notional": "The organisation that pays keeps this money. It pays for support for {who}.",
    "third-party": "Another organisation looks after this money. It pays for support for {who}.",
}
ENGLISH = ("en", "en-GB", "en-US")


@dataclass
class Voice:
    """Who the sentences are about: the person ("you") or, for a proxy, the person by name."""
    name: str
    acting: bool

    @property
    def who(self) -> str:
        return self.name if self.acting else "you"

    @property
    def whose(self) -> str:
        return f"{self.name}'s" if self.acting else "your"

    def words(self) -> dict[str, str]:
        return {"who": self.who, "who_cap": self.who[:1].upper() + self.who[1:], "whose": self.whose,
                "s": "s" if self.acting else "", "pay": "pays" if self.acting else "pay",
                "self": "themselves" if self.acting else "yourself"}


@dataclass
class EasyRead:
    plan: list[str] = field(default_factory=list)
    goals: list[list[str]] = field(default_factory=list)
    money: list[str] = field(default_factory=list)
    spent_on: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    language: list[str] = field(default_factory=list)


def money(value: Decimal | float) -> str:
    """Pounds as people say them: £1,200 (pence only when there are some)."""
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    return f"£{amount:,.0f}" if amount == amount.to_integral() else f"£{amount:,.2f}"


def preferences(patient: dict[str, Any]) -> tuple[str | None, str | None]:
    """The person's preferred language (when not English) and written format, as words, if the
    record knows them."""
    languages = patient.get("communication") or []
    chosen = next((c for c in languages if c.get("preferred")), languages[0] if languages else None)
    language = None
    if chosen and chosen.get("language"):
        codes = [c.get("code") for c in chosen["language"].get("coding") or []]
        if not any(code in ENGLISH for code in codes):
            language = concept_text(chosen["language"]) or None
    written = None
    for extension in patient.get("extension") or []:
        if extension.get("url") == CONTACT_PREFERENCE:
            for part in extension.get("extension") or []:
                if part.get("url") == "PreferredWrittenCommunicationFormat" and part.get("valueCodeableConcept"):
                    written = concept_text(part["valueCodeableConcept"]) or None
    return language, written


def wants_easy_read(patient: dict[str, Any]) -> bool:
    """Whether the person's preferred written format is easy read."""
    written = preferences(patient)[1] or ""
    return "easy" in written.lower()


def easy_read(*, voice: Voice, plan: dict[str, Any] | None, stage: str, goals: list[dict[str, Any]],
              allocations: list[dict[str, Any]], charges: list[dict[str, Any]], coordinator: str,
              contact: list[str], carers: list[str], team: list[dict[str, str]], patient: dict[str, Any],
              today: date | None = None) -> EasyRead:
    words = voice.words()
    out = EasyRead()
    if plan is None:
        out.plan.append(f"There is no plan yet. A coordinator will make it with {voice.who}.")
    else:
        out.plan += [f"This is {voice.whose} plan.", f"It says what matters to {voice.who}.",
                     f"The plan is at this stage: {stage}."]
    for goal in goals:
        text = (goal["text"] or "something not written down yet").strip().rstrip(".")
        said = [f"{words['who_cap']} want{words['s']} to: {text}.",
                f"How it is going: {goal['how']}."]
        notes = len(goal["notes"])
        if notes:
            said.append(("There is 1 note" if notes == 1 else f"There are {notes} notes") + " about this goal.")
        out.goals.append(said)
    if not goals:
        out.goals.append(["No goals are written down yet."])
    total = sum((Decimal(str(a["amount"])) for a in allocations), Decimal(0))
    if allocations:
        out.money.append(f"{words['who_cap']} {'has' if voice.acting else 'have'} {money(total)} for care and "
                         "support.")
        for row in allocations:
            funder = FUNDERS.get(row["source_code"], "another organisation")
            option = facts.code_of(row["option"]) or ""
            out.money.append(f"{money(row['amount'])} comes from {funder}.")
            if option in MANAGED:
                out.money.append(MANAGED[option].format(**words))
            if row.get("purpose"):
                out.money.append(f"It is for: {row['purpose'].strip().rstrip('.')}.")
        spent = [r["spent"] for r in allocations if r.get("spent") is not None]
        if spent:
            used = sum((Decimal(str(s)) for s in spent), Decimal(0))
            out.money.append(f"{money(used)} has been spent so far. {money(max(total - used, Decimal(0)))} is left.")
    else:
        out.money.append("No money for care has been agreed yet.")
    by_kind: dict[str, Decimal] = {}
    for charge in charges:
        line = line_of(charge)
        if line is not None and line.kind == "spend":
            what = concept_text(charge.get("code")) or "Other things"
            by_kind[what] = by_kind.get(what, Decimal(0)) + line.amount
    out.spent_on = [f"{what}: {money(amount)}" for what, amount in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    if coordinator:
        out.people.append(f"{coordinator} is {voice.whose} coordinator. They help with the plan.")
        out.people += [f"How to contact them: {c}." for c in contact]
    else:
        out.people.append("No coordinator is named yet.")
    if carers:
        out.people.append(f"{', '.join(carers)} {'helps' if len(carers) == 1 else 'help'} {voice.who} as "
                          f"{'a carer' if len(carers) == 1 else 'carers'}.")
    for member in team:
        out.people.append(f"{member['name']} is in {voice.whose} team{': ' + member['role'] if member['role'] else ''}.")
    due = facts.next_review(plan) if plan else None
    if due and facts.is_overdue(due, today):
        out.review.append(f"The plan should have been looked at again by {_day(due)}. "
                          f"{words['who_cap']} can ask for this now.")
    elif due:
        out.review.append(f"The plan will be looked at again by {_day(due)}.")
    else:
        out.review.append("No date is set yet to look at the plan again.")
    out.review.append(f"{words['who_cap']} can ask to look at the plan sooner at any time.")
    language, written = preferences(patient)
    ask = coordinator or "the coordinator"
    if language:
        out.language.append(f"The record says {voice.who} prefer{words['s']} {language}. This page is in "
                            f"English. Ask {ask} for the plan in {language}.")
    if written and "easy" not in written.lower():
        out.language.append(f"The record says {voice.who} like{words['s']} information as: {written}. "
                            f"Ask {ask} for it that way.")
    return out


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text[:10]).strftime("%-d %B %Y")
    except ValueError:
        return text
