"""The authorisation server over real HTTP: client credentials with a secret and with a signed
assertion (SMART Backend Services), scopes, revocation, and the discovery documents."""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from psycopg import AsyncConnection

from hub.auth.registry import NewClient, register
from hub.store import clients as store

FORM = {"grant_type": "client_credentials"}


def add_client(pg_url: str, **fields) -> NewClient:
    fields.setdefault("name", "test client")
    fields.setdefault("partner_class", "charity")
    fields.setdefault("organisation", "1234567")
    fields.setdefault("scopes", "system/CarePlan.rus system/Goal.crus system/Patient.rs")
    fields.setdefault("client_id", f"t-{uuid.uuid4().hex[:10]}")
    new = register(**fields)

    async def insert() -> None:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await store.insert_client(conn, new.record)

    asyncio.run(insert())
    return new


def revoke_client(pg_url: str, client_id: str) -> None:
    async def revoke() -> None:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            assert await store.revoke_client(conn, client_id)

    asyncio.run(revoke())


def get_token(hub_url: str, client: NewClient, scope: str | None = None) -> httpx.Response:
    data = dict(FORM, **({"scope": scope} if scope else {}))
    return httpx.post(f"{hub_url}/auth/token", data=data, auth=(client.record.client_id, client.secret))


def wait_until(condition, timeout: float = 5.0) -> bool:
    """Poll a real condition until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_secret_client_gets_a_token_that_reads_the_record(hub_url, pg_url):
    client = add_client(pg_url, partner_class="charity", organisation="1234567")
    r = get_token(hub_url, client, "system/CarePlan.rs system/Patient.read")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"].split() == ["system/CarePlan.rs", "system/Patient.rs"]
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
    read = httpx.get(f"{hub_url}/fhir/Patient", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert read.status_code == 200
    claims = jwt.decode(body["access_token"], RSAKey.import_key(
        httpx.get(f"{hub_url}/.well-known/jwks.json").json()["keys"][0])).claims
    assert claims["ipc_partner_class"] == "charity" and claims["ipc_org"] == "1234567"
    assert claims["ipc_org_system"].endswith("/Id/charity-number")
    assert claims["iss"] == hub_url and claims["aud"] == f"{hub_url}/fhir"


def test_no_scope_requested_grants_everything_allowed(hub_url, pg_url):
    client = add_client(pg_url, scopes="system/CarePlan.rs system/Goal.write")
    assert get_token(hub_url, client).json()["scope"] == "system/CarePlan.rs system/Goal.cud"


def test_granted_scopes_are_the_intersection_with_what_is_allowed(hub_url, pg_url):
    client = add_client(pg_url, scopes="system/CarePlan.rs system/Goal.crus")
    r = get_token(hub_url, client, "system/*.cruds system/Observation.rs")
    assert r.status_code == 200
    assert r.json()["scope"] == "system/CarePlan.rs system/Goal.crus"


@pytest.mark.parametrize("scope", ["system/Observation.rs", "system/CarePlan.d"])
def test_scope_not_allowed_is_invalid_scope(hub_url, pg_url, scope):
    client = add_client(pg_url, scopes="system/CarePlan.rs")
    r = get_token(hub_url, client, scope)
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    assert "access_token" not in r.json()


@pytest.mark.parametrize("scope", ["patient/CarePlan.rs", "system/CarePlan.sr", "system/carePlan.rs", "openid"])
def test_malformed_scope_is_invalid_scope(hub_url, pg_url, scope):
    client = add_client(pg_url, scopes="system/*.cruds")
    r = get_token(hub_url, client, scope)
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


def test_wrong_secret_and_unknown_client_are_invalid_client(hub_url, pg_url):
    client = add_client(pg_url)
    wrong = httpx.post(f"{hub_url}/auth/token", data=FORM, auth=(client.record.client_id, client.secret + "x"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    unknown = httpx.post(f"{hub_url}/auth/token", data=FORM, auth=("nobody", "secret"))
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    anonymous = httpx.post(f"{hub_url}/auth/token", data=FORM)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"


def test_unsupported_grant_type(hub_url, pg_url):
    client = add_client(pg_url)
    r = httpx.post(f"{hub_url}/auth/token", data={"grant_type": "password", "username": "a", "password": "b"},
                   auth=(client.record.client_id, client.secret))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_token_request_must_be_a_form(hub_url, pg_url):
    client = add_client(pg_url)
    r = httpx.post(f"{hub_url}/auth/token", json=FORM, auth=(client.record.client_id, client.secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_revoked_client_cannot_get_tokens_and_its_live_tokens_die_at_once(hub_url, pg_url):
    client = add_client(pg_url)
    token = get_token(hub_url, client).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{hub_url}/fhir/CarePlan", headers=headers).status_code == 200
    revoke_client(pg_url, client.record.client_id)  # straight in the database, as the CLI does
    assert wait_until(lambda: httpx.get(f"{hub_url}/fhir/CarePlan", headers=headers).status_code == 401)
    refused = httpx.get(f"{hub_url}/fhir/CarePlan", headers=headers)
    assert refused.json()["issue"][0]["code"] == "login"
    assert get_token(hub_url, client).json()["error"] == "invalid_client"


def test_revocation_endpoint_kills_a_token_in_every_api_process(hub_url, pg_url, start_api):
    other = start_api()  # a second API process over the same database
    client = add_client(pg_url)
    token = get_token(hub_url, client).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{other.url}/fhir/CarePlan", headers=headers).status_code == 200
    r = httpx.post(f"{hub_url}/auth/revoke", data={"token": token, "token_type_hint": "access_token"},
                   auth=(client.record.client_id, client.secret))
    assert r.status_code == 200
    assert httpx.get(f"{hub_url}/fhir/CarePlan", headers=headers).status_code == 401  # this process: at once
    assert wait_until(lambda: httpx.get(f"{other.url}/fhir/CarePlan", headers=headers).status_code == 401)


def test_a_restarted_api_still_refuses_revoked_tokens(hub_url, pg_url, start_api):
    client = add_client(pg_url)
    token = get_token(hub_url, client).json()["access_token"]
    assert httpx.post(f"{hub_url}/auth/revoke", data={"token": token},
                      auth=(client.record.client_id, client.secret)).status_code == 200
    fresh = start_api()  # loads the deny set from the database at start
    assert httpx.get(f"{fresh.url}/fhir/CarePlan", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_client_cannot_revoke_another_clients_token(hub_url, pg_url):
    owner, other = add_client(pg_url), add_client(pg_url)
    token = get_token(hub_url, owner).json()["access_token"]
    r = httpx.post(f"{hub_url}/auth/revoke", data={"token": token}, auth=(other.record.client_id, other.secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert httpx.get(f"{hub_url}/fhir/CarePlan", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_revoking_an_unknown_token_is_accepted_and_harmless(hub_url, pg_url):
    client = add_client(pg_url)
    r = httpx.post(f"{hub_url}/auth/revoke", data={"token": "not-a-token"},
                   auth=(client.record.client_id, client.secret))
    assert r.status_code == 200


# --- private_key_jwt (SMART Backend Services) -----------------------------------------------------

def key_pair(kind: str = "EC", kid: str | None = None):
    kid = kid or uuid.uuid4().hex[:8]
    if kind == "EC":
        return ECKey.generate_key("P-384", parameters={"kid": kid}), "ES384"
    return RSAKey.generate_key(2048, parameters={"kid": kid}), "RS384"


def assertion(key, alg: str, client_id: str, aud: str, *, lifetime: int = 240, jti: str | None = None,
              issued: int | None = None) -> str:
    now = int(time.time()) if issued is None else issued
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + lifetime, "iat": now,
              "jti": jti or uuid.uuid4().hex}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def jwt_token(hub_url: str, signed: str, scope: str | None = "system/CarePlan.rs") -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_assertion": signed,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    if scope:
        data["scope"] = scope
    return httpx.post(f"{hub_url}/auth/token", data=data)


@pytest.fixture()
def jwt_client(hub_url, pg_url):
    key, alg = key_pair("EC")
    rsa, rsa_alg = key_pair("RSA")
    jwks = {"keys": [key.as_dict(private=False), rsa.as_dict(private=False)]}
    client = add_client(pg_url, jwks=jwks, partner_class="local-authority", organisation="E09000033")
    return client, {"EC": (key, alg), "RSA": (rsa, rsa_alg)}, f"{hub_url}/auth/token"


@pytest.mark.parametrize("kind", ["EC", "RSA"])
def test_private_key_jwt_end_to_end(hub_url, jwt_client, kind):
    client, keys, aud = jwt_client
    key, alg = keys[kind]
    r = jwt_token(hub_url, assertion(key, alg, client.record.client_id, aud))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/CarePlan.rs"
    token = r.json()["access_token"]
    assert httpx.get(f"{hub_url}/fhir/CarePlan", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_private_key_jwt_replayed_jti_is_refused(hub_url, jwt_client):
    client, keys, aud = jwt_client
    key, alg = keys["EC"]
    signed = assertion(key, alg, client.record.client_id, aud)
    assert jwt_token(hub_url, signed).status_code == 200
    again = jwt_token(hub_url, signed)
    assert again.status_code == 400 and again.json()["error"] == "invalid_client"
    assert "access_token" not in again.json()


def test_private_key_jwt_bad_assertions_are_invalid_client(hub_url, jwt_client):
    client, keys, aud = jwt_client
    cid = client.record.client_id
    key, alg = keys["EC"]
    stranger, _ = key_pair("EC", kid=key.kid)  # same kid, key the hub does not know
    bad = {
        "wrong key": assertion(stranger, alg, cid, aud),
        "expired": assertion(key, alg, cid, aud, issued=int(time.time()) - 900, lifetime=300),
        "lives too long": assertion(key, alg, cid, aud, lifetime=3600),
        "wrong aud": assertion(key, alg, cid, f"{aud}/other"),
        "alg none": _unsigned(cid, aud),
        "symmetric alg": _hs256(cid, aud),
    }
    for reason, signed in bad.items():
        r = jwt_token(hub_url, signed)
        assert r.status_code in (400, 401), reason
        assert r.json()["error"] == "invalid_client", (reason, r.text)
        assert "access_token" not in r.json(), reason


def test_private_key_jwt_client_cannot_use_a_secret_and_vice_versa(hub_url, pg_url, jwt_client):
    client, _, aud = jwt_client
    r = httpx.post(f"{hub_url}/auth/token", data=FORM, auth=(client.record.client_id, "anything"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    secret_client = add_client(pg_url)
    key, alg = key_pair("EC")
    r = jwt_token(hub_url, assertion(key, alg, secret_client.record.client_id, aud))
    assert r.json()["error"] == "invalid_client"


def _unsigned(client_id: str, aud: str) -> str:
    import base64
    import json

    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return part({"alg": "none", "typ": "JWT"}) + "." + part(
        {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 60, "jti": uuid.uuid4().hex}) + "."


def _hs256(client_id: str, aud: str) -> str:
    from joserfc.jwk import OctKey

    now = int(time.time())
    return jwt.encode({"alg": "HS256"}, {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 60,
                                         "jti": uuid.uuid4().hex}, OctKey.generate_key(256))


# --- discovery ------------------------------------------------------------------------------------

def test_smart_configuration_and_jwks(hub_url):
    smart = httpx.get(f"{hub_url}/.well-known/smart-configuration")
    assert smart.status_code == 200
    doc = smart.json()
    assert doc["token_endpoint"] == f"{hub_url}/auth/token"
    assert doc["revocation_endpoint"] == f"{hub_url}/auth/revoke"
    assert doc["jwks_uri"] == f"{hub_url}/.well-known/jwks.json"
    assert doc["grant_types_supported"] == ["client_credentials", "authorization_code", "refresh_token"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "private_key_jwt", "none"}
    assert {"RS384", "ES384"} <= set(doc["token_endpoint_auth_signing_alg_values_supported"])
    assert {"permission-v2", "client-confidential-symmetric",
            "client-confidential-asymmetric"} <= set(doc["capabilities"])
    assert "system/CarePlan.cruds" in doc["scopes_supported"]
    keys = httpx.get(f"{hub_url}/.well-known/jwks.json").json()["keys"]
    assert keys and all("d" not in k and "p" not in k for k in keys)
    assert keys[0]["alg"] == "RS256" and keys[0]["kid"]


def test_capability_statement_names_the_oauth_uris(hub_url):
    rest = httpx.get(f"{hub_url}/fhir/metadata", headers={"Accept": "application/fhir+json"}).json()["rest"][0]
    security = rest["security"]
    assert any(c.get("code") == "SMART-on-FHIR" for s in security["service"] for c in s["coding"])
    uris = next(e for e in security["extension"]
                if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
    values = {e["url"]: e["valueUri"] for e in uris["extension"]}
    assert values["token"] == f"{hub_url}/auth/token"
    assert values["revoke"] == f"{hub_url}/auth/revoke"


def test_revocations_still_arrive_after_the_listener_loses_its_connection(hub_url, pg_url, start_api):
    import psycopg

    from hub.auth.runtime import LISTENER_NAME

    api = start_api()
    client = add_client(pg_url)
    token = get_token(hub_url, client).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                              " WHERE application_name = %s", (LISTENER_NAME,)).fetchone()[0]
    assert killed >= 2  # the session's API and this one
    revoke_client(pg_url, client.record.client_id)  # while the listeners may still be reconnecting
    # The reconnect reloads what is revoked, so the notice lost meanwhile does not matter.
    assert wait_until(lambda: httpx.get(f"{api.url}/fhir/CarePlan", headers=headers).status_code == 401, 20)
    assert wait_until(lambda: httpx.get(f"{hub_url}/fhir/CarePlan", headers=headers).status_code == 401, 20)


def test_private_key_jwt_without_kid_is_refused_naming_the_kid(hub_url, jwt_client):
    """SMART Backend Services requires the assertion header to name its key: the refusal says
    that, rather than blaming a key that was never looked up."""
    client, keys, aud = jwt_client
    key, alg = keys["EC"]
    now = int(time.time())
    claims = {"iss": client.record.client_id, "sub": client.record.client_id, "aud": aud, "exp": now + 60,
              "iat": now, "jti": uuid.uuid4().hex}
    unnamed = jwt.encode({"alg": alg, "typ": "JWT"}, claims, key, algorithms=[alg])
    answer = jwt_token(hub_url, unnamed)
    assert answer.status_code in (400, 401) and answer.json()["error"] == "invalid_client"
    assert "kid" in answer.json()["error_description"]
    assert "not signed by a key" not in answer.json()["error_description"]


def test_registering_the_hubs_own_app_again_keeps_an_operators_revocation(pg_url):
    """The workspace registers its own app at every sign-in start (hub.web.signin): the upsert
    brings the name and redirect up to date, but an app an operator revoked stays revoked."""
    app = store.ClientRecord(client_id=f"own-{uuid.uuid4().hex[:8]}", name="own app", organisation="ipc-hub",
                             organisation_system="https://ipc-hub.example.org/fhir/Id/client-id",
                             partner_class="nhs", scopes=("user/Patient.rs",), auth_method="none",
                             redirect_uris=("http://hub.test/app/callback",))

    async def journey() -> tuple[str, str, tuple[str, ...]]:
        async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await store.save_app_client(conn, app)
            assert await store.revoke_client(conn, app.client_id)
            await store.save_app_client(conn, dataclasses.replace(
                app, name="own app, renamed", redirect_uris=("http://new.test/app/callback",)))
            again = await store.get_client(conn, app.client_id)
            return again.status, again.name, again.redirect_uris

    assert asyncio.run(journey()) == ("revoked", "own app, renamed", ("http://new.test/app/callback",))
