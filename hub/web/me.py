"""The person's own pages (`/me`, issue 18), in plain English: my plan and one-page profile (and an
easy-read view with large text and short sentences), my goals with my own notes, my budget and
what has been spent, my carers and team and how to contact my coordinator, who has looked at my
record, my sharing choices, asking for a review, and downloading my record.

The pages are another app of this hub (`ipc-hub-me`, a SMART standalone patient launch: hub.web.
signin.PERSON_APP) and read and write only through the hub's FHIR API with the person's own token
(hub.web.record), so they show exactly what the API lets the person — or their proxy, within the
delegation — see: their own record less safeguarding, the trail less what is withheld
(docs/person.md). Someone acting for a person sees that person's record, and is told so."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from hub.auth.accounts import CITIZEN_SYSTEM, PARTNER_SYSTEM
from hub.consent.parts import PART_SYSTEM
from hub.store import users
from hub.web import easy_read, facts
from hub.web import session as web
from hub.web.access import Workspace, posted, signed_in
from hub.web.errors import PageError
from hub.web.pages import person_name, render
from hub.web.record import oauth_post
from hub.web.signin import PERSON_APP, app_callback, app_sign_in, app_sign_out

router = APIRouter(include_in_schema=False)

PARTNER_NAMES = {"nhs": "NHS services", "local-authority": "your council", "defence": "the Ministry of Defence",
                 "charity": "charities", "lead-charity": "your lead charity", "education": "schools and colleges",
                 "person": "you, or someone acting for you"}
PART_NAMES = {"demographics": "who you are", "care-support-plan": "your plan", "budget": "your budget",
              "carers": "your carers", "health": "your health", "armed-forces-service": "your time in the Armed Forces",
              "care-team": "your team", "social-care": "your social care", "mental-health": "your mental health",
              "safeguarding": "keeping you safe", "consent": "your sharing choices"}
WHY = {"TREAT": "to look after you", "HOPERAT": "to run the service", "HPAYMT": "to pay for your care",
       "HRESCH": "for research", "PATRQT": "because you asked"}
DONE = {"R": "looked at", "E": "searched", "C": "added to", "U": "changed", "D": "removed from"}


# --- signing in ------------------------------------------------------------------------------------

@router.get("/me/sign-in")
async def sign_in(request: Request) -> Response:
    return await app_sign_in(request, PERSON_APP)


@router.get("/me/callback")
async def callback(request: Request) -> Response:
    return await app_callback(request, PERSON_APP)


@router.post("/me/sign-out")
async def sign_out(request: Request) -> Response:
    return await app_sign_out(request, PERSON_APP)


@router.post("/me/switch")
async def switch(request: Request) -> Response:
    """Someone acting for several people opens another one's record: this record's tokens are
    revoked and its session ended, and the app launches again; the sign-in is kept, so the hub
    asks only whose record to open (hub.web.signin, patient selection)."""
    me = await signed_in(request, "person")
    await posted(request, me)
    access, refresh = web.tokens(request, me.session)
    for token, hint in ((refresh, "refresh_token"), (access, "access_token")):
        if token:
            await oauth_post(request, "/auth/revoke", {"token": token, "token_type_hint": hint,
                                                       "client_id": PERSON_APP.client_id})
    await web.end_session(request, web.cookie_of(PERSON_APP.kind))
    response = RedirectResponse("/me/sign-in", status_code=303)
    web.clear_cookie(request, response, web.cookie_of(PERSON_APP.kind))
    return response


# --- reading the record ------------------------------------------------------------------------------

async def _me(request: Request) -> tuple[Workspace, dict[str, Any]]:
    """The signed-in person's session and the Patient whose record they may open."""
    me = await signed_in(request, "person")
    async with request.app.state.pool.connection() as conn:
        me.records = len(await users.links_of(conn, me.user))
    patient = await me.record.read("Patient", me.user.patient_id or "-")
    if patient is None:
        raise PageError(403, "You cannot see this record now",
                        "Your permission to see this record has ended, or it was never given. If you think this "
                        "is wrong, contact the care coordinator.")
    return me, patient


