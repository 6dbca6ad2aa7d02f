"""Browser sessions for the sign-in pages and the workspace: cookies, CSRF tokens, sealed
values, and who is signed in.

- Two sessions, two cookies: `hub_signin` says who is signed in at the authorisation server
  (so a second app need not ask again), `hub_workspace` is the workspace's own, holding the
  tokens the workspace was given as an app. Both are random 256-bit ids, stored only as
  digests (hub.store.sessions), Secure, HttpOnly, SameSite=Lax, ending at sign-out, after the
  idle timeout and at absolute expiry. A new id is made at every sign-in, so an id planted
  before sign-in (session fixation) is never promoted.
- CSRF: every form carries the session's CSRF token; a POST without the right one is refused
  (403) before anything is done. The sign-in form, before any session, carries a token bound
  to a short-lived cookie (double submit).
- Sealed values (hub.auth.sealing): the state of a sign-in in progress (PKCE verifier, nonce,
  state, where to go next) travels in a cookie sealed with AES-GCM, and the workspace's tokens
  are stored sealed, so neither a browser nor a copy of the sessions table can read or alter
  them."""
from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from hub.auth.sealing import Sealer
from hub.config import Settings
from hub.fhir.errors import FhirError
from hub.store import sessions, users
from hub.store.users import UserRecord

SIGNIN_COOKIE = "hub_signin"
WORKSPACE_COOKIE = "hub_workspace"
LOGIN_COOKIE = "hub_login"  # the sign-in form's CSRF value
FLOW_COOKIE = "hub_flow"  # a sign-in in progress (sealed)
FLOW_LIFETIME_S = 600
# The workspace, as an app of this hub: public (PKCE), for people, with what any role may need
# (each person's role then cuts this down, hub.auth.roles).
WORKSPACE_CLIENT = "ipc-hub-workspace"
WORKSPACE_SCOPES = ("openid", "fhirUser", "profile", "offline_access", "user/*.cruds", "user/AuditEvent.rs")
# The person's own pages (`/me`, issue 18), another public app of this hub: a SMART standalone
# patient launch with what the person (or their proxy) may do (hub.auth.roles), in a session and
# cookie of their own.
PERSON_COOKIE = "hub_me"
PERSON_CLIENT = "ipc-hub-me"
PERSON_SCOPES = ("openid", "fhirUser", "profile", "offline_access", "launch/patient", "patient/*.rs",
                 "patient/AuditEvent.rs", "patient/Goal.u", "patient/Consent.cu", "patient/Task.c")
_COOKIES = {"sign-in": SIGNIN_COOKIE, "workspace": WORKSPACE_COOKIE, "person": PERSON_COOKIE}


def cookie_of(kind: str) -> str:
    """The cookie that carries a session of this kind (sign-in, workspace, person)."""
    return _COOKIES[kind]


def sealer(request: Request) -> Sealer:
    found = getattr(request.app.state, "web_sealer", None)
    if found is None:
        found = request.app.state.web_sealer = Sealer(request.app.state.auth.keys.signing)
    return found


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=_settings(request).session_cookie_secure,
                        httponly=True, samesite="lax")


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=_settings(request).session_cookie_secure, httponly=True,
                           samesite="lax")


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def csrf_refused() -> FhirError:
    return FhirError("forbidden", "this form has expired or did not come from this site: go back, reload "
                     "the page and try again", status=403)


# --- the sign-in form's CSRF token, before any session ------------------------------------------

def login_token(request: Request) -> tuple[str, bool]:
    """(the sign-in form's CSRF value, whether its cookie must be set now)."""
    existing = request.cookies.get(LOGIN_COOKIE)
    if existing and len(existing) >= 32:
        return existing, False
    return secrets.token_urlsafe(32), True


# --- sessions -----------------------------------------------------------------------------------

@dataclass
class Session:
    session_id: str
    record: sessions.SessionRecord
    user: UserRecord

    @property
    def csrf(self) -> str:
        return self.record.csrf_token


async def start_session(request: Request, response: Response, *, kind: str, user: UserRecord,
                        auth_time: int, access_token: str | None = None, refresh_token: str | None = None,
                        access_expires_at: int | None = None) -> str:
    """A new session (a new id, whatever cookie came in) and its cookie."""
    settings = _settings(request)
    session_id = secrets.token_urlsafe(32)
    seal = sealer(request)
    async with request.app.state.pool.connection() as conn:
        await sessions.create_session(
            conn, session_id, kind=kind, user_id=user.user_id, csrf_token=secrets.token_urlsafe(32),
            auth_time=auth_time, absolute_s=settings.session_lifetime_s,
            access_token=seal.seal(access_token, "access") if access_token else None,
            refresh_token=seal.seal(refresh_token, "refresh") if refresh_token else None,
            access_expires_at=access_expires_at)
    set_cookie(request, response, _COOKIES[kind], session_id)
    return session_id


async def current_session(request: Request, kind: str) -> Session | None:
    """The live session of this kind for the request's cookie, its idle clock restarted; None when
    there is none or its person has been disabled."""
    cookie = _COOKIES[kind]
    session_id = request.cookies.get(cookie)
    if not session_id:
        return None
    async with request.app.state.pool.connection() as conn:
        record = await sessions.touch_session(conn, session_id, kind=kind,
                                              idle_s=_settings(request).session_idle_timeout_s)
        if record is None:
            return None
        user = await users.get_user(conn, record.user_id)
    if user is None or not user.active:
        return None
    return Session(session_id, record, user)


def tokens(request: Request, session: Session) -> tuple[str | None, str | None]:
    """The workspace session's (access token, refresh token), unsealed."""
    seal = sealer(request)
    return (seal.unseal(session.record.access_token, "access"),
            seal.unseal(session.record.refresh_token, "refresh"))


async def store_tokens(request: Request, session: Session, access_token: str, refresh_token: str | None,
                       access_expires_at: int) -> None:
    seal = sealer(request)
    async with request.app.state.pool.connection() as conn:
        await sessions.store_tokens(conn, session.session_id, access_token=seal.seal(access_token, "access"),
                                    refresh_token=seal.seal(refresh_token, "refresh") if refresh_token else None,
                                    access_expires_at=access_expires_at)


async def end_session(request: Request, cookie: str) -> sessions.SessionRecord | None:
    session_id = request.cookies.get(cookie)
    if not session_id:
        return None
    async with request.app.state.pool.connection() as conn:
        return await sessions.end_session(conn, session_id)


def now() -> int:
    return int(time.time())
