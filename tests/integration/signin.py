"""Helpers for the sign-in tests: staff accounts and apps in the session's database, and a small
browser stand-in over httpx that keeps cookies itself (httpx's cookie jar, like a browser, will
not send the hub's Secure cookies over the tests' plain http; Chromium treats 127.0.0.1 as
secure, and the browser tests use it)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from psycopg import AsyncConnection

from hub.auth.accounts import new_account
from hub.auth.registry import NewClient, register
from hub.cli.users import save_account
from hub.store import clients as client_store
from hub.store.users import UserRecord

PASSWORD = "a long demo passphrase"
APP_SCOPES = "openid fhirUser profile offline_access user/*.cruds user/AuditEvent.rs"


def run(coro):
    return asyncio.run(coro)


def add_user(pg_url: str, *, role: str = "coordinator", partner_class: str = "nhs", organisation: str = "QT1",
             password: str | None = PASSWORD, totp_secret: str | None = None, external_subject: str | None = None,
             practitioner_id: str | None = None, name: str = "Test Person", sealer=None) -> UserRecord:
    account = new_account(username=f"user-{uuid.uuid4().hex[:10]}", display_name=name, role=role,
                          partner_class=partner_class, organisation=organisation, password=password,
                          totp_secret=totp_secret, external_subject=external_subject,
                          practitioner_id=practitioner_id, sealer=sealer)

    async def save() -> None:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            assert await save_account(conn, account)

    run(save())
    return account.user


def add_app(pg_url: str, redirect_uri: str, *, public: bool = True, scopes: str = APP_SCOPES) -> NewClient:
    new = register(name="test app", partner_class="nhs", organisation="RX1", scopes=scopes,
                   client_id=f"app-{uuid.uuid4().hex[:10]}", redirect_uris=(redirect_uri,), public=public)

    async def save() -> None:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await client_store.insert_client(conn, new.record)

    run(save())
    return new


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


@dataclass
class Answer:
    status: int
    location: str
    text: str


class Agent:
    """A browser stand-in: follows nothing by itself, keeps every cookie it is given."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []
        self.client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            self.set_cookie_headers.append(header)
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if value and "max-age=0" not in header.lower() and "expires=thu, 01 jan 1970" not in header.lower():
                self.cookies[name.strip()] = value
            else:
                self.cookies.pop(name.strip(), None)

    def request(self, method: str, url: str, **kwargs) -> Answer:
        headers = kwargs.pop("headers", {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.client.request(method, url, headers=headers, **kwargs)
        self._remember(response)
        return Answer(response.status_code, response.headers.get("location", ""), response.text)

    def get(self, url: str, **kwargs) -> Answer:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> Answer:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.client.close()


def form_of(page: str) -> tuple[str, str]:
    """(the form's action, its CSRF token) from the sign-in page."""
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page).group(1))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return action, csrf


def authorize_url(base: str, app: NewClient, redirect_uri: str, *, audience: str, challenge: str | None,
                  state: str = "st-1", scope: str = APP_SCOPES, method: str = "S256", **extra: str) -> str:
    params = {"response_type": "code", "client_id": app.record.client_id, "redirect_uri": redirect_uri,
              "scope": scope, "state": state, "aud": audience, **extra}
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method=method)
    return f"{base}/auth/authorize?{urlencode(params)}"


def sign_in(agent: Agent, url: str, username: str, password: str = PASSWORD, code: str = "") -> Answer:
    """Open an authorization URL, fill in the sign-in form, and return the answer to it."""
    page = agent.get(url)
    assert page.status == 200, page.text[:500]
    action, csrf = form_of(page.text)
    return agent.post(action, data={"csrf_token": csrf, "username": username, "password": password, "code": code})


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
