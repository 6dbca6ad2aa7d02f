"""SMART App Launch 2 for staff, over real HTTP against the real API: the authorization code
grant with PKCE (S256, required and verified), a code used once, exact redirect URIs, `state`
round-tripped, `id_token`, refresh tokens rotated with reuse detection, revocation, lockout and
TOTP, and the discovery documents, with authlib and fhirclient as the clients."""
from __future__ import annotations

import time
import uuid

import httpx
import pyotp
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.integration.signin import (
    APP_SCOPES,
    PASSWORD,
    Agent,
    add_app,
    add_user,
    authorize_url,
    form_of,
    pkce,
    query_of,
    sign_in,
)

pytestmark = pytest.mark.integration

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the test reads the Location


@pytest.fixture()
def base(hub_url: str) -> str:
    return hub_url


@pytest.fixture()
def audience(hub_api) -> str:
    return hub_api.settings.token_audience()


@pytest.fixture()
def agent(base: str):
    found = Agent(base)
    yield found
    found.close()


def code_for(agent: Agent, base: str, audience: str, app, user, *, state: str = "s1", scope: str = APP_SCOPES,
             nonce: str | None = None) -> tuple[str, str]:
    """Sign `user` in for `app`; (code, verifier)."""
    verifier, challenge = pkce()
    extra = {"nonce": nonce} if nonce else {}
    answer = sign_in(agent, authorize_url(base, app, REDIRECT, audience=audience, challenge=challenge, state=state,
                                          scope=scope, **extra), user.username)
    assert answer.status == 302, answer.text[:400]
    query = query_of(answer.location)
    assert answer.location.startswith(REDIRECT + "?") and query["state"] == state
    return query["code"], verifier


def exchange(base: str, app, code: str, verifier: str, **extra) -> httpx.Response:
    return httpx.post(f"{base}/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": REDIRECT, "client_id": app.record.client_id,
                                                  "code_verifier": verifier, **extra})