def _context(me: Workspace, patient: dict[str, Any], area: str, title: str, **extra: Any) -> dict[str, Any]:
    acting = (me.user.fhir_user or "").startswith("RelatedPerson/")
    return {"me": me.user, "csrf": me.csrf, "area": area, "title": title, "patient": patient,
            "whose": f"{person_name(patient)}'s" if acting else "your", "acting": acting,
            "person": person_name(patient), "several": me.records > 1, **extra}


async def _plan(me: Workspace, patient_id: str) -> dict[str, Any] | None:
    plans = await me.record.search("CarePlan", [("subject", f"Patient/{patient_id}"),
                                                ("category", f"{facts.PLAN_CATEGORY}|care-support-plan"),
                                                ("_count", "20")])
    live = [p for p in plans.matches if p.get("status") in ("active", "draft", "on-hold")]
    return (live or plans.matches or [None])[0]


@router.get("/me")
async def overview(request: Request) -> Response:
    me, patient = await _me(request)
    record, pid = me.record, patient["id"]
    plan = await _plan(me, pid)
    goals = (await record.search("Goal", [("subject", f"Patient/{pid}"), ("_count", "100")])).matches
    budgets = (await record.search("CarePlan", [("subject", f"Patient/{pid}"), ("_count", "10"),
                                                ("category", f"{facts.PLAN_CATEGORY}|budget-statement")])).matches
    budget = budgets[0] if budgets else None
    position = await record.budget_position(budget["id"]) if budget else None
    teams = (await record.search("CareTeam", [("subject", f"Patient/{pid}"), ("_count", "10")])).matches
    carers = (await record.search("RelatedPerson", [("patient", f"Patient/{pid}"), ("_count", "20")])).matches
    coordinator = facts.coordinator(plan) if plan else None
    members = {p.get("member", {}).get("reference", "") for t in teams for p in t.get("participant") or []}
    names = await record.names({r for r in (*members, coordinator or "") if r})
    contact = await _contact(me, coordinator)
    code, stage = facts.stage(plan) if plan else (None, "")
    view = request.query_params.get("view")
    easy = view == "easy-read" or (view != "usual" and easy_read.wants_easy_read(patient))
    context = _context(me, patient, "plan", "Your plan" if not easy else "Your plan in easy read", plan=plan,
                       easy=easy, done=request.query_params.get("done"))
    team = [{"name": names.get(p.get("member", {}).get("reference", ""), p.get("member", {}).get("display", "")),
             "role": " ".join(c.get("text") or (c.get("coding") or [{}])[0].get("display", "") for c in p.get("role") or [])}
            for t in teams for p in t.get("participant") or []]
    allocations = facts.allocations(budget, position) if budget else []
    if easy:
        charges = (await record.search("ChargeItem", [("subject", f"Patient/{pid}"), ("_count", "500")])).matches
        said = easy_read.easy_read(
            voice=easy_read.Voice(person_name(patient), context["acting"]), plan=plan, stage=stage,
            goals=[_goal(g) for g in goals], allocations=allocations, charges=charges,
            coordinator=names.get(coordinator or "", ""), contact=contact, carers=[person_name(c) for c in carers],
            team=team, patient=patient)
        return render("me_easy", **context, said=said)
    return render("me", **context, stage=stage, goals=[_goal(g) for g in goals], budget=budget,
                  profile=facts.one_page_profile(plan) if plan else [], needs=facts.needs(plan) if plan else [],
                  allocations=allocations, position=position, team=team, carers=[person_name(c) for c in carers],
                  coordinator=names.get(coordinator or "", ""), contact=contact)


