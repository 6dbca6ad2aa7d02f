"""Signing in for the person and their family, from the person's page in the workspace
(`/app/people/{id}/access`, issue 18): the coordinator links a citizen account to the person (or
to someone acting for them, or lets a parent's existing account open this child's record too),
adds the parent, carer or attorney to the record (a RelatedPerson), records a delegation Consent
with its evidence, and ends one.

Who may: a member of staff in a role the operator authorises to record consent
(HUB_CONSENT_RECORDERS, hub/consent/authority.py) who can see the person's record — linking an
account opens the record to someone, which is at least as weighty as a sharing choice. Accounts
are made with the same checks as `ipc-hub users add-person` / `link-person` (hub.auth.citizens)
and each link is an audit row naming the coordinator, their organisation, the authority and how
they checked who the person is, in the link's own transaction. RelatedPersons and delegations
are written through the FHIR API with the coordinator's token, so the API's own rules apply
(authority, the recorded conversation, evidence; each change of a delegation is an audit row of
kind `consent`). Passwords the hub makes are shown once, on the answer to the POST, never kept."""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from hub.auth.citizens import add_record, link_citizen
from hub.auth.passwords import new_password
from hub.consent.authority import AUTHORISED_ROLE, POLICY_BASE, parse_recorders
from hub.consent.delegation import ACTING_ROLES, DELEGATION_CATEGORY
from hub.consent.parts import PART_SYSTEM, PARTS, PLAN_CATEGORY_SYSTEM
from hub.store import audit, users
from hub.web import facts
from hub.web.access import Workspace, posted, signed_in
from hub.web.context import page_context
from hub.web.errors import PageError
from hub.web.pages import person_name, render
from hub.web.session import WORKSPACE_CLIENT

router = APIRouter(include_in_schema=False)

ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ACTING_NAMES = {"PRN": "Parent", "MTH": "Mother", "FTH": "Father", "GUARD": "Guardian",
                "POWATT": "Lasting power of attorney", "HPOWATT": "Lasting power of attorney (health and welfare)",
                "DPOWATT": "Enduring power of attorney", "SPOWATT": "Deputy appointed by the Court of Protection"}
HOW_CHECKED = {"photo-id": "Photo ID seen in person", "known": "Known to me from our meetings",
               "video": "Checked on a video call with ID shown"}
# A delegation may cover any part but safeguarding (never shown to the person or a proxy).
DELEGABLE = tuple(p for p in PARTS if p != "safeguarding")


async def _person(request: Request, patient_id: str) -> tuple[Workspace, dict[str, Any], bool]:
    workspace = await signed_in(request)
    patient = await workspace.record.read("Patient", patient_id)
    if patient is None:
        raise PageError(404, "Person not found", "There is no such person, or they have not shared their "
                        "record with your organisation.")
    user = workspace.user
    may = (user.partner_class, user.role) in parse_recorders(request.app.state.settings.consent_recorders)
    return workspace, patient, may


def _refuse_unless(may: bool) -> None:
    if not may:
        raise PageError(403, "Not available to your role", "Only staff in a role the operator authorises to record "
                        "people's consent (HUB_CONSENT_RECORDERS) can give someone access to a person's record.")


@router.get("/app/people/{patient_id}/access")
async def page(patient_id: str, request: Request) -> Response:
    workspace, patient, may = await _person(request, patient_id)
    return await _render(request, workspace, patient, may, done=request.query_params.get("done"))


