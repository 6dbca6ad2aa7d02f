"""Access tokens and what checks them: the verifier, the deny set, key files, secrets, the rate
limiter. All in memory, with explicit clocks."""
from __future__ import annotations

import dataclasses
import json

import pytest

from hub.auth.keys import KeyFileError, parse_key_file
from hub.auth.principal import Principal
from hub.auth.ratelimit import RateLimiter, retry_after
from hub.auth.revocation import DenySet
from hub.auth.secrets import hash_secret, new_secret, verify_secret
from hub.auth.tokens import (
    TokenRequest,
    TokenVerifier,
    bearer_token,
    generate_signing_key,
    issue_access_token,
    public_jwks,
)
from hub.fhir.errors import FhirError

ISS, AUD = "https://hub.example", "https://hub.example/fhir"
KEY = generate_signing_key()
REQUEST = TokenRequest(client_id="c1", organisation="RX1", organisation_system="ods", partner_class="nhs",
                       scopes=("system/CarePlan.rs",))


def verifier(clock=lambda: 1_000_000.0, **kw) -> TokenVerifier:
    return TokenVerifier(public_jwks([KEY]), issuer=ISS, audience=AUD, clock=clock, **kw)


def token(now: int = 1_000_000, lifetime: int = 300, **kw) -> str:
    return issue_access_token(KEY, REQUEST, issuer=kw.get("iss", ISS), audience=kw.get("aud", AUD),
                              lifetime_s=lifetime, now=now)[0]


def test_a_valid_token_becomes_a_principal():
    p = verifier().verify(token())
    assert (p.client_id, p.organisation, p.partner_class) == ("c1", "RX1", "nhs")
    assert p.permits("CarePlan", "r") and not p.permits("CarePlan", "c") and not p.permits("Goal", "r")


@pytest.mark.parametrize(("made", "words"), [
    (lambda: token(now=1_000_000 - 1000), "expired"),
    (lambda: token(iss="https://other.example"), "not issued for this hub"),
    (lambda: token(aud="https://other.example/fhir"), "not issued for this hub"),
    (lambda: issue_access_token(generate_signing_key(KEY.kid), REQUEST, issuer=ISS, audience=AUD,
                                lifetime_s=300, now=1_000_000)[0], "not a valid token"),
    # Signed with the hub's key but with a scope the hub does not understand: 401, never a 500.
    (lambda: issue_access_token(KEY, dataclasses.replace(REQUEST, scopes=("system/CarePlan.rsu",)),
                                issuer=ISS, audience=AUD, lifetime_s=300, now=1_000_000)[0], "does not accept"),
])
def test_refusals(made, words):
    with pytest.raises(FhirError) as caught:
        verifier().verify(made())
    assert caught.value.status == 401 and words in str(caught.value)


def test_a_cached_token_still_expires():
    now = [1_000_000.0]
    check = verifier(clock=lambda: now[0])
    t = token(lifetime=60)
    check.verify(t)
    now[0] += 120
    with pytest.raises(FhirError, match="expired"):
        check.verify(t)


def test_deny_set_blocks_tokens_and_clients_and_applies_notices():
    deny = DenySet(clock=lambda: 0.0)
    p = Principal(client_id="c1", organisation="o", organisation_system="s", partner_class="nhs",
                  scopes=frozenset(), token_id="j1", expires_at=100)
    assert not deny.blocks(p)
    deny.apply("token j1 100")
    assert deny.blocks(p) and deny.token_revoked("j1")
    deny.replace([], [])
    deny.apply("client c1")
    assert deny.blocks(p)
    deny.apply("gibberish")
    deny.replace([("j2", 5)], [])
    assert not deny.blocks(p) and deny.token_revoked("j2")


@pytest.mark.parametrize("header", [None, "", "Basic x", "Bearer", "bearer   "])
def test_bearer_header_refusals(header):
    with pytest.raises(FhirError) as caught:
        bearer_token(header)
    assert caught.value.status == 401


def test_no_token_challenge_carries_no_error_code():
    with pytest.raises(FhirError) as caught:
        bearer_token(None)
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer realm="ipc-hub"'
    assert bearer_token("Bearer abc") == "abc"


def test_key_files_pem_jwk_and_jwks_with_rotation():
    pem = parse_key_file(KEY.as_pem(private=True))
    assert pem.signing.kid and pem.signing.is_private
    old = generate_signing_key()
    document = json.dumps({"keys": [KEY.as_dict(private=True), old.as_dict(private=False)]}).encode()
    keys = parse_key_file(document)
    assert keys.signing.kid == KEY.kid
    published = keys.jwks()["keys"]
    assert [k["kid"] for k in published] == [KEY.kid, old.kid]
    assert all("d" not in k for k in published)


@pytest.mark.parametrize("data", [b"{not json", json.dumps({"keys": [KEY.as_dict(private=False)]}).encode(),
                                  b"-----BEGIN NOTHING-----"])
def test_unusable_key_files_are_refused(data):
    with pytest.raises(KeyFileError):
        parse_key_file(data)


def test_secrets_are_hashed_and_checked():
    secret = new_secret()
    stored = hash_secret(secret)
    assert secret not in stored and stored.startswith("scrypt$")
    assert verify_secret(stored, secret)
    assert not verify_secret(stored, secret + "x")
    assert not verify_secret(stored, "")
    assert not verify_secret(None, secret)
    assert not verify_secret("md5$abc", secret)
    assert hash_secret(secret) != stored  # salted


def test_rate_limiter_bursts_then_holds_the_rate():
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == "1"
    assert limiter.take("b") == 0.0  # per client
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    assert not RateLimiter(0, 1).enabled


def test_tokens_signed_with_the_previous_key_still_verify_after_rotation():
    old, new = generate_signing_key(), generate_signing_key()
    rotated = parse_key_file(json.dumps({"keys": [new.as_dict(private=True), old.as_dict(private=False)]}).encode())
    check = TokenVerifier(rotated.jwks(), issuer=ISS, audience=AUD, clock=lambda: 1_000_000.0)
    from_old = issue_access_token(old, REQUEST, issuer=ISS, audience=AUD, lifetime_s=300, now=1_000_000)[0]
    from_new = issue_access_token(rotated.signing, REQUEST, issuer=ISS, audience=AUD, lifetime_s=300,
                                  now=1_000_000)[0]
    assert check.verify(from_old).client_id == check.verify(from_new).client_id == "c1"
    retired = TokenVerifier(public_jwks([new]), issuer=ISS, audience=AUD, clock=lambda: 1_000_000.0)
    with pytest.raises(FhirError):
        retired.verify(from_old)