def _goal(goal: dict[str, Any]) -> dict[str, Any]:
    achievement = facts.code_of(goal.get("achievementStatus"), facts.GOAL_ACHIEVEMENT)
    return {"id": goal["id"], "text": (goal.get("description") or {}).get("text", ""),
            "how": dict(facts.ACHIEVEMENTS).get(achievement or "", "Not yet recorded"),
            "notes": goal.get("note") or [], "version": goal["meta"]["versionId"]}


async def _contact(me: Workspace, coordinator: str | None) -> list[str]:
    """How to reach the coordinator: their telecom, or their role's."""
    if not coordinator or not coordinator.startswith("Practitioner/"):
        return []
    found = await me.record.read("Practitioner", coordinator.split("/", 1)[1])
    roles = await me.record.search("PractitionerRole", [("practitioner", coordinator), ("_count", "5")])
    telecom = [*((found or {}).get("telecom") or []), *(t for r in roles.matches for t in r.get("telecom") or [])]
    return [f"{t.get('system', 'contact')}: {t.get('value')}" for t in telecom if t.get("value")]


@router.post("/me/goals/{goal_id}/note")
async def add_note(goal_id: str, request: Request) -> Response:
    me, patient = await _me(request)
    fields = await posted(request, me)
    text = (fields.get("note") or "").strip()
    if not text:
        raise PageError(400, "Write your note first", "The note was empty. Go back and write what you want to add.")
    goal = await me.record.read("Goal", goal_id)
    if goal is None:
        raise PageError(404, "Goal not found", "This goal is not in the record you can see.")
    goal["note"] = [*(goal.get("note") or []), {"text": text[:2000], "time": _now(),
                                               "authorReference": {"reference": me.user.fhir_user,
                                                                   "display": me.user.display_name}}]
    written = await me.record.update(goal, fields.get("version"))
    if written.status != "ok":
        raise PageError(409, "Your note was not saved", f"{written.message}. Go back, reload the page and add it again.")
    return RedirectResponse(f"/me?done=note#goal-{goal_id}", status_code=303)


@router.post("/me/review")
async def ask_for_review(request: Request) -> Response:
    me, patient = await _me(request)
    fields = await posted(request, me)
    plan = await _plan(me, patient["id"])
    if plan is None:
        raise PageError(404, "No plan to review", "There is no plan in your record yet. Contact your coordinator.")
    why = (fields.get("why") or "").strip() or "I would like my plan reviewed."
    task: dict[str, Any] = {
        "resourceType": "Task", "meta": {"profile": [f"{facts.SD}/ipc-review-request"]},
        "status": "requested", "intent": "proposal", "priority": "routine",
        "code": {"coding": [{"system": f"{facts.CS}/ipc-plan-task", "code": "plan-review-request",
                             "display": "Review requested"}]},
        "description": why[:2000], "basedOn": [{"reference": f"CarePlan/{plan['id']}"}],
        "focus": {"reference": f"CarePlan/{plan['id']}"}, "for": {"reference": f"Patient/{patient['id']}"},
        "authoredOn": _now(), "requester": {"reference": me.user.fhir_user, "display": me.user.display_name}}
    coordinator = facts.coordinator(plan)
    if coordinator:
        task["owner"] = {"reference": coordinator}
    written = await me.record.create(task)
    if written.status != "ok":
        raise PageError(422, "Your request was not sent", f"{written.message}. Contact your coordinator.")
    return RedirectResponse("/me?done=review#review", status_code=303)


# --- who has looked at my record ------------------------------------------------------------------

LOOKED_PAGE = 25
CITIZEN_ROLE = f"{PARTNER_SYSTEM}|person"


