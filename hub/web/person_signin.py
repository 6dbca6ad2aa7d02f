"""People signing in themselves through an external OpenID Connect provider set up as NHS login
is (issue 18): `/auth/person/start` and `/auth/person/callback`, beside the sign-in page of the
authorization endpoint (hub.web.signin), which offers "Continue with NHS login" when
HUB_PERSON_OIDC_ISSUER is set.

The hub is an ordinary relying party (the same code as for staff: hub.web.signin.start_external
and finish_external). What NHS login asserts decides who the person is, and the hub decides
which record that opens:

- the identity proofing level claim (HUB_PERSON_OIDC_PROOFING_CLAIM, NHS login's
  `identity_proofing_level`) must be at least HUB_PERSON_OIDC_MIN_PROOFING (P9 by default: a
  record of care is shown only to someone proofed to the highest level);
- the NHS number claim must match exactly one current Patient in the hub: none, or more than
  one (a duplicate not yet resolved), is refused with a page that says so plainly and tells the
  person to contact their coordinator — never which records exist.

The account is made at the first sign-in (a citizen account, role `person`, linked to that
Patient) and relinked if the NHS number now matches another Patient (a merge). Nothing else of the
id_token is kept. Then the SMART authorization request the app made resumes, as after a local
sign-in."""
from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from hub.auth.accounts import CITIZEN_CLASS, CITIZEN_SYSTEM
from hub.auth.roles import PERSON
from hub.fhir.identifiers import NHS_NUMBER
from hub.store import users
from hub.store.users import UserRecord
from hub.web import session as web
from hub.web.errors import PageError
from hub.web.signin import ExternalProvider, answer_check, checked_request, finish_external, start_external

router = APIRouter(include_in_schema=False)
PURPOSE = "person-oidc"


def _provider(request: Request) -> ExternalProvider:
    settings = request.app.state.settings
    if not settings.person_oidc_issuer:
        raise PageError(404, "Page not found", "signing in through NHS login is not set up here")
    return ExternalProvider(settings.person_oidc_issuer, settings.person_oidc_client_id,
                            settings.person_oidc_client_secret, settings.person_oidc_scopes,
                            f"{request.app.state.auth.issuer}/auth/person/callback", PURPOSE)


def proofing_level(value: object) -> int | None:
    """P0, P5, P9 (NHS login's levels) as a number to compare; None for anything else."""
    text = str(value or "")
    return int(text[1:]) if len(text) >= 2 and text[0] == "P" and text[1:].isdigit() else None


@router.get("/auth/person/start")
async def person_sign_in(request: Request) -> Response:
    provider = _provider(request)
    _, _, check = await checked_request(request)
    answer = answer_check(check)
    if answer is not None:
        return answer
    return await start_external(request, provider)


@router.get("/auth/person/callback")
async def person_callback(request: Request) -> Response:
    settings = request.app.state.settings
    claims, flow = await finish_external(request, _provider(request))
    level, needed = proofing_level(claims.get(settings.person_oidc_proofing_claim)), \
        proofing_level(settings.person_oidc_min_proofing)
    if level is None or needed is None or level < needed:
        raise PageError(403, "We need to confirm who you are first",
                        f"To see your record you need to have proved who you are to level "
                        f"{settings.person_oidc_min_proofing} with {settings.person_oidc_display_name}. You can do "
                        f"this in the NHS App, then sign in again.")
    nhs_number = str(claims.get(settings.person_oidc_nhs_number_claim) or "")
    if not (len(nhs_number) == 10 and nhs_number.isdigit()):
        raise PageError(403, "We could not find your record",
                        f"{settings.person_oidc_display_name} did not tell us your NHS number. Contact your care "
                        f"coordinator.")
    async with request.app.state.pool.connection() as conn:
        found = await users.patients_with_nhs_number(conn, nhs_number, NHS_NUMBER)
        if not found:
            raise PageError(403, "We could not find your record",
                            "This service has no record for your NHS number. If you have a personalised care "
                            "and support plan, contact your care coordinator.")
        if len(found) > 1:
            raise PageError(409, "We could not open your record",
                            "Your NHS number matches more than one record here, so we cannot be sure which is "
                            "yours. We have not shown you anything. Contact your care coordinator, who can put "
                            "this right.")
        user_id = uuid.uuid4().hex
        user = await users.link_external_citizen(conn, UserRecord(
            user_id=user_id, username=f"nhs-login-{user_id[:12]}", display_name=str(claims.get("name") or "You"),
            role=PERSON, organisation=user_id, organisation_system=CITIZEN_SYSTEM, partner_class=CITIZEN_CLASS,
            practitioner_id=None, practitioner_role_id=None, external_subject=f"{PURPOSE}|{claims['sub']}",
            fhir_user=f"Patient/{found[0]}", patient_id=found[0]))
    if not user.active:
        raise PageError(403, "Your account is switched off", "Contact your care coordinator.")
    auth_time = int(claims.get("auth_time") or time.time())
    response = RedirectResponse(f"/auth/authorize?{flow['authorize']}", status_code=302)
    web.clear_cookie(request, response, web.FLOW_COOKIE)
    await web.start_session(request, response, kind="sign-in", user=user, auth_time=auth_time)
    return response