async def _render(request: Request, workspace: Workspace, patient: dict[str, Any], may: bool, *,
                  status: int = 200, **extra: Any) -> Response:
    pid = patient["id"]
    record = workspace.record
    related = (await record.search("RelatedPerson", [("patient", f"Patient/{pid}"), ("_count", "50")])).matches
    names = {f"RelatedPerson/{r['id']}": person_name(r) for r in related}
    names[f"Patient/{pid}"] = f"{person_name(patient)} (the person)"
    consents = (await record.search("Consent", [("patient", f"Patient/{pid}"), ("status", "active"),
                                                ("category", f"{PLAN_CATEGORY_SYSTEM}|{DELEGATION_CATEGORY}"),
                                                ("_count", "50")])).matches
    delegations = []
    for consent in consents:
        provision = consent.get("provision") or {}
        for actor in provision.get("actor") or []:
            ref = (actor.get("reference") or {}).get("reference", "")
            delegations.append({
                "id": consent["id"], "who": names.get(ref, ref), "role": ACTING_NAMES.get(facts.code_of(actor.get("role"), ROLE_SYSTEM) or "", ""),
                "parts": [facts.code_of(c, PART_SYSTEM) for c in provision.get("code") or []],
                "start": (provision.get("period") or {}).get("start"), "end": (provision.get("period") or {}).get("end"),
                "evidence": (consent.get("sourceAttachment") or {}).get("title")
                or (consent.get("sourceReference") or {}).get("reference", "")})
    async with request.app.state.pool.connection() as conn:
        accounts = await users.accounts_opening(conn, pid)
    return render("person_access", status=status, **page_context(
        workspace, "caseload", f"Sign-in and acting for {person_name(patient)}", patient=patient, may=may,
        related=[{"id": r["id"], "name": person_name(r), "relationship": ", ".join(
            ACTING_NAMES.get(c.get("code", ""), c.get("display") or c.get("code", "")) for concept in r.get("relationship") or []
            for c in concept.get("coding") or [])} for r in related],
        accounts=[{"username": a.username, "name": a.display_name, "status": a.status,
                   "as": names.get(a.fhir_user, a.fhir_user)} for a in accounts],
        delegations=delegations, acting_roles=ACTING_NAMES, parts=DELEGABLE, how_checked=HOW_CHECKED, **extra))


@router.post("/app/people/{patient_id}/access/account")
async def link_account(patient_id: str, request: Request) -> Response:
    workspace, patient, may = await _person(request, patient_id)
    fields = await posted(request, workspace)
    _refuse_unless(may)
    who = fields.get("who", "")
    how = fields.get("checked", "")
    username = (fields.get("username") or "").strip()
    if how not in HOW_CHECKED:
        return await _render(request, workspace, patient, may, status=400,
                             error="Say how you checked who this person is before giving them access.")
    if who != "patient":
        related = await workspace.record.read("RelatedPerson", who) if who else None
        if related is None or (related.get("patient") or {}).get("reference") != f"Patient/{patient_id}":
            return await _render(request, workspace, patient, may, status=400,
                                 error="Choose the person, or someone acting for them, from the list.")
    user = workspace.user
    password = None
    async with request.app.state.pool.connection() as conn, conn.transaction():
        if fields.get("existing") == "yes":
            if who == "patient":
                return await _render(request, workspace, patient, may, status=400,
                                     error="An existing account can be given this record only for someone acting for "
                                           "the person (a parent of two children, say).")
            account, link, why = await add_record(conn, username=username, related_person=who,
                                                  linked_by=user.practitioner)
            linked = link.fhir_user if link else ""
        else:
            password = new_password()
            account, why = await link_citizen(
                conn, username=username, display_name=fields.get("name") or username,
                patient=patient_id if who == "patient" else None,
                related_person=None if who == "patient" else who, password=password)
            linked = account.fhir_user if account else ""
        if account is None:
            return await _render(request, workspace, patient, may, status=400, error=f"The account was not linked: {why}.")
        await audit.record_account_link(
            conn, patient_id=patient_id, linked=linked or "", account_user_id=account.user_id,
            policy=POLICY_BASE + AUTHORISED_ROLE, client_id=WORKSPACE_CLIENT,
            organisation=user.organisation, organisation_system=user.organisation_system,
            partner_class=user.partner_class, user_ref=user.practitioner, how_checked=how)
    return await _render(request, workspace, patient, may, issued={"username": account.username,
                                                                   "password": password})


