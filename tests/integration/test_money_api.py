"""The money side of the record over the real API: an indicative budget from an assessment with
its reasoning and Provenance; one account per allocation and management option (an NHS direct
payment beside a council notional budget, one funder's mix kept); balances computed from spend
lines and a Task for the coordinator when spend runs ahead of plan; a person's cost of care
before and after, NHS hospital activity priced by the tariff."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from hub.fhir.jsontext import dumps, loads
from tests.validation_cases import example

JSON = {"Content-Type": "application/fhir+json"}
B = "https://ipc-hub.example.org/fhir"
SD, CS = f"{B}/StructureDefinition", f"{B}/CodeSystem"
PATIENT = "Patient/veteran-patient"


def put(fhir, resource: dict) -> dict:
    r = fhir.put(f"/{resource['resourceType']}/{resource['id']}", content=dumps(resource), headers=JSON)
    assert r.status_code in (200, 201), r.text
    return loads(r.content)


def post(fhir, resource: dict) -> dict:
    r = fhir.post(f"/{resource['resourceType']}", content=dumps(resource), headers=JSON)
    assert r.status_code == 201, r.text
    return loads(r.content)


def params(body: dict) -> dict:
    return {p["name"]: p for p in body["parameter"]}


def concept(system: str, code: str) -> dict:
    return {"coding": [{"system": f"{CS}/{system}", "code": code}]}


def allocation(funder: str, option: str, amount: str, **extra) -> dict:
    parts = [{"url": "fundingSource", "valueCodeableConcept": concept("ipc-funding-source", funder)},
             {"url": "managementOption", "valueCodeableConcept": concept("ipc-management-option", option)},
             {"url": "amount", "valueMoney": {"value": Decimal(amount), "currency": "GBP"}}]
    parts += [{"url": k, "valueMoney": {"value": Decimal(v), "currency": "GBP"}} for k, v in extra.items()]
    return {"url": f"{SD}/budget-allocation", "extension": parts}


def statement(kind: str, allocations: list[dict], start: date, *, statement_id: str = "veteran-budget") -> dict:
    total = sum(Decimal(str(p["valueMoney"]["value"])) for a in allocations for p in a["extension"] if p["url"] == "amount")
    budget = example("CarePlan-veteran-budget")
    budget["id"] = statement_id
    budget["extension"] = [{"url": f"{SD}/budget-type", "valueCodeableConcept": concept("ipc-budget-type", kind)},
                           *allocations, {"url": f"{SD}/agreed-amount", "valueMoney": {"value": total, "currency": "GBP"}}]
    budget["period"] = {"start": start.isoformat(), "end": (start + timedelta(days=364)).isoformat()}
    return budget


def the_record(fhir, hold_referenced) -> None:
    """The veteran's plan (Sam's coordinator named) and everything it refers to."""
    plan = example("CarePlan-veteran-plan")
    hold_referenced([plan, example("CarePlan-veteran-budget"), example("Patient-veteran-patient")])
    put(fhir, example("Patient-veteran-patient"))
    put(fhir, plan)


def accounts(fhir) -> dict[tuple[str, str], dict]:
    found = fhir.get("/Account", params={"subject": PATIENT, "_count": "50"}).json()
    out = {}
    for entry in found.get("entry", []):
        account = entry["resource"]
        funder = next(e for e in account["extension"] if e["url"] == f"{SD}/funding-source")
        out[(funder["valueCodeableConcept"]["coding"][0]["code"], account["type"]["coding"][0]["code"])] = account
    return out


def test_an_indicative_budget_from_an_assessment_shows_how_it_was_reached(clean_db, fhir, hold_referenced):
    the_record(fhir, hold_referenced)
    budget = put(fhir, example("CarePlan-veteran-budget"))
    for name in ("Questionnaire-ras-assessment-example", "QuestionnaireResponse-veteran-ras-assessment",
                 "ChargeItemDefinition-ras-example"):
        put(fhir, example(name))
    r = fhir.post(f"/CarePlan/{budget['id']}/$indicative-budget", content=dumps({
        "resourceType": "Parameters", "parameter": [
            {"name": "assessment", "valueString": "QuestionnaireResponse/veteran-ras-assessment"}]}), headers=JSON)
    assert r.status_code == 200, r.text
    answer = params(r.json())
    assert answer["amount"]["valueMoney"] == {"value": 28462.50, "currency": "GBP"}
    assert answer["system"]["valueCanonical"] == f"{B}/ChargeItemDefinition/ras-example|2026.1"
    steps = [p["part"] for p in r.json()["parameter"] if p["name"] == "step"]
    texts = [next(x["valueString"] for x in s if x["name"] == "text") for s in steps]
    assert any("Help with most things: 25 points" in t for t in texts)
    assert "55 points × £450.00 a point = £24,750.00" in texts
    assert "Main carer unable to keep caring: + 15% of £24,750.00 = £3,712.50" in texts
    assert "Rural travel: does not apply" in texts
    # Recorded on the statement beside the agreed amount, which it does not change.
    stored = fhir.get(f"/CarePlan/{budget['id']}").json()
    ext = {e["url"]: e for e in stored["extension"]}
    assert ext[f"{SD}/indicative-amount"]["valueMoney"]["value"] == 28462.50
    assert ext[f"{SD}/agreed-amount"]["valueMoney"]["value"] == 38500.0
    basis = {e["url"]: e for e in ext[f"{SD}/indicative-basis"]["extension"]}
    assert "£3,712.50" in basis["reasoning"]["valueMarkdown"]
    assert basis["assessment"]["valueReference"] == {"reference": "QuestionnaireResponse/veteran-ras-assessment"}
    # Provenance: who asked, from which assessment version, with which version of the system.
    target = answer["statement"]["valueReference"]["reference"]
    found = fhir.get("/Provenance", params={"target": target}).json()["entry"]
    [proof] = [p for p in found if p["resource"]["target"] == [{"reference": target}]]
    entities = {(e["role"], e["what"]["reference"].split("/_history")[0]) for e in proof["resource"]["entity"]}
    assert entities == {("source", "QuestionnaireResponse/veteran-ras-assessment"),
                        ("derivation", "ChargeItemDefinition/ras-example")}
    # An assessment of another questionnaire is refused with the reason, and nothing changes.
    other = example("QuestionnaireResponse-veteran-ras-assessment")
    other.update(id="other-assessment", questionnaire=f"{B}/Questionnaire/something-else|1")
    put(fhir, other)
    refused = fhir.post(f"/CarePlan/{budget['id']}/$indicative-budget",
                        params={"assessment": "QuestionnaireResponse/other-assessment",
                                "system": f"{B}/ChargeItemDefinition/ras-example"})
    assert refused.status_code == 422, refused.text
    assert "scores" in refused.json()["issue"][0]["diagnostics"]
    assert fhir.get(f"/CarePlan/{budget['id']}").json()["meta"]["versionId"] == stored["meta"]["versionId"]


def test_an_nhs_direct_payment_and_a_council_notional_budget_keep_their_own_accounts(clean_db, fhir, hold_referenced):
    the_record(fhir, hold_referenced)
    start = date(2026, 4, 1)
    put(fhir, statement("integrated-personal-budget", [allocation("nhs", "direct-payment", "9000.00"),
                                                        allocation("local-authority", "notional", "5200.00",
                                                                   personalContribution="520.00")], start))
    held = accounts(fhir)
    assert set(held) == {("nhs", "direct-payment"), ("local-authority", "notional")}
    council = {e["url"]: e for e in held[("local-authority", "notional")]["extension"]}
    assert council[f"{SD}/allocated-amount"]["valueMoney"]["value"] == 5200.00
    assert council[f"{SD}/personal-contribution"]["valueMoney"]["value"] == 520.00
    assert council[f"{SD}/budget-statement"]["valueReference"] == {"reference": "CarePlan/veteran-budget"}
    # The NHS splits its share: part direct payment, part notional. Both are kept, each its own account.
    put(fhir, statement("integrated-personal-budget", [allocation("nhs", "direct-payment", "6000.00"),
                                                        allocation("nhs", "notional", "3000.00"),
                                                        allocation("local-authority", "notional", "5200.00")], start))
    held = accounts(fhir)
    assert set(held) == {("nhs", "direct-payment"), ("nhs", "notional"), ("local-authority", "notional")}
    assert {k: a["status"] for k, a in held.items()} == {k: "active" for k in held}
    # A statement whose type does not follow its mix is refused, naming the rule.
    wrong = statement("personal-budget", [allocation("nhs", "direct-payment", "9000.00")], start)
    r = fhir.put("/CarePlan/veteran-budget", content=dumps(wrong), headers=JSON)
    assert r.status_code == 422 and "ipc-bud-3" in r.text
    # The council withdraws: its account is closed with nothing allocated, never deleted.
    put(fhir, statement("personal-health-budget", [allocation("nhs", "direct-payment", "6000.00"),
                                                    allocation("nhs", "notional", "3000.00")], start))
    held = accounts(fhir)
    closed = held[("local-authority", "notional")]
    assert closed["status"] == "inactive"
    assert next(e for e in closed["extension"] if e["url"] == f"{SD}/allocated-amount")["valueMoney"]["value"] == 0


def line(kind: str, amount: str, day: date, category: str = "personal-assistant", funder: str = "nhs",
         option: str = "direct-payment", **extra) -> dict:
    charge = example("ChargeItem-veteran-pa-wages")
    charge.pop("id")
    charge.pop("account")
    charge["extension"] = [{"url": f"{SD}/spend-kind", "valueCodeableConcept": concept("ipc-spend-kind", kind)},
                           {"url": f"{SD}/funding-source", "valueCodeableConcept": concept("ipc-funding-source", funder)},
                           {"url": f"{SD}/management-option", "valueCodeableConcept": concept("ipc-management-option", option)}]
    charge["code"] = concept("ipc-spend-category", category)
    charge["occurrenceDateTime"] = day.isoformat()
    charge["priceOverride"] = {"value": Decimal(amount), "currency": "GBP"}
    charge.update(extra)
    return charge


def test_balances_come_from_spend_lines_and_spend_ahead_of_plan_raises_a_task(clean_db, fhir, hold_referenced):
    the_record(fhir, hold_referenced)
    today = date.today()
    start = today - timedelta(days=30)       # a month into the year: the plan expects about a twelfth spent
    put(fhir, statement("personal-health-budget", [allocation("nhs", "direct-payment", "12000.00",
                                                               contingency="1000.00")], start))
    [account] = accounts(fhir).values()
    post(fhir, line("spend", "1500.00", start + timedelta(days=3)))
    post(fhir, line("refund", "100.00", start + timedelta(days=5)))
    post(fhir, line("returned", "200.00", start + timedelta(days=6), account=[{"reference": f"Account/{account['id']}"}]))
    position = fhir.get("/CarePlan/veteran-budget/$budget-position", params={"date": today.isoformat()})
    assert position.status_code == 200, position.text
    [held] = [p["part"] for p in position.json()["parameter"] if p["name"] == "account"]
    figures = {p["name"]: p.get("valueMoney", {}).get("value", p.get("valueBoolean", p.get("valueInteger")))
               for p in held}
    assert figures["spent"] == 1400.00 and figures["refunded"] == 100.00 and figures["returned"] == 200.00
    assert figures["balance"] == 10400.00 and figures["available"] == 9400.00 and figures["lines"] == 3
    assert figures["expectedByNow"] == float((Decimal(11000) * 31 / 365).quantize(Decimal("0.01")))
    assert figures["aheadOfPlan"] is False
    assert fhir.get("/Task", params={"focus": f"Account/{account['id']}"}).json().get("total", 0) == 0
    # Equipment bought early: spend now runs well ahead of a twelfth of the year.
    post(fhir, line("spend", "2500.00", today, category="equipment"))
    tasks = fhir.get("/Task", params={"focus": f"Account/{account['id']}"}).json()["entry"]
    [task] = [t["resource"] for t in tasks]
    assert task["code"]["coding"][0]["code"] == "spend-ahead-of-plan" and task["status"] == "requested"
    assert task["owner"]["reference"] == "Practitioner/veteran-vwm"      # the coordinator the plan names
    assert "£3,900.00 spent" in task["description"]
    assert task["for"] == {"reference": PATIENT}
    # The task is in the person's budget record part, like the account and the lines.
    assert task["meta"]["tag"][0]["code"] == "budget"
    # A statement that types its spend in is refused: spend comes from the lines.
    typed = statement("personal-health-budget", [allocation("nhs", "direct-payment", "12000.00", spent="5.00")], start)
    assert fhir.put("/CarePlan/veteran-budget", content=dumps(typed), headers=JSON).status_code == 422


def encounter(eid: str, klass: str, day: str, priority: str | None = None) -> dict:
    resource = {"resourceType": "Encounter", "id": eid, "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
                "subject": {"reference": PATIENT}, "period": {"start": day}}
    if priority:
        resource["priority"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority",
                                            "code": priority}]}
    return resource


def test_a_persons_cost_of_care_before_and_after_with_nhs_activity_priced(clean_db, guide_served, fhir, hold_referenced):
    the_record(fhir, hold_referenced)
    # Before (2025/26 tariff, illustrative): a non-elective admission, two A&E attendances, an outpatient.
    for e in (encounter("adm-1", "IMP", "2025-06-02", "EM"), encounter("ae-1", "EMER", "2025-06-01"),
              encounter("ae-2", "EMER", "2025-09-14"), encounter("op-1", "AMB", "2025-11-03"),
              {**encounter("ae-x", "EMER", "2025-10-01"), "status": "cancelled"}):
        put(fhir, e)
    # ... and a continuing healthcare invoice for a care home.
    post(fhir, line("spend", "3000.00", date(2025, 7, 31), category="continuing-healthcare", option="notional",
                    extension=[*line("spend", "1", date(2025, 7, 31), option="notional")["extension"],
                               {"url": f"{SD}/care-setting", "valueCodeableConcept": concept("ipc-care-setting", "nursing-care")}]))
    # After: a personal health budget by direct payment (with lines) and a council notional budget (no lines).
    put(fhir, statement("integrated-personal-budget", [allocation("nhs", "direct-payment", "9000.00"),
                                                        allocation("local-authority", "notional", "3650.00")],
                        date(2026, 4, 1)))
    post(fhir, line("spend", "800.00", date(2026, 4, 30)))
    post(fhir, line("refund", "50.00", date(2026, 5, 2)))
    put(fhir, encounter("op-2", "AMB", "2026-05-20"))
    r = fhir.get("/Patient/veteran-patient/$cost-of-care",
                 params=[("period", "before:2025-04-01/2026-03-31"), ("period", "after:2026-04-01/2026-06-29")])
    assert r.status_code == 200, r.text
    periods = {next(p["valueString"] for p in period["part"] if p["name"] == "label"): period["part"]
               for period in r.json()["parameter"] if period["name"] == "period"}

    def costs(label: str) -> dict[tuple[str, str], float]:
        return {(c["part"][0]["valueCode"], c["part"][1]["valueCode"]): c["part"][2]["valueMoney"]["value"]
                for c in periods[label] if c["name"] == "cost"}

    assert costs("before") == {("nhs", "hospital-inpatient"): 3686.0, ("nhs", "emergency-department"): 504.0,
                               ("nhs", "hospital-outpatient"): 165.0, ("nhs", "nursing-care"): 3000.0}
    # 90 days of the council's £3,650 a year is £900; £800 spent less a £50 refund; one outpatient.
    assert costs("after") == {("nhs", "home-and-community"): 750.0, ("nhs", "hospital-outpatient"): 170.0,
                              ("local-authority", "home-and-community"): 900.0}
    total = next(p for p in periods["after"] if p["name"] == "total")["valueMoney"]["value"]
    per_week = next(p for p in periods["after"] if p["name"] == "perWeek")["valueMoney"]["value"]
    assert total == 1820.0 and per_week == round(1820 * 7 / 90, 2)
    bad = fhir.get("/Patient/veteran-patient/$cost-of-care", params={"period": "2026-04-01/2025-01-01"})
    assert bad.status_code == 400 and "end not before the start" in bad.text
