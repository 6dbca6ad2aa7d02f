"""Issue 20's property: for any resource hidden from a client, every interaction the client may
attempt answers exactly as it does for an id nothing holds — status, OperationOutcome code and
words (the id aside), the headers sent and the total of any search. Ids are the hub's own (made
by POST), as a partner meets them; hypothesis picks the hidden resource and the interaction."""
from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.fhir import ids
from hub.fhir.jsontext import dumps
from tests.integration.access_cases import JSON, lead_charity_consent, make_person
from tests.integration.conftest import bearer

# Kinds of resource hidden from the lead charity (it sees demographics and the plan only).
HIDDEN = {
    "Condition": {"resourceType": "Condition", "code": {"text": "Post-traumatic stress disorder"}},
    "Flag": {"resourceType": "Flag", "status": "active", "code": {"text": "Safeguarding concern"},
             "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                       "code": "safety"}]}]},
    "Observation": {"resourceType": "Observation", "status": "final", "code": {"text": "PHQ-9"},
                    "category": [{"text": "Mental health assessment"}]},
    "Procedure": {"resourceType": "Procedure", "status": "completed", "code": {"text": "Social care assessment"},
                  "category": {"text": "Social care"}},
}
SKIP_HEADERS = {"date", "content-length", "x-request-id", "server"}


@pytest.fixture(scope="module")
def world(hub_url: str, admin_token: str, token_for):
    """(the charity's client, {type: [hidden ids]}, the person's id, an NHS client that sees all)."""
    nhs = httpx.Client(base_url=f"{hub_url}/fhir", timeout=30, headers={"Accept": "application/fhir+json",
                                                                          **bearer(admin_token)})
    coordinator = httpx.Client(base_url=f"{hub_url}/fhir", timeout=30, headers={
        "Accept": "application/fhir+json", **bearer(token_for(
            partner_class="nhs", organisation="RX1", scopes=["system/*.cruds"], client_id="test-workspace",
            user="Practitioner/test-coordinator", user_role="coordinator", lifetime_s=3600))})
    person = make_person(nhs)
    lead_charity_consent(coordinator, person)
    subject = {"reference": f"Patient/{person.patient}"}
    hidden: dict[str, list[str]] = {}
    for res_type, body in HIDDEN.items():
        for _ in range(2):
            made = nhs.post(f"/{res_type}", content=dumps({**body, "subject": subject}), headers=JSON)
            assert made.status_code == 201, made.text
            hidden.setdefault(res_type, []).append(made.json()["id"])
    charity = httpx.Client(base_url=f"{hub_url}/fhir", timeout=30, headers={
        "Accept": "application/fhir+json",
        **bearer(token_for(partner_class="charity", organisation=person.charity_number,
                           scopes=["system/*.cruds"], lifetime_s=3600))})
    yield charity, hidden, person.patient, nhs
    for client in (nhs, coordinator, charity):
        client.close()


def _interactions(res_type: str, res_id: str, patient: str) -> dict[str, tuple]:
    subject = {"reference": f"Patient/{patient}"}
    body = {**HIDDEN[res_type], "id": res_id, "subject": subject}
    provenance = {"resourceType": "Provenance", "recorded": "2026-01-15T10:00:00Z",
                  "agent": [{"who": {"display": "charity"}}], "target": [{"reference": f"{res_type}/{res_id}"}]}
    goal = {"resourceType": "Goal", "lifecycleStatus": "proposed", "description": {"text": "x"}, "subject": subject,
            "addresses": [{"reference": f"{res_type}/{res_id}"}]}
    return {
        "read": ("GET", f"/{res_type}/{res_id}", None, None),
        "vread": ("GET", f"/{res_type}/{res_id}/_history/1", None, None),
        "history": ("GET", f"/{res_type}/{res_id}/_history", None, None),
        "search-id": ("GET", f"/{res_type}", {"_id": res_id}, None),
        **_deletes(res_type, res_id),
        "update": ("PUT", f"/{res_type}/{res_id}", None, body),
        "update-if-match": ("PUT", f"/{res_type}/{res_id}", None, {**body, "_if_match": 'W/"1"'}),
        "conditional-update": ("PUT", f"/{res_type}", {"_id": res_id}, {k: v for k, v in body.items() if k != "id"}),
        "validate-instance": ("POST", f"/{res_type}/{res_id}/$validate", None,
                              {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": body}]}),
        "provenance-of-it": ("POST", "/Provenance", None, provenance),
        "goal-addressing-it": ("POST", "/Goal", None, goal),
    }


def _deletes(res_type: str, res_id: str) -> dict[str, tuple]:
    """Every way a client may ask for a delete: plain, If-Match, conditional (criteria), and as a
    transaction or batch entry."""
    return {
        "delete": ("DELETE", f"/{res_type}/{res_id}", None, None),
        "delete-if-match": ("DELETE", f"/{res_type}/{res_id}", None, {"If-Match": 'W/"1"'}),
        "conditional-delete": ("DELETE", f"/{res_type}", {"_id": res_id}, None),
        "transaction-delete": ("POST", "", None, _bundle("transaction", [("DELETE", f"{res_type}/{res_id}", None)])),
        "transaction-delete-if-match": ("POST", "", None, _bundle("transaction", [
            ("DELETE", f"{res_type}/{res_id}", 'W/"1"')])),
        "batch-delete": ("POST", "", None, _bundle("batch", [("DELETE", f"{res_type}/{res_id}", None)])),
        "transaction-conditional-delete": ("POST", "", None, _bundle("transaction", [
            ("DELETE", f"{res_type}?_id={res_id}", None)])),
    }


def _bundle(kind: str, entries: list[tuple[str, str, str | None]]) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"request": {"method": method, "url": url, **({"ifMatch": if_match} if if_match else {})}}
        for method, url, if_match in entries]}