@router.post("/app/people/{patient_id}/access/related")
async def add_related(patient_id: str, request: Request) -> Response:
    """Add a parent, carer or attorney to the person's record (a RelatedPerson), to link and to
    delegate to."""
    workspace, patient, may = await _person(request, patient_id)
    fields = await posted(request, workspace)
    _refuse_unless(may)
    family, given, role = (fields.get("family") or "").strip(), (fields.get("given") or "").strip(), fields.get("role", "")
    if not family or role not in ACTING_NAMES:
        return await _render(request, workspace, patient, may, status=400,
                             error="Give their family name and how they act for the person.")
    written = await workspace.record.create({
        "resourceType": "RelatedPerson", "active": True, "patient": {"reference": f"Patient/{patient_id}"},
        "relationship": [{"coding": [{"system": ROLE_SYSTEM, "code": role}], "text": ACTING_NAMES[role]}],
        "name": [{"family": family[:100], **({"given": [given[:100]]} if given else {})}]})
    if written.status != "ok":
        return await _render(request, workspace, patient, may, status=422, error=f"Not added: {written.message}")
    return RedirectResponse(f"/app/people/{patient_id}/access?done=related", status_code=303)


@router.post("/app/people/{patient_id}/access/delegation")
async def record_delegation(patient_id: str, request: Request) -> Response:
    workspace, patient, may = await _person(request, patient_id)
    form = await request.form()
    fields = await posted(request, workspace)
    _refuse_unless(may)
    related, role = fields.get("related", ""), fields.get("role", "")
    parts = [p for p in form.getlist("parts") if p in DELEGABLE]
    evidence = (fields.get("evidence") or "").strip()
    until = (fields.get("until") or "").strip()
    problems = []
    if not related or role not in ACTING_ROLES:
        problems.append("choose who acts for the person and on what authority")
    if not parts:
        problems.append("choose at least one part of the record they may see")
    if not evidence:
        problems.append("say what evidence you saw (a registered lasting power of attorney, a court order, "
                        "a birth certificate)")
    if until and not _is_date(until):
        problems.append("the end date must be a date such as 2027-03-31")
    if problems:
        return await _render(request, workspace, patient, may, status=400, error="Not recorded: " + "; ".join(problems) + ".")
    today = date.today().isoformat()
    verified_with = f"Patient/{patient_id}" if fields.get("verified_with") == "patient" else f"RelatedPerson/{related}"
    consent = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": PLAN_CATEGORY_SYSTEM, "code": DELEGATION_CATEGORY}]}],
        "patient": {"reference": f"Patient/{patient_id}"}, "dateTime": _now(),
        "performer": [{"reference": workspace.user.practitioner}],
        "policyRule": {"text": ACTING_NAMES[role]},
        "sourceAttachment": {"title": evidence[:500]},
        "verification": [{"verified": True, "verifiedWith": {"reference": verified_with}, "verificationDate": today}],
        "provision": {"type": "permit", "period": {"start": today, **({"end": until} if until else {})},
                      "actor": [{"role": {"coding": [{"system": ROLE_SYSTEM, "code": role}]},
                                 "reference": {"reference": f"RelatedPerson/{related}"}}],
                      "code": [{"coding": [{"system": PART_SYSTEM, "code": part}]} for part in parts]}}
    written = await workspace.record.create(consent)
    if written.status != "ok":
        return await _render(request, workspace, patient, may, status=422, error=f"Not recorded: {written.message}")
    return RedirectResponse(f"/app/people/{patient_id}/access?done=delegation", status_code=303)


@router.post("/app/people/{patient_id}/access/delegation/{consent_id}/end")
async def end_delegation(patient_id: str, consent_id: str, request: Request) -> Response:
    """End a delegation now: the Consent becomes inactive and its period ends today; the proxy's
    next request sees nothing of the record."""
    workspace, patient, may = await _person(request, patient_id)
    await posted(request, workspace)
    _refuse_unless(may)
    consent = await workspace.record.read("Consent", consent_id)
    if consent is None or (consent.get("patient") or {}).get("reference") != f"Patient/{patient_id}":
        raise PageError(404, "Delegation not found", "This delegation is not in the record you can see.")
    consent["status"] = "inactive"
    provision = consent.setdefault("provision", {})
    period = provision.get("period") or {}
    # Ends now; against a start given as a date, as a date (FHIR compares a period's ends at the
    # precision they share, and the status already ends access this moment).
    provision["period"] = {**period, "end": date.today().isoformat() if len(period.get("start") or "") == 10 else _now()}
    written = await workspace.record.update(consent, consent["meta"]["versionId"])
    if written.status != "ok":
        return await _render(request, workspace, patient, may, status=409, error=f"Not ended: {written.message}")
    return RedirectResponse(f"/app/people/{patient_id}/access?done=ended", status_code=303)


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
