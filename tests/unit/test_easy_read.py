"""The easy-read view's sentences (hub/web/easy_read.py): goals, money (how much, who pays, how it
is managed, what it was spent on), the people involved and the next review, about "you" or, for
someone acting for the person, by name; the person's preferred language and format where the
record knows them."""
from __future__ import annotations

from datetime import date

from hub.web.easy_read import Voice, easy_read, preferences, wants_easy_read

CS = "https://ipc-hub.example.org/fhir/CodeSystem/"
EXT = "https://ipc-hub.example.org/fhir/StructureDefinition/"
PREFERENCE = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-ContactPreference"


def plan(review: str | None) -> dict:
    found = {"resourceType": "CarePlan", "id": "p1", "extension": []}
    if review:
        found["extension"].append({"url": f"{EXT}next-review-date", "valueDate": review})
    return found


def charge(code: str, amount: str, kind: str = "spend") -> dict:
    return {"resourceType": "ChargeItem", "status": "billed", "occurrenceDateTime": "2026-06-01",
            "code": {"coding": [{"system": f"{CS}ipc-spend-category", "code": code, "display": code.title()}]},
            "priceOverride": {"value": amount, "currency": "GBP"},
            "extension": [{"url": f"{EXT}spend-kind", "valueCodeableConcept": {
                "coding": [{"system": f"{CS}ipc-spend-kind", "code": kind}]}}]}


ALLOCATIONS = [
    {"source": {}, "source_code": "nhs", "option": {"coding": [{"system": f"{CS}ipc-management-option",
                                                                "code": "direct-payment"}]},
     "amount": 9000.0, "spent": 1500.0, "balance": 7500.0, "purpose": "Personal assistant, 10 hours a week."},
    {"source": {}, "source_code": "local-authority", "option": {"coding": [{"system": f"{CS}ipc-management-option",
                                                                            "code": "notional"}]},
     "amount": 3000.5, "spent": 0.0, "balance": 3000.5, "purpose": ""},
]


def said(voice: Voice, patient: dict, review: str | None = "2027-03-01", today: date = date(2026, 12, 1)):
    return easy_read(voice=voice, plan=plan(review), stage="Agreed",
                     goals=[{"text": "Live in my own flat.", "how": "Improving", "notes": [{"text": "a"}]}],
                     allocations=ALLOCATIONS, charges=[charge("transport", "40"), charge("transport", "60.50"),
                                                       charge("activities", "25"), charge("activities", "10", "refund")],
                     coordinator="Karen Hughes", contact=["phone: 0808 1914 218"], carers=["Pat Whitfield"],
                     team=[{"name": "Chapel Street Surgery", "role": "GP"}], patient=patient, today=today)


def test_the_person_is_told_their_goals_money_people_and_review_in_plain_words():
    out = said(Voice("Dan Whitfield", acting=False), {"resourceType": "Patient"})
    assert out.goals == [["You want to: Live in my own flat.", "How it is going: Improving.",
                          "There is 1 note about this goal."]]
    assert out.money[0] == "You have £12,000.50 for care and support."
    assert "£9,000 comes from the NHS." in out.money
    assert "You get this money and pay for support yourself." in out.money
    assert "It is for: Personal assistant, 10 hours a week." in out.money
    assert "The organisation that pays keeps this money. It pays for support for you." in out.money
    assert "£1,500 has been spent so far. £10,500.50 is left." in out.money
    assert out.spent_on == ["Transport: £100.50", "Activities: £25"]  # a refund is not spending
    assert out.people[:2] == ["Karen Hughes is your coordinator. They help with the plan.",
                              "How to contact them: phone: 0808 1914 218."]
    assert "Pat Whitfield helps you as a carer." in out.people
    assert out.review[0] == "The plan will be looked at again by 1 March 2027."
    assert out.language == []


def test_someone_acting_for_the_person_reads_about_them_by_name_and_an_overdue_review():
    out = said(Voice("Graham Hall", acting=True), {"resourceType": "Patient"}, review="2026-11-01")
    assert out.plan[0] == "This is Graham Hall's plan."
    assert out.goals[0][0] == "Graham Hall wants to: Live in my own flat."
    assert out.money[0] == "Graham Hall has £12,000.50 for care and support."
    assert "Graham Hall gets this money and pays for support themselves." in out.money
    assert out.review[0].startswith("The plan should have been looked at again by 1 November 2026.")


def test_the_preferred_language_and_format_where_the_record_knows_them():
    welsh = {"resourceType": "Patient", "communication": [{"preferred": True, "language": {
        "coding": [{"system": "urn:ietf:bcp:47", "code": "cy", "display": "Welsh"}]}}],
             "extension": [{"url": PREFERENCE, "extension": [{"url": "PreferredWrittenCommunicationFormat",
                                                               "valueCodeableConcept": {"text": "Large print"}}]}]}
    assert preferences(welsh) == ("Welsh", "Large print")
    out = said(Voice("Dan Whitfield", acting=False), welsh)
    assert out.language == ["The record says you prefer Welsh. This page is in English. Ask Karen Hughes for the "
                            "plan in Welsh.", "The record says you like information as: Large print. Ask Karen "
                            "Hughes for it that way."]
    english = {"resourceType": "Patient", "communication": [{"language": {"coding": [{"code": "en-GB"}]}}]}
    assert preferences(english) == (None, None) and not wants_easy_read(english)
    easy = {"resourceType": "Patient", "extension": [{"url": PREFERENCE, "extension": [
        {"url": "PreferredWrittenCommunicationFormat", "valueCodeableConcept": {"text": "Easy read"}}]}]}
    assert wants_easy_read(easy) and said(Voice("D", acting=False), easy).language == []
