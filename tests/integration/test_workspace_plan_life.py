"""The workspace and the plan's life (issue 13) over real HTTP: a funder added to an agreed
plan's budget statement is shown as awaiting its agreement, its allocation not in effect, until
its commissioner agrees the plan."""
from __future__ import annotations

import copy

import pytest

from hub.fhir import jsontext
from tests.factories import budget_statement, ipc_plan, plan_agreement, unique
from tests.integration.signin import add_user
from tests.integration.test_workspace_pages import workspace
from tests.validation_cases import example

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/fhir+json"}


def _written(fhir, resource: dict, method: str = "POST") -> dict:
    path = f"/{resource['resourceType']}" + (f"/{resource['id']}" if method == "PUT" else "")
    headers = {**JSON, **({"If-Match": f'W/"{resource["meta"]["versionId"]}"'} if method == "PUT" else {})}
    answer = fhir.request(method, path, content=jsontext.dumps(resource), headers=headers)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def test_a_funder_added_to_an_agreed_plan_is_shown_awaiting_its_agreement(hub_url, pg_url, fhir, hold_referenced):
    person = f"Patient/{unique('p-')}"
    hold_referenced([ipc_plan(person, agreements=(
        plan_agreement("nhs-commissioner", "Organization/veteran-icb", "2026-01-01T00:00:00Z"),)),
        example("Task-veteran-action")])
    plan = _written(fhir, ipc_plan(person, agreements=(plan_agreement("person", person, "2026-02-02T14:00:00Z"),)))
    assert plan["status"] == "active"   # no budget statement yet: the person's agreement is all it needs
    budget = _written(fhir, budget_statement(person, plan["id"], {"nhs": "12000.00"}))
    agent = workspace(hub_url, add_user(pg_url).username)
    page = agent.get(f"/app/budgets/{budget['id']}")
    assert page.status == 200
    assert "Awaiting agreement" in page.text and "the NHS commissioner agrees the plan" in page.text

    agreed = copy.deepcopy(fhir.get(f"/CarePlan/{plan['id']}").json())
    agreed["extension"].append(plan_agreement("nhs-commissioner", "Organization/veteran-icb", "2026-03-01T09:00:00Z"))
    _written(fhir, agreed, "PUT")
    page = agent.get(f"/app/budgets/{budget['id']}")
    assert page.status == 200 and "Awaiting agreement" not in page.text


