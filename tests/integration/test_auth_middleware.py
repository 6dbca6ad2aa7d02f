"""The security middleware over real HTTP: every way a bearer token is refused (401 as an
OperationOutcome with a Bearer challenge), the open endpoints, the per-client rate limit, the
security headers and the request size limit."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from hub.api.security import SecurityMiddleware
from hub.auth.keys import SigningKeys
from hub.auth.runtime import auth_runtime
from hub.auth.tokens import generate_signing_key
from hub.config import Settings
from tests.integration.conftest import MAX_BODY, bearer, mint_token


def refused(response: httpx.Response, words: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer realm="ipc-hub"')
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "login"
    assert words in outcome["issue"][0]["diagnostics"]


def test_no_token_is_401_with_a_challenge(hub_url):
    r = httpx.get(f"{hub_url}/fhir/Patient")
    refused(r, "needs an access token")
    assert "error=" not in r.headers["www-authenticate"]  # RFC 6750 §3.1: no error code without a token


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "token", "Bearer a.b.c", "Bearer not-a-jwt"])
def test_malformed_authorization_header(hub_url, header):
    r = httpx.get(f"{hub_url}/fhir/Patient", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["issue"][0]["code"] == "login"


def test_token_signed_by_another_key(hub_url, hub_api):
    stranger = SigningKeys(signing=generate_signing_key(kid=None), published=())
    token = mint_token(stranger, hub_api.settings)
    refused(httpx.get(f"{hub_url}/fhir/Patient", headers=bearer(token)), "not a valid token")


def test_token_with_a_known_kid_but_another_key(hub_url, hub_api, signing_keys):
    impostor = generate_signing_key(kid=signing_keys.signing.kid)
    token = mint_token(SigningKeys(signing=impostor, published=()), hub_api.settings)
    refused(httpx.get(f"{hub_url}/fhir/Patient", headers=bearer(token)), "not a valid token")


@pytest.mark.parametrize("other", [{"auth_issuer": "https://elsewhere.example"},
                                   {"auth_audience": "https://elsewhere.example/fhir"}])
def test_token_for_another_issuer_or_audience(hub_url, hub_api, signing_keys, other):
    settings = hub_api.settings.model_copy(update=other)
    token = mint_token(signing_keys, settings)
    refused(httpx.get(f"{hub_url}/fhir/Patient", headers=bearer(token)), "not issued for this hub")


def test_expired_token(hub_url, token_for):
    token = token_for(now=int(time.time()) - 3600, lifetime_s=300)
    refused(httpx.get(f"{hub_url}/fhir/Patient", headers=bearer(token)), "expired")


def test_tampered_claims_are_refused(hub_url, token_for):
    header, payload, signature = token_for(partner_class="charity").split(".")
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["ipc_partner_class"] = "nhs"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused(httpx.get(f"{hub_url}/fhir/Patient", headers=bearer(f"{header}.{forged}.{signature}")),
            "not a valid token")


@pytest.mark.parametrize("path", ["/fhir/metadata", "/.well-known/smart-configuration", "/.well-known/jwks.json",
                                  "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"])
def test_open_endpoints_need_no_token(hub_url, path):
    assert httpx.get(f"{hub_url}{path}").status_code == 200


@pytest.mark.parametrize("path", ["/fhir", "/fhir/Patient/x", "/fhir/metadata/", "/fhir/CarePlan/_history",
                                  "/fhir/Patient/$everything", "/nowhere"])
def test_everything_else_needs_a_token(hub_url, path):
    assert httpx.get(f"{hub_url}{path}").status_code == 401


def test_security_headers_on_every_response(hub_url, fhir):
    for response in (fhir.get("/Patient"), httpx.get(f"{hub_url}/fhir/Patient"), httpx.get(f"{hub_url}/healthz"),
                     fhir.get("/metadata")):
        h = response.headers
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        assert h["x-frame-options"] == "DENY"
        assert "default-src 'none'" in h["content-security-policy"]
        assert "strict-transport-security" not in h  # plain http here: HSTS only over https
    assert fhir.get("/Patient").headers["cache-control"] == "no-store"
    assert "script-src" in httpx.get(f"{hub_url}/docs").headers["content-security-policy"]


def test_body_over_the_limit_is_413_by_content_length(hub_url, admin_token):
    r = httpx.post(f"{hub_url}/fhir/Patient", content=b"{" + b" " * (MAX_BODY + 10) + b"}",
                   headers={"Content-Type": "application/fhir+json", **bearer(admin_token)})
    assert r.status_code == 413
    assert r.json()["issue"][0]["code"] == "too-long"


def test_chunked_body_over_the_limit_is_413(hub_url, admin_token):
    def chunks():
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    r = httpx.post(f"{hub_url}/fhir/Patient", content=chunks(),
                   headers={"Content-Type": "application/fhir+json", **bearer(admin_token)})
    assert r.status_code == 413


def test_oversized_token_request_is_413_before_authentication(hub_url):
    r = httpx.post(f"{hub_url}/auth/token", content=b"grant_type=client_credentials&x=" + b"a" * 100_000,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_rate_limit_answers_429_with_retry_after(start_api, token_for):
    # One token back every 100 s: however slow the machine, the bucket cannot refill mid-test.
    api = start_api(rate_limit_rps=0.01, rate_limit_burst=3)
    busy, calm = bearer(token_for(client_id="busy-client")), bearer(token_for(client_id="calm-client"))
    statuses = [httpx.get(f"{api.url}/fhir/Patient", headers=busy).status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3] == 429
    r = httpx.get(f"{api.url}/fhir/Patient", headers=busy)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["issue"][0]["code"] == "throttled"
    assert httpx.get(f"{api.url}/fhir/Patient", headers=calm).status_code == 200  # per client


def test_token_endpoint_is_rate_limited_per_address(start_api):
    api = start_api(rate_limit_rps=0.01, rate_limit_burst=2)
    statuses = [httpx.post(f"{api.url}/auth/token", data={"grant_type": "client_credentials"}).status_code
                for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_principal_is_in_the_request_state(pg_url, signing_key_file, signing_keys):
    """What downstream code reads: scope["state"]["principal"] (request.state.principal)."""
    settings = Settings(database_url=pg_url, auth_signing_key_file=signing_key_file, rate_limit_rps=0)
    seen = {}

    async def app(scope, receive, send):
        seen["principal"] = scope["state"].get("principal")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    secured = SecurityMiddleware(app, auth=auth_runtime(settings), max_body_bytes=1000)
    token = mint_token(signing_keys, settings, partner_class="charity", organisation="1234567",
                       scopes=["system/CarePlan.rs"], client_id="lead-charity")

    async def call() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=secured), base_url="http://hub") as client:
            return (await client.get("/fhir/CarePlan", headers=bearer(token))).status_code

    assert asyncio.run(call()) == 204
    principal = seen["principal"]
    assert principal.client_id == "lead-charity" and principal.partner_class == "charity"
    assert principal.organisation == "1234567" and principal.permits("CarePlan", "r")
    assert not principal.permits("CarePlan", "c")


def test_hsts_only_over_https(pg_url, signing_key_file):
    settings = Settings(database_url=pg_url, auth_signing_key_file=signing_key_file, rate_limit_rps=0)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"cache-control", b"max-age=60")]})
        await send({"type": "http.response.body", "body": b"{}"})

    secured = SecurityMiddleware(app, auth=auth_runtime(settings), max_body_bytes=1000)

    async def headers(base: str) -> httpx.Headers:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=secured), base_url=base) as client:
            return (await client.get("/fhir/metadata")).headers

    over_tls, plain = asyncio.run(headers("https://hub")), asyncio.run(headers("http://hub"))
    assert over_tls["strict-transport-security"].startswith("max-age=")
    assert "strict-transport-security" not in plain
    assert over_tls["cache-control"] == "no-store"  # a FHIR response is never cached, whatever the route said


def test_fixtures_mint_tokens_for_any_caller(fhir_as, token_for, signing_keys):
    """What the access and audit tests build on: `token_for` and `fhir_as` make tokens the API
    accepts, carrying exactly the partner class, organisation and scopes asked for."""
    from joserfc import jwt

    token = token_for(partner_class="charity", organisation="7654321", scopes=["system/Goal.rs"], client_id="c-x",
                      purpose_of_use="HOPERAT")
    claims = jwt.decode(token, signing_keys.signing).claims
    assert (claims["ipc_partner_class"], claims["ipc_org"], claims["scope"], claims["sub"], claims["ipc_purpose"]) == \
        ("charity", "7654321", "system/Goal.rs", "c-x", "HOPERAT")
    assert claims["ipc_org_system"].endswith("/Id/charity-number")
    client = fhir_as(partner_class="defence", scopes=["system/Patient.rs"])
    assert client.get("/Patient").status_code != 401
    assert client.headers["authorization"].startswith("Bearer ")