@router.get("/me/who-looked")
async def who_looked(request: Request) -> Response:
    """Organisations' visits, newest first, a page at a time; then, apart, the visits of people
    acting for the person. Visits made by people themselves are left out in the query
    (`agent-role:not=person`), so a person reading their own page many times never pushes the
    organisations' visits off it. Proxies' visits are shown, named, in their own list: the person
    should know when their attorney or parent looked. The person's own visits are never listed,
    to them (they know) or to a proxy (a young person's use of their own record is theirs)."""
    me, patient = await _me(request)
    pid = patient["id"]
    page = _whole(request.query_params.get("page"), 1)
    found = await me.record.search("AuditEvent", [("patient", f"Patient/{pid}"), ("agent-role:not", CITIZEN_ROLE),
                                                  ("_count", str(LOOKED_PAGE)),
                                                  ("_offset", str((page - 1) * LOOKED_PAGE))])
    organisations: dict[tuple[str, str], str] = {}
    rows = []
    for event in found.matches:
        row = _looked(event, me)
        key = row.pop("organisation_key")
        if key and key[0] != CITIZEN_SYSTEM and key not in organisations:
            known = await me.record.search("Organization", [("identifier", f"{key[0]}|{key[1]}"), ("_count", "1")])
            organisations[key] = known.matches[0].get("name", "") if known.matches else ""
        if key and key[0] != CITIZEN_SYSTEM:
            row["who"] = organisations.get(key) or f"{row['who']} (organisation {key[1]})"
        rows.append(row)
    acting = await _proxies_looked(me, pid)
    total = found.total or 0
    return render("me_looked", **_context(
        me, patient, "looked", "Who has looked at your record", rows=rows, acting=acting, page=page,
        newer=page - 1 if page > 1 else None, older=page + 1 if page * LOOKED_PAGE < total else None, total=total))


async def _proxies_looked(me: Workspace, patient_id: str) -> list[dict[str, Any]]:
    """The latest visits of the people acting for the person (their RelatedPersons this reader
    may see; a proxy's own visits left out of theirs), each named."""
    related = (await me.record.search("RelatedPerson", [("patient", f"Patient/{patient_id}"),
                                                        ("_count", "50")])).matches
    names = {f"RelatedPerson/{r['id']}": person_name(r) for r in related}
    names.pop(me.user.fhir_user or "", None)
    if not names:
        return []
    found = await me.record.search("AuditEvent", [("patient", f"Patient/{patient_id}"),
                                                  ("agent", ",".join(sorted(names))), ("_count", "10")])
    rows = []
    for event in found.matches:
        row = _looked(event, me)
        row.pop("organisation_key")
        users = [a["who"]["reference"] for a in event.get("agent") or [] if (a.get("who") or {}).get("reference")]
        row["who"] = next((names[u] for u in users if u in names), "Someone acting for you")
        rows.append(row)
    return rows


def _whole(text: str | None, default: int) -> int:
    return int(text) if text and text.isascii() and text.isdigit() and 0 < int(text) < 10_000 else default


def _looked(event: dict[str, Any], me: Workspace) -> dict[str, Any]:
    role = purpose = user = app = ""
    key: tuple[str, str] | None = None
    for agent in event.get("agent") or []:
        who = agent.get("who") or {}
        identifier = who.get("identifier") or {}
        if who.get("type") == "Organization":
            key = (identifier.get("system", ""), identifier.get("value", ""))
        elif who.get("type") == "Device":
            app = identifier.get("value", "")
        elif who.get("reference"):
            user = who["reference"]
        for concept in agent.get("role") or []:
            role = (concept.get("coding") or [{}])[0].get("code", role)
        for concept in agent.get("purposeOfUse") or []:
            purpose = (concept.get("coding") or [{}])[0].get("code", purpose)
    if key and key[0] == CITIZEN_SYSTEM:
        who = "You" if user == me.user.fhir_user else "Someone acting for you"
    else:
        who = PARTNER_NAMES.get(role, role or "an organisation").capitalize()
    return {"when": event.get("recorded", ""), "who": who, "role": PARTNER_NAMES.get(role, role),
            "why": WHY.get(purpose, purpose.lower() or "not said"), "what": DONE.get(event.get("action", ""), "used"),
            "refused": event.get("outcome") not in ("0", None), "app": app, "organisation_key": key}