def _position(fhir, budget_id: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """($budget-position's allocated total, {funder: (account status, allocated)})."""
    answer = fhir.get(f"/CarePlan/{budget_id}/$budget-position")
    assert answer.status_code == 200, answer.text
    params = answer.json()["parameter"]
    total = next(p["valueMoney"]["value"] for p in params if p["name"] == "allocated")
    accounts = {}
    for part in (p["part"] for p in params if p["name"] == "account"):
        values = {v["name"]: v for v in part}
        accounts[values["fundingSource"]["valueCode"]] = (values["status"]["valueCode"],
                                                          f'{values["allocated"]["valueMoney"]["value"]:.2f}')
    return f"{total:.2f}", accounts


def _cost_by_funder(fhir, patient: str) -> dict[str, str]:
    answer = fhir.get(f"/{patient}/$cost-of-care", params={"period": "2026-04-01/2027-03-31"})
    assert answer.status_code == 200, answer.text
    [period] = [p for p in answer.json()["parameter"] if p["name"] == "period"]
    out = {}
    for cost in (p["part"] for p in period["part"] if p["name"] == "cost"):
        values = {v["name"]: v for v in cost}
        out[values["funder"]["valueCode"]] = f'{values["amount"]["valueMoney"]["value"]:.2f}'
    return out


def test_a_funder_added_to_an_agreed_plan_counts_in_no_money_until_it_agrees(hub_url, pg_url, fhir, hold_referenced):
    """Issue 13: "a funder added later makes the plan need that funder's agreement before changes
    to its allocation take effect" — its allocation is in no total (the budget position, the cost
    of care, the budget page) until its commissioner agrees the plan; then it is."""
    person = f"Patient/{unique('p-')}"
    hold_referenced([ipc_plan(person, agreements=(
        plan_agreement("nhs-commissioner", "Organization/veteran-icb", "2026-01-01T00:00:00Z"),)),
        example("Task-veteran-action")])
    plan = _written(fhir, ipc_plan(person, agreements=(
        plan_agreement("person", person, "2026-02-02T14:00:00Z"),
        plan_agreement("nhs-commissioner", "Organization/veteran-icb", "2026-02-03T09:00:00Z"))))
    assert plan["status"] == "active"
    statement = budget_statement(person, plan["id"], {"nhs": "12000.00"})
    statement["period"] = {"start": "2026-04-01", "end": "2027-03-31"}
    budget = _written(fhir, statement)
    assert _position(fhir, budget["id"]) == ("12000.00", {"nhs": ("active", "12000.00")})

    # The council joins the agreed plan's budget: its money waits for its commissioner.
    grown = budget_statement(person, plan["id"], {"nhs": "12000.00", "local-authority": "6000.00"})
    grown.update(id=budget["id"], meta={**grown["meta"], "versionId": budget["meta"]["versionId"]},
                 period=statement["period"])
    _written(fhir, grown, "PUT")
    assert _position(fhir, budget["id"]) == ("12000.00", {"nhs": ("active", "12000.00"),
                                                          "local-authority": ("on-hold", "0.00")})
    assert _cost_by_funder(fhir, person) == {"nhs": "12000.00"}
    waiting = [p for p in fhir.get(f"/CarePlan/{budget['id']}/$budget-position").json()["parameter"]
               if p["name"] == "awaitingAgreement"]
    assert [p["valueMoney"]["value"] for p in waiting] == [6000]
    agent = workspace(hub_url, add_user(pg_url).username)
    page = agent.get(f"/app/budgets/{budget['id']}")
    assert page.status == 200
    assert 'id="allocated">£12,000.00' in page.text and 'id="awaiting">£6,000.00' in page.text
    assert "not in effect until the local authority commissioner agrees the plan" in page.text
    assert "£12,000.00 <span class=\"nhsuk-body-s\">(the statement asks £18,000.00: £6,000.00 of it" in page.text

    # The council's commissioner agrees: its allocation takes effect everywhere.
    agreed = copy.deepcopy(fhir.get(f"/CarePlan/{plan['id']}").json())
    agreed["extension"].append(plan_agreement("local-authority-commissioner", "Organization/veteran-council",
                                              "2026-03-01T09:00:00Z"))
    hold_referenced([agreed])
    _written(fhir, agreed, "PUT")
    assert _position(fhir, budget["id"]) == ("18000.00", {"nhs": ("active", "12000.00"),
                                                          "local-authority": ("active", "6000.00")})
    assert _cost_by_funder(fhir, person) == {"nhs": "12000.00", "local-authority": "6000.00"}
    assert "awaitingAgreement" not in fhir.get(f"/CarePlan/{budget['id']}/$budget-position").text
    page = agent.get(f"/app/budgets/{budget['id']}")
    assert 'id="allocated">£18,000.00' in page.text and "Awaiting agreement" not in page.text


def test_the_plan_page_shows_the_one_page_profile_in_its_sections_and_needs_by_life_area(
        hub_url, pg_url, fhir, hold_referenced):
    """Issue 13: the one-page profile in sections (what people like and admire about me; what is
    important to me; how best to support me) and needs per life area (what is working, what is
    not) are structured data on the plan, and the coordinator reads them on the plan page."""
    person = f"Patient/{unique('p-')}"
    hold_referenced([ipc_plan(person), example("Task-veteran-action")])
    plan = _written(fhir, ipc_plan(person, stage="conversation"))
    page = workspace(hub_url, add_user(pg_url).username).get(f"/app/plans/{plan['id']}")
    assert page.status == 200
    text = page.text
    headings = ["What people like and admire about me", "What is important to me", "How best to support me"]
    assert [text.index(h) for h in headings] == sorted(text.index(h) for h in headings)
    assert "Funny, stubborn in a good way, and the first to help a mate." in text
    needs = text[text.index('id="needs"'):]
    assert "Person&#39;s own home" in needs or "Person's own home" in needs
    assert "Steps at the door and a bath he cannot use" in needs
    assert "No adapted laptop yet; he has not applied to university." in needs
