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