# --- my sharing choices ------------------------------------------------------------------------------

async def _sharing(me: Workspace, patient_id: str) -> dict[str, Any] | None:
    found = await me.record.search("Consent", [("patient", f"Patient/{patient_id}"), ("status", "active"),
                                               ("category", f"{facts.PLAN_CATEGORY}|record-sharing"), ("_count", "5")])
    return found.matches[0] if found.matches else None


@router.get("/me/sharing")
async def sharing(request: Request) -> Response:
    me, patient = await _me(request)
    consent = await _sharing(me, patient["id"])
    choices = []
    if consent:
        provisions = (consent.get("provision") or {}).get("provision") or []
        refs = {(a.get("reference") or {}).get("reference", "") for p in provisions for a in p.get("actor") or []}
        names = await me.record.names({r for r in refs if r})
        for index, provision in enumerate(provisions):
            for actor in provision.get("actor") or []:
                role = facts.code_of(actor.get("role")) or ""
                ref = (actor.get("reference") or {}).get("reference", "")
                choices.append({"index": index, "who": names.get(ref) or PARTNER_NAMES.get(role, role),
                                "kind": PARTNER_NAMES.get(role, role), "sharing": provision.get("type") == "permit",
                                "parts": [PART_NAMES.get(c, c) for concept in provision.get("code") or []
                                          for c in [facts.code_of(concept, PART_SYSTEM)] if c]})
    return render("me_sharing", **_context(me, patient, "sharing", "Who can see your record", consent=consent,
                                           choices=choices, done=request.query_params.get("done")))


@router.post("/me/sharing")
async def change_sharing(request: Request) -> Response:
    me, patient = await _me(request)
    fields = await posted(request, me)
    consent = await _sharing(me, patient["id"])
    provisions = ((consent or {}).get("provision") or {}).get("provision") or []
    try:
        provision = provisions[int(fields.get("index", ""))]
    except (ValueError, IndexError):
        raise PageError(400, "Choose who to change", "Go back and choose one of the organisations listed.") from None
    provision["type"] = "deny" if fields.get("share") == "no" else "permit"
    consent["dateTime"] = _now()
    written = await me.record.update(consent, consent["meta"]["versionId"])
    if written.status != "ok":
        raise PageError(409, "Your choice was not saved", f"{written.message}. Go back, reload the page and try again.")
    return RedirectResponse("/me/sharing?done=1", status_code=303)


# --- download my record ----------------------------------------------------------------------------

@router.get("/me/download")
async def download(request: Request) -> Response:
    me, patient = await _me(request)
    found = await me.record.everything(patient["id"])
    if request.query_params.get("format") == "json":
        bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": _now(),
                  "entry": [{"resource": r} for r in found.matches]}
        return Response(json.dumps(bundle, indent=1), media_type="application/fhir+json", headers={
            "Content-Disposition": 'attachment; filename="my-record.json"', "Cache-Control": "no-store"})
    by_type: dict[str, list[str]] = {}
    for resource in found.matches:
        by_type.setdefault(resource["resourceType"], []).append(_describe(resource))
    return render("me_document", **_context(me, patient, "download", "Your record", sections=sorted(by_type.items())))


def _describe(resource: dict[str, Any]) -> str:
    """One line a person can read for any resource: its narrative's words, or its main text."""
    for key in ("title", "description", "code", "name", "relationship"):
        value = resource.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and (value.get("text") or value.get("coding")):
            return value.get("text") or (value["coding"][0].get("display") or value["coding"][0].get("code", ""))
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return person_name(resource) if key == "name" else (value[0].get("text") or "")
    return f"{resource['resourceType']} recorded {resource.get('meta', {}).get('lastUpdated', '')[:10]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