def _entry_shape(entry: dict, res_id: str) -> tuple:
    """A batch or transaction response entry, as a client meets it (the id aside)."""
    response = entry.get("response") or {}
    outcome = response.get("outcome") or entry.get("resource") or {}
    issues = [(i["code"], i.get("diagnostics", "").replace(res_id, "<id>")) for i in outcome.get("issue", [])]
    return (response.get("status"), response.get("etag"), (response.get("location") or "").replace(res_id, "<id>"),
            issues)


def _answer(client: httpx.Client, spec: tuple, res_id: str) -> tuple:
    method, path, params, body = spec
    headers = dict(JSON)
    if isinstance(body, dict) and "_if_match" in body:
        body = dict(body)
        headers["If-Match"] = body.pop("_if_match")
    elif method == "DELETE" and body is not None:
        headers.update(body)
        body = None
    response = client.request(method, path, params=params, headers=headers,
                              content=dumps(body) if body is not None else None)
    names = sorted(h for h in response.headers if h.lower() not in SKIP_HEADERS)
    shape: object = None
    if response.content:
        found = response.json()
        if found.get("resourceType") == "OperationOutcome":
            shape = [(i["code"], i.get("diagnostics", "").replace(res_id, "<id>")) for i in found["issue"]]
        elif found.get("resourceType") == "Bundle" and found.get("type") in ("batch-response", "transaction-response"):
            shape = (found["type"], [_entry_shape(e, res_id) for e in found.get("entry", [])])
        elif found.get("resourceType") == "Bundle":
            shape = (found.get("type"), found.get("total"), len(found.get("entry", [])))
        else:
            shape = found.get("resourceType")  # created: a new resource either way
    return response.status_code, names, shape


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_interaction_answers_a_hidden_id_as_an_absent_one(world, data):
    charity, hidden, patient, nhs = world
    res_type = data.draw(st.sampled_from(sorted(hidden)), label="type")
    hidden_id = data.draw(st.sampled_from(hidden[res_type]), label="hidden id")
    absent_id = ids.new_id()
    name = data.draw(st.sampled_from(sorted(_interactions(res_type, hidden_id, patient))), label="interaction")
    on_hidden = _answer(charity, _interactions(res_type, hidden_id, patient)[name], hidden_id)
    on_absent = _answer(charity, _interactions(res_type, absent_id, patient)[name], absent_id)
    assert on_hidden == on_absent, (name, on_hidden, on_absent)
    # 200 only for what answers about the request itself (a Bundle of nothing, the outcome of
    # validating the body sent), never with the hidden resource
    assert on_hidden[0] != 200 or name.startswith(("search", "transaction", "batch", "validate")) or name == "history"
    assert nhs.get(f"/{res_type}/{hidden_id}").status_code == 200   # nothing hidden was deleted


