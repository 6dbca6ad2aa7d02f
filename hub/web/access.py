"""Who is using the workspace, and with what access: every workspace page starts with
`signed_in(request)`, which finds the workspace session (or sends the browser to sign in),
refreshes the session's access token when it is about to run out (the refresh token rotates),
and gives the page the record as that person's app sees it. A POST also checks the form's CSRF
token. Pages for one role (operations) say so with `require_role`."""
from __future__ import annotations

from dataclasses import dataclass, replace

from starlette.requests import Request

from hub.fhir.errors import FhirError
from hub.store.users import UserRecord
from hub.web import session as web
from hub.web.errors import PageError, SignInRequired
from hub.web.record import Record, oauth_post

_REFRESH_MARGIN_S = 30


@dataclass
class Workspace:
    session: web.Session
    record: Record
    records: int = 1  # the person's pages: how many people's records this account may open

    @property
    def user(self) -> UserRecord:
        return self.session.user

    @property
    def csrf(self) -> str:
        return self.session.csrf


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


# Each of the hub's own apps: (session kind, cookie, client id, where its pages start).
_APPS = {"workspace": ("workspace", web.WORKSPACE_COOKIE, web.WORKSPACE_CLIENT, "/app"),
         "person": ("person", web.PERSON_COOKIE, web.PERSON_CLIENT, "/me")}


async def signed_in(request: Request, app: str = "workspace") -> Workspace:
    """The session of the workspace (or, `app="person"`, of the person's own pages)."""
    kind, cookie, client_id, home = _APPS[app]
    current = await web.current_session(request, kind)
    if current is None:
        raise SignInRequired(_here(request) if request.method == "GET" else home)
    access, refresh = web.tokens(request, current)
    expires = current.record.access_expires_at or 0
    if not access or expires - _REFRESH_MARGIN_S < web.now():
        access = await _refreshed(request, current, refresh, cookie, client_id)
    if app == "person":
        current.user = _launched(request, current.user, access)
    return Workspace(current, Record(request, access))


def _launched(request: Request, user: UserRecord, access: str) -> UserRecord:
    """The person's pages open the record their token opens (for a proxy acting for several
    people, the one chosen at sign-in), as the token says: its `patient` and `fhirUser`."""
    try:
        principal = request.app.state.auth.authenticate(f"Bearer {access}")
    except FhirError:
        raise SignInRequired(_here(request) if request.method == "GET" else "/me") from None
    return replace(user, patient_id=principal.patient, fhir_user=principal.user)


async def _refreshed(request: Request, current: web.Session, refresh: str | None, cookie: str,
                     client_id: str) -> str:
    if not refresh:
        await web.end_session(request, cookie)
        raise SignInRequired(_here(request))
    status, body = await oauth_post(request, "/auth/token", {
        "grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id})
    if status != 200:
        await web.end_session(request, cookie)
        raise SignInRequired(_here(request))
    await web.store_tokens(request, current, body["access_token"], body.get("refresh_token"),
                           web.now() + int(body.get("expires_in", 0)))
    return body["access_token"]


async def posted(request: Request, workspace: Workspace) -> dict[str, str]:
    """The form of a POST, after checking its CSRF token against the session's."""
    form = await request.form()
    fields = {k: str(v) for k, v in form.multi_items() if isinstance(v, str)}
    if not web.same(fields.get("csrf_token"), workspace.csrf):
        raise PageError(403, "This form has expired", "The form did not come from this page or has expired. "
                        "Go back, reload the page and try again.")
    return fields


def require_role(workspace: Workspace, *roles: str) -> None:
    if workspace.user.role not in roles:
        raise PageError(403, "Not available to your role",
                        f"This page is for {' and '.join(roles)}s. Ask an operator if you need it.")
