"""One personalised care and support plan per person and period, over the API."""
from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import httpx

from tests.factories import unique

JSON = {"Content-Type": "application/fhir+json"}
EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "profiles/examples/CarePlan-adult-plan.json")
                     .read_text())


def plan(person: str, start: str, end: str | None, *, status: str = "active", **extra) -> dict:
    resource = copy.deepcopy(EXAMPLE)
    resource.pop("id")
    resource["subject"] = {"reference": person}
    resource["status"] = status
    resource["period"] = {"start": start, **({"end": end} if end else {})}
    resource.update(extra)
    return resource


def someone(hold_referenced) -> str:
    """A person in the record, and what the example plan refers to (its goals, team, funders)."""
    person = f"Patient/{unique('p-')}"
    hold_referenced([plan(person, "2026-01-01", None)])
    return person


def post(fhir, resource: dict) -> httpx.Response:
    return fhir.post("/CarePlan", json=resource, headers=JSON)


def test_a_second_open_plan_for_an_overlapping_period_is_refused(fhir, hold_referenced):
    person = someone(hold_referenced)
    first = post(fhir, plan(person, "2026-01-01", "2026-12-31"))
    assert first.status_code == 201, first.text
    clash = post(fhir, plan(person, "2026-06-01", "2027-05-31"))
    assert clash.status_code == 422
    issue = clash.json()["issue"][0]
    assert issue["code"] == "business-rule"
    assert first.json()["id"] in issue["diagnostics"]
    assert issue["expression"] == ["CarePlan.period"]
    open_ended = post(fhir, plan(person, "2025-01-01", None))
    assert open_ended.status_code == 422


def test_plans_that_do_not_clash_are_accepted(fhir, hold_referenced):
    person = someone(hold_referenced)
    first = post(fhir, plan(person, "2026-01-01", "2026-12-31")).json()
    assert post(fhir, plan(person, "2027-01-01", "2027-12-31")).status_code == 201  # the next period
    replacing = plan(person, "2026-07-01", "2026-12-31",
                     replaces=[{"reference": f"CarePlan/{first['id']}"}])
    assert post(fhir, replacing).status_code == 201  # says which plan it replaces
    assert post(fhir, plan(someone(hold_referenced), "2026-01-01", "2026-12-31")).status_code == 201
    closed = plan(person, "2026-03-01", "2026-04-30", status="completed")
    assert post(fhir, closed).status_code == 201  # history, not an open plan


def test_updating_the_plan_itself_is_not_a_clash(fhir, hold_referenced):
    person = someone(hold_referenced)
    created = post(fhir, plan(person, "2026-01-01", "2026-12-31")).json()
    changed = dict(created, description="Updated after the review meeting.")
    r = fhir.put(f"/CarePlan/{created['id']}", json=changed, headers=JSON)
    assert r.status_code == 200, r.text


def test_two_plans_written_at_once_cannot_both_pass(fhir, hub_url, hold_referenced):
    person = someone(hold_referenced)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def write() -> None:
        with httpx.Client(base_url=f"{hub_url}/fhir", timeout=30, headers=fhir.headers) as client:
            barrier.wait()
            statuses.append(client.post("/CarePlan", json=plan(person, "2026-01-01", "2026-12-31"),
                                        headers=JSON).status_code)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 422]