def test_an_id_a_client_chose_answers_alike_free_or_held_by_something_hidden(world, pg_url, start_api):
    """Issue 20, update-as-create: an id not of the hub's form (one a client or a loader chose)
    held by a resource the client may not see answers every interaction exactly as a free one.
    The hub takes no client-chosen ids (405, CapabilityStatement updateCreate false), so a PUT to
    a free id no longer answers 201 where a held one answers 404."""
    import asyncio
    import secrets

    from psycopg import AsyncConnection

    from hub.search.access import Access
    from hub.store import resources as store

    shared, hidden, patient, _ = world
    from hub.config import Settings

    assert Settings.model_fields["client_ids"].default == "refuse"   # the product's default
    api = start_api(client_ids="refuse")   # the shared test API accepts client ids for its fixtures
    charity = httpx.Client(base_url=f"{api.url}/fhir", timeout=30, headers=dict(shared.headers))
    chosen = {res_type: f"chosen-{res_type.lower()}-{secrets.token_hex(6)}" for res_type in HIDDEN}

    async def write_hidden() -> None:
        async with await AsyncConnection.connect(pg_url) as conn:
            for res_type, res_id in chosen.items():
                body = {**HIDDEN[res_type], "id": res_id, "subject": {"reference": f"Patient/{patient}"}}
                await store.update(conn, res_type, res_id, body, access=Access.system())
            await conn.commit()

    asyncio.run(write_hidden())
    for res_type, held_id in chosen.items():
        free_id = f"chosen-{res_type.lower()}-{secrets.token_hex(6)}"
        for name in sorted(_interactions(res_type, held_id, patient)):
            on_held = _answer(charity, _interactions(res_type, held_id, patient)[name], held_id)
            on_free = _answer(charity, _interactions(res_type, free_id, patient)[name], free_id)
            assert on_held == on_free, (res_type, name, on_held, on_free)
        assert charity.get(f"/{res_type}/{free_id}").status_code == 404   # nothing was created
        update = _answer(charity, _interactions(res_type, free_id, patient)["update"], free_id)
        assert update[0] == 405 and update[2][0][0] == "not-supported", update
    statement = charity.get("/metadata").json()
    assert {r["updateCreate"] for r in statement["rest"][0]["resource"] if "updateCreate" in r} == {False}
    charity.close()


# Resources hidden from the lead charity that refer to a Goal it may see (and delete).
def _referrer(kind: str, patient: str, goal: str) -> dict:
    subject = {"reference": f"Patient/{patient}"}
    if kind == "Condition":     # health
        return {**HIDDEN["Condition"], "subject": subject, "evidence": [{"detail": [{"reference": f"Goal/{goal}"}]}]}
    if kind == "Observation":   # mental health
        return {**HIDDEN["Observation"], "subject": subject, "focus": [{"reference": f"Goal/{goal}"}]}
    return {"resourceType": "Provenance", "recorded": "2026-01-15T10:00:00Z",   # safeguarding: as its target
            "agent": [{"who": {"display": "NHS"}}], "target": [{"reference": f"Goal/{goal}"}, {"reference": goal_flag(patient)}]}


_FLAGS: dict[str, str] = {}


def goal_flag(patient: str) -> str:
    return _FLAGS[patient]


def _goal(client: httpx.Client, patient: str) -> str:
    made = client.post("/Goal", content=dumps({"resourceType": "Goal", "lifecycleStatus": "active",
                                                "description": {"text": "Back to work"},
                                                "subject": {"reference": f"Patient/{patient}"}}), headers=JSON)
    assert made.status_code == 201, made.text
    return made.json()["id"]


def _referred(nhs: httpx.Client, charity: httpx.Client, patient: str, kinds: list[str]) -> tuple[str, list[str]]:
    """A Goal the charity wrote, and the hidden resources the NHS wrote that refer to it."""
    goal = _goal(charity, patient)
    found = []
    for kind in kinds:
        made = nhs.post(f"/{kind}", content=dumps(_referrer(kind, patient, goal)), headers=JSON)
        assert made.status_code == 201, made.text
        found.append(f"{kind}/{made.json()['id']}")
        assert charity.get(f"/{found[-1]}").status_code == 404   # hidden from the charity
    return goal, found


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_delete_whose_referrers_are_all_hidden_answers_as_one_with_none(world, data):
    """Issue 20, deletes: referential integrity is judged on the referrers the client may see, so a
    resource only hidden resources refer to is deleted exactly as one nothing refers to — the same
    status, body, headers and outcome on every delete path — and is gone afterwards alike."""
    charity, hidden, patient, nhs = world
    _FLAGS.setdefault(patient, f"Flag/{hidden['Flag'][0]}")
    kinds = data.draw(st.lists(st.sampled_from(["Condition", "Observation", "Provenance"]), min_size=1, max_size=3),
                      label="hidden referrers")
    name = data.draw(st.sampled_from(sorted(_deletes("Goal", "x"))), label="interaction")
    referred, referrers = _referred(nhs, charity, patient, kinds)
    lone = _goal(charity, patient)
    on_referred = _answer(charity, _deletes("Goal", referred)[name], referred)
    on_lone = _answer(charity, _deletes("Goal", lone)[name], lone)
    assert on_referred == on_lone, (name, on_referred, on_lone)
    after = [charity.get(f"/Goal/{goal_id}").status_code for goal_id in (referred, lone)]
    assert after[0] == after[1] and after[0] in (200, 410), after
    for key in referrers:   # what the charity could not see is untouched
        assert nhs.get(f"/{key}").status_code == 200