def refresh(base: str, app, token: str) -> httpx.Response:
    return httpx.post(f"{base}/auth/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                                  "client_id": app.record.client_id})


def fhir_status(base: str, token: str) -> int:
    return httpx.get(f"{base}/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code


# --- discovery ------------------------------------------------------------------------------------

def test_smart_configuration_is_open_at_the_fhir_base_and_says_exactly_what_works(base):
    for path in ("/fhir/.well-known/smart-configuration", "/.well-known/smart-configuration"):
        answer = httpx.get(f"{base}{path}")
        assert answer.status_code == 200, path
        doc = answer.json()
        assert doc["authorization_endpoint"] == f"{base}/auth/authorize"
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["response_types_supported"] == ["code"]
        assert {"launch-standalone", "client-public", "client-confidential-symmetric", "sso-openid-connect",
                "permission-v2", "permission-user"} <= set(doc["capabilities"])
        assert "launch-ehr" not in doc["capabilities"] and "permission-patient" not in doc["capabilities"]
        assert {"openid", "fhirUser", "profile", "offline_access"} <= set(doc["scopes_supported"])


def test_openid_configuration(base):
    doc = httpx.get(f"{base}/.well-known/openid-configuration").json()
    assert doc["issuer"] == base and doc["jwks_uri"] == f"{base}/.well-known/jwks.json"
    assert doc["response_types_supported"] == ["code"] and doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "fhirUser" in doc["claims_supported"]


def test_capability_statement_names_the_authorize_endpoint(base):
    rest = httpx.get(f"{base}/fhir/metadata", headers={"Accept": "application/fhir+json"}).json()["rest"][0]
    uris = {e["url"]: e["valueUri"] for ext in rest["security"]["extension"] for e in ext["extension"]}
    assert uris["authorize"] == f"{base}/auth/authorize"


# --- the authorization code grant -------------------------------------------------------------------

def test_code_flow_with_authlib_gives_tokens_naming_the_user_and_an_id_token(base, audience, pg_url, agent):
    user = add_user(pg_url, name="Karen Hughes")
    app = add_app(pg_url, REDIRECT, public=False)
    client = OAuth2Client(client_id=app.record.client_id, client_secret=app.secret, scope=APP_SCOPES,
                          redirect_uri=REDIRECT, code_challenge_method="S256",
                          token_endpoint_auth_method="client_secret_basic")
    verifier = pyotp.random_base32() + uuid.uuid4().hex  # 48+ characters: a valid PKCE verifier
    url, state = client.create_authorization_url(f"{base}/auth/authorize", code_verifier=verifier, aud=audience,
                                                 nonce="n-0S6_WzA2Mj")
    answer = sign_in(agent, url, user.username)
    assert answer.status == 302 and query_of(answer.location)["state"] == state
    token = client.fetch_token(f"{base}/auth/token", authorization_response=answer.location, code_verifier=verifier)
    granted = token["scope"].split()
    assert {"openid", "fhirUser", "profile", "offline_access"} <= set(granted)
    assert "user/AuditEvent.rs" in granted and token["refresh_token"]
    keys = KeySet.import_key_set(httpx.get(f"{base}/.well-known/jwks.json").json())
    claims = jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["aud"] == app.record.client_id and claims["iss"] == base and claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["sub"] == user.user_id and claims["name"] == "Karen Hughes"
    assert claims["fhirUser"] == f"{audience}/{user.practitioner}"
    access = jwt.decode(token["access_token"], keys, algorithms=["RS256"]).claims
    assert access["client_id"] == app.record.client_id and access["ipc_user"] == user.practitioner
    assert access["ipc_org"] == "QT1" and access["ipc_partner_class"] == "nhs"
    assert fhir_status(base, token["access_token"]) == 200


def test_fhirclient_standalone_launch_with_its_default_scopes(base, pg_url, agent):
    """fhirclient asks for `launch/patient`-free defaults `user/*.* patient/*.read openid profile`:
    the hub grants the part it supports instead of refusing the whole request."""
    from fhirclient import client as fhir_client
    from fhirclient.models.patient import Patient

    user = add_user(pg_url)
    app = add_app(pg_url, REDIRECT, public=False)
    smart = fhir_client.FHIRClient(settings={"app_id": app.record.client_id, "app_secret": app.secret,
                                             "api_base": f"{base}/fhir", "redirect_uri": REDIRECT})
    url = smart.authorize_url
    assert url.startswith(f"{base}/auth/authorize")
    answer = sign_in(agent, url, user.username)
    assert answer.status == 302, answer.text[:300]
    smart.handle_callback(answer.location)
    assert smart.ready
    keys = KeySet.import_key_set(httpx.get(f"{base}/.well-known/jwks.json").json())
    granted = jwt.decode(smart.server.auth.access_token, keys, algorithms=["RS256"]).claims["scope"].split()
    assert "user/*.crus" in granted and "openid" in granted and "profile" in granted  # the coordinator role
    assert not any(s.startswith(("patient/", "launch")) for s in granted)
    bundle = Patient.where({"_count": "5"}).perform(smart.server)
    assert bundle.resource_type == "Bundle"


def test_pkce_is_required(base, audience, pg_url, agent):
    app = add_app(pg_url, REDIRECT)
    answer = agent.get(authorize_url(base, app, REDIRECT, audience=audience, challenge=None, state="x"))
    assert answer.status == 302
    query = query_of(answer.location)
    assert query["error"] == "invalid_request" and "PKCE" in query["error_description"] and query["state"] == "x"
    _, challenge = pkce()
    plain = agent.get(authorize_url(base, app, REDIRECT, audience=audience, challenge=challenge, method="plain"))
    assert query_of(plain.location)["error"] == "invalid_request"


def test_pkce_verifier_is_checked(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    code, verifier = code_for(agent, base, audience, app, user)
    wrong = exchange(base, app, code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    missing = httpx.post(f"{base}/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                     "redirect_uri": REDIRECT, "client_id": app.record.client_id})
    assert missing.status_code == 400


def test_a_code_used_twice_is_refused_and_revokes_what_it_gave(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    code, verifier = code_for(agent, base, audience, app, user)
    first = exchange(base, app, code, verifier)
    assert first.status_code == 200
    tokens = first.json()
    assert fhir_status(base, tokens["access_token"]) == 200
    second = exchange(base, app, code, verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert "already been used" in second.json()["error_description"]
    deadline = time.monotonic() + 10  # the deny list reaches every API process by NOTIFY
    while fhir_status(base, tokens["access_token"]) != 401 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fhir_status(base, tokens["access_token"]) == 401
    assert refresh(base, app, tokens["refresh_token"]).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("asked", [REDIRECT + "/", REDIRECT + "?x=1", "http://127.0.0.1:9/other",
                                   "HTTP://127.0.0.1:9/callback"])
def test_redirect_uri_must_match_exactly_and_a_mismatch_is_never_redirected_to(base, audience, pg_url, agent, asked):
    app = add_app(pg_url, REDIRECT)
    _, challenge = pkce()
    answer = agent.get(authorize_url(base, app, asked, audience=audience, challenge=challenge))
    assert answer.status == 400 and not answer.location
    assert "not valid" in answer.text


def test_redirect_uri_at_the_token_endpoint_must_be_the_one_used(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    code, verifier = code_for(agent, base, audience, app, user)
    other = httpx.post(f"{base}/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                   "redirect_uri": REDIRECT + "x", "client_id": app.record.client_id,
                                                   "code_verifier": verifier})
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"


def test_state_is_round_tripped_exactly(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    state = "a b&c=d/é~" + uuid.uuid4().hex
    code, _ = code_for(agent, base, audience, app, user, state=state)
    assert code
    # Already signed in: the second app request is answered at once, state included.
    _, challenge = pkce()
    again = agent.get(authorize_url(base, app, REDIRECT, audience=audience, challenge=challenge, state=state + "2"))
    assert again.status == 302 and query_of(again.location)["state"] == state + "2"


def test_an_unknown_client_or_wrong_aud_is_refused_without_redirect_or_with_an_error(base, audience, pg_url, agent):
    app = add_app(pg_url, REDIRECT)
    _, challenge = pkce()
    unknown = agent.get(authorize_url(base, app, REDIRECT, audience=audience, challenge=challenge)
                        .replace(app.record.client_id, "nobody-registered"))
    assert unknown.status == 400 and not unknown.location
    wrong_aud = agent.get(authorize_url(base, app, REDIRECT, audience="https://elsewhere.example/fhir",
                                        challenge=challenge))
    assert query_of(wrong_aud.location)["error"] == "invalid_request"


def test_scopes_are_cut_to_the_role(base, audience, pg_url, agent):
    operator, app = add_user(pg_url, role="operator"), add_app(pg_url, REDIRECT)
    code, verifier = code_for(agent, base, audience, app, operator, scope="openid user/*.cruds launch/patient")
    granted = exchange(base, app, code, verifier).json()["scope"].split()
    assert "user/Patient.rus" in granted and "user/Task.rus" in granted
    assert "user/*.cruds" not in granted and "launch/patient" not in granted


# --- refresh tokens -----------------------------------------------------------------------------------

def test_refresh_tokens_rotate_and_reuse_revokes_the_family(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    code, verifier = code_for(agent, base, audience, app, user)
    first = exchange(base, app, code, verifier).json()
    second = refresh(base, app, first["refresh_token"])
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"] and "id_token" not in rotated
    assert fhir_status(base, rotated["access_token"]) == 200
    reused = refresh(base, app, first["refresh_token"])  # a leaked, already used token comes back
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert refresh(base, app, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    deadline = time.monotonic() + 10
    while fhir_status(base, rotated["access_token"]) != 401 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fhir_status(base, rotated["access_token"]) == 401


def test_a_refresh_token_can_be_revoked(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    code, verifier = code_for(agent, base, audience, app, user)
    tokens = exchange(base, app, code, verifier).json()
    revoked = httpx.post(f"{base}/auth/revoke", data={"token": tokens["refresh_token"],
                                                      "token_type_hint": "refresh_token",
                                                      "client_id": app.record.client_id})
    assert revoked.status_code == 200
    assert refresh(base, app, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_a_disabled_user_cannot_refresh(base, audience, pg_url, agent):
    import psycopg

    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    code, verifier = code_for(agent, base, audience, app, user)
    tokens = exchange(base, app, code, verifier).json()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE hub_user SET status = 'disabled' WHERE user_id = %s", (user.user_id,))
    assert refresh(base, app, tokens["refresh_token"]).json()["error"] == "invalid_grant"


# --- signing in ---------------------------------------------------------------------------------------

def test_lockout_after_repeated_failures(base, audience, pg_url, agent, hub_api):
    import psycopg

    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    _, challenge = pkce()
    url = authorize_url(base, app, REDIRECT, audience=audience, challenge=challenge)
    limit = hub_api.settings.signin_max_failures
    for _ in range(limit):
        wrong = sign_in(agent, url, user.username, password="not the password at all")
        assert wrong.status == 401 and "not right, or the account is locked" in wrong.text
    right = sign_in(agent, url, user.username)
    assert right.status == 401  # locked: even the right password is refused, with the same words
    assert "not right, or the account is locked" in right.text
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the lock's time runs out
        conn.execute("UPDATE hub_user SET locked_until = now() - interval '1 second' WHERE user_id = %s",
                     (user.user_id,))
    assert sign_in(agent, url, user.username).status == 302


def test_unknown_user_and_wrong_password_read_the_same(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    _, challenge = pkce()
    url = authorize_url(base, app, REDIRECT, audience=audience, challenge=challenge)
    wrong = sign_in(agent, url, user.username, password="wrong password here")
    unknown = sign_in(agent, url, "nobody-" + uuid.uuid4().hex, password="wrong password here")
    pick = lambda text: text.split('role="alert"')[1].split("</div>")[0]  # noqa: E731
    assert wrong.status == unknown.status == 401 and pick(wrong.text) == pick(unknown.text)


def test_totp_second_factor(base, audience, pg_url, agent, signing_keys):
    from hub.auth.sealing import Sealer

    secret = pyotp.random_base32()
    user = add_user(pg_url, totp_secret=secret, sealer=Sealer(signing_keys.signing))
    app = add_app(pg_url, REDIRECT)
    assert secret not in (user.totp_secret or "")  # kept sealed
    _, challenge = pkce()
    url = authorize_url(base, app, REDIRECT, audience=audience, challenge=challenge)
    assert sign_in(agent, url, user.username).status == 401  # password alone
    assert sign_in(agent, url, user.username, code="000000" if pyotp.TOTP(secret).now() != "000000"
                   else "111111").status == 401
    assert sign_in(agent, url, user.username, code=pyotp.TOTP(secret).now()).status == 302


def test_sign_in_form_without_its_csrf_token_is_refused(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    _, challenge = pkce()
    page = agent.get(authorize_url(base, app, REDIRECT, audience=audience, challenge=challenge))
    action, csrf = form_of(page.text)
    forged = agent.post(action, data={"csrf_token": "forged", "username": user.username, "password": PASSWORD})
    assert forged.status == 403 and not forged.location
    other = Agent(base)  # another browser: its own cookie, not this page's token
    try:
        assert other.post(action, data={"csrf_token": csrf, "username": user.username,
                                        "password": PASSWORD}).status == 403
    finally:
        other.close()


def test_session_cookies_are_secure_httponly_samesite_and_new_at_sign_in(base, audience, pg_url, agent):
    user, app = add_user(pg_url), add_app(pg_url, REDIRECT)
    agent.cookies["hub_signin"] = "planted-by-an-attacker"
    code_for(agent, base, audience, app, user)
    headers = [h for h in agent.set_cookie_headers if h.startswith("hub_signin=") or h.startswith("hub_login=")]
    assert headers
    for header in headers:
        lower = header.lower()
        assert "secure" in lower and "httponly" in lower and "samesite=lax" in lower
    assert agent.cookies["hub_signin"] != "planted-by-an-attacker"


# --- client authentication findings -------------------------------------------------------------------

def test_unknown_client_and_wrong_secret_answer_alike(base, pg_url):
    app = add_app(pg_url, REDIRECT, public=False)
    form = {"grant_type": "client_credentials"}
    wrong = httpx.post(f"{base}/auth/token", data=form, auth=(app.record.client_id, "not-the-secret"))
    unknown = httpx.post(f"{base}/auth/token", data=form, auth=("no-such-client-" + uuid.uuid4().hex, "x"))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "invalid_client",
                                              "error_description": "client authentication failed"}


def test_backend_client_gets_the_supported_part_of_a_mixed_scope_request(base, pg_url):
    from hub.auth.registry import register
    from tests.integration.signin import run

    new = register(name="backend", partner_class="nhs", organisation="RX1", scopes="system/Patient.rs",
                   client_id=f"backend-{uuid.uuid4().hex[:8]}")

    async def save():
        from psycopg import AsyncConnection

        from hub.store.clients import insert_client
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await insert_client(conn, new.record)

    run(save())
    answer = httpx.post(f"{base}/auth/token", auth=(new.record.client_id, new.secret), data={
        "grant_type": "client_credentials", "scope": "launch/patient openid system/Patient.rs user/*.*"})
    assert answer.status_code == 200 and answer.json()["scope"] == "system/Patient.rs"


def test_a_public_app_cannot_use_client_credentials(base, pg_url):
    app = add_app(pg_url, REDIRECT)
    answer = httpx.post(f"{base}/auth/token", data={"grant_type": "client_credentials",
                                                    "client_id": app.record.client_id})
    assert answer.status_code in (400, 401) and answer.json()["error"] in ("invalid_client", "unauthorized_client")


def test_redirect_host_must_be_https_or_loopback():
    from hub.auth.registry import RegistrationError, register

    with pytest.raises(RegistrationError):
        register(name="x", partner_class="nhs", organisation="RX1", scopes="user/*.rs",
                 redirect_uris=("http://app.example.org/cb",), public=True)
    assert register(name="x", partner_class="nhs", organisation="RX1", scopes="openid user/*.rs",
                    redirect_uris=("https://app.example.org/cb",), public=True).record.auth_method == "none"
