"""Which client a token request names, read before it is authenticated (to load that one record)."""
from __future__ import annotations

import base64
import json

from hub.auth.server import FormRequest, requested_client_id


def request(form=(), **headers) -> FormRequest:
    return FormRequest("POST", "https://hub.example/auth/token", list(form), headers)


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_from_basic_credentials_url_decoded():
    basic = base64.b64encode(b"lead%20charity:secret").decode()
    assert requested_client_id(request(authorization=f"Basic {basic}")) == "lead charity"


def test_from_a_client_assertion_subject():
    assertion = f"{b64({'alg': 'ES384'})}.{b64({'sub': 'la-1', 'iss': 'la-1'})}.sig"
    assert requested_client_id(request([("client_assertion", assertion)])) == "la-1"


def test_nothing_usable():
    assert requested_client_id(request()) is None
    assert requested_client_id(request(authorization="Basic !!!")) is None
    assert requested_client_id(request([("client_assertion", "not.a-jwt")])) is None
    assert requested_client_id(request([("client_assertion", f"x.{b64({'sub': 7})}.y")])) is None
    assert requested_client_id(request([("client_id", "c9")])) == "c9"