def test_hidden_referrers_of_a_deleted_resource_come_before_the_coordinator(world, pg_url, hold_referenced):
    """A visible referrer still stops the delete (409, naming only it); once the client has
    repointed what it sees, the delete goes through, the delete is queued for the hub's review,
    and the plan worker raises one review Task in the person's record, in its safeguarding part
    (it names the hidden referrers), owned by the coordinator of the person's plan: the NHS sees
    it, the charity that deleted does not; the deleted Goal's last version stays readable by
    vread."""
    import asyncio

    from psycopg import AsyncConnection

    from hub.pipeline import dangling
    from hub.pipeline.planlife import PlanWorker

    from hub.plans.model import coordinator
    from tests.factories import ipc_plan

    charity, hidden, patient, nhs = world
    _FLAGS.setdefault(patient, f"Flag/{hidden['Flag'][0]}")
    plan = ipc_plan(f"Patient/{patient}")
    hold_referenced([plan])
    made = nhs.post("/CarePlan", content=dumps(plan), headers=JSON)
    assert made.status_code == 201, made.text
    goal, referrers = _referred(nhs, charity, patient, ["Condition", "Observation"])
    seen = charity.post("/Provenance", content=dumps({
        "resourceType": "Provenance", "recorded": "2026-01-15T10:00:00Z", "agent": [{"who": {"display": "charity"}}],
        "target": [{"reference": f"Goal/{goal}"}]}), headers=JSON)
    assert seen.status_code == 201, seen.text
    refused = charity.delete(f"/Goal/{goal}")
    assert refused.status_code == 409
    said = refused.json()["issue"][0]["diagnostics"]
    assert f"Provenance/{seen.json()['id']}" in said and not any(key in said for key in referrers), said
    assert charity.delete(f"/Provenance/{seen.json()['id']}").status_code == 204
    assert charity.delete(f"/Goal/{goal}").status_code == 204

    async def review() -> int:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT count(*) FROM plan_followup WHERE res_type = 'Goal' AND res_id = %s",
                                     (goal,))
            (queued,) = await cur.fetchone()
            assert queued == 1
            async with conn.transaction():
                await PlanWorker(pg_url)._one(conn, "Goal", goal)   # as the worker takes it from the queue
            again = await dangling.review_deleted(conn, "Goal", goal, 2)   # a replay raises nothing new
            await conn.execute("DELETE FROM plan_followup WHERE res_type = 'Goal' AND res_id = %s", (goal,))
            return again

    assert asyncio.run(review()) == 0
    query = {"code": f"{dangling.TASK_CODE_SYSTEM}|{dangling.REVIEW_CODE}", "subject": f"Patient/{patient}"}
    tasks = [e["resource"] for e in nhs.get("/Task", params=query).json().get("entry", [])
             if f"Goal/{goal}/" in e["resource"]["description"]]
    assert len(tasks) == 1, tasks
    named = {i["valueReference"]["reference"] for i in tasks[0]["input"] if "valueReference" in i}
    assert named == set(referrers)
    assert tasks[0]["owner"] == {"reference": coordinator(plan)}   # on the coordinator's worklist
    assert charity.get("/Task", params=query).json().get("total", 0) == 0
    assert charity.get(f"/Task/{tasks[0]['id']}").status_code == 404
    assert nhs.get(f"/Goal/{goal}/_history/1").status_code == 200
    assert charity.get(f"/Goal/{goal}/_history/1").status_code == 200
    assert charity.get(f"/Goal/{goal}").status_code == 410


def test_a_partner_without_sight_of_the_whole_record_may_not_delete_the_person(world):
    """Deletes pass referrers a client cannot see, so deleting a person's Patient — on which
    their whole record rests — needs sight of every part of the record (the consent rule on the
    parts, whatever is stored): the lead charity, which sees who he is and his plan, is refused
    403 and the Patient stays, over REST and in a transaction; a person hidden from it entirely
    is deleted as an absent one (204, nothing happens); the NHS, which sees every part, may."""
    charity, _, patient, nhs = world
    refused = charity.delete(f"/Patient/{patient}")
    assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden", refused.text
    in_bundle = charity.post("", content=dumps(_bundle("transaction", [("DELETE", f"Patient/{patient}", None)])),
                             headers=JSON)
    assert in_bundle.status_code == 403, in_bundle.text
    assert nhs.get(f"/Patient/{patient}").status_code == 200
    stranger = make_person(nhs)   # no consent: the charity class sees nothing of him by default
    hidden = _answer(charity, _deletes("Patient", stranger.patient)["delete"], stranger.patient)
    absent_id = ids.new_id()
    assert hidden == _answer(charity, _deletes("Patient", absent_id)["delete"], absent_id)
    assert hidden[0] == 204 and nhs.get(f"/Patient/{stranger.patient}").status_code == 200
    alone = nhs.post("/Patient", content=dumps({"resourceType": "Patient", "name": [{"family": "Alone"}]}),
                     headers=JSON).json()["id"]
    assert nhs.delete(f"/Patient/{alone}").status_code == 204
