"""`POST /handover` of the MOD connector over a real socket (HTTP and HTTPS), publishing to the
real Kafka-protocol broker: 202 with the id of an envelope Kafka holds, and 400, 401, 403, 413,
415 and 422 (each with an OperationOutcome) for what it refuses, publishing nothing then. The
token keys come from a JWKS URL fetched at start, as in production."""
# ruff: noqa: F811 - the broker fixtures are imported from tests/pipeline/conftest.py
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import threading
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.auth.tokens import (
    TokenRequest,
    generate_signing_key,
    issue_access_token,
    public_jwks,
)
from hub.bus.envelope import from_record
from hub.bus.kafka import BusSettings, make_reader
from hub.bus.topics import Topics
from hub.cli.mod_handover import start_mod
from hub.config import Settings
from tests.integration.conftest import free_port
from tests.pipeline.conftest import IPC_HUB, bus, kafka, wait_for  # noqa: F401 (fixtures)

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "mod" / "samples"
ISSUER, AUDIENCE = "https://hub.test", "https://hub.test/fhir"
KEY = generate_signing_key()
MAX_BODY = 64 * 1024


def token(partner_class: str = "defence", key=KEY) -> str:
    request = TokenRequest(client_id=f"mod-{partner_class}", organisation="D1A",
                           organisation_system="https://fhir.nhs.uk/Id/ods-organization-code",
                           partner_class=partner_class, scopes=("system/*.c",))
    return issue_access_token(key, request, issuer=ISSUER, audience=AUDIENCE, lifetime_s=300)[0]


@pytest.fixture(scope="module")
def jwks_url():
    body = json.dumps(public_jwks([KEY])).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


class Connector:
    """The connector as `ipc-hub up` runs it (`start_mod`: its own thread and event loop)."""

    def __init__(self, settings: Settings) -> None:
        self.port = settings.mod_port
        self.stack = ExitStack()
        start_mod(settings, settings.kafka_bootstrap, self.stack)

    def close(self) -> None:
        self.stack.close()


def settings_for(bus_settings: BusSettings, jwks_url: str, **extra) -> Settings:
    return Settings(mod_host="127.0.0.1", mod_port=free_port(), auth_jwks_url=jwks_url, auth_issuer=ISSUER,
                    auth_audience=AUDIENCE, mod_max_body_bytes=MAX_BODY, kafka_bootstrap=bus_settings.bootstrap,
                    topic_prefix=bus_settings.topic_prefix, topic_partitions=bus_settings.partitions, **extra)


@pytest.fixture()
def connector(bus, jwks_url):
    running = Connector(settings_for(bus, jwks_url))
    yield running
    running.close()


def inbound(bus_settings: BusSettings, wanted: int, timeout: float = 20.0) -> list:
    """The envelopes on the inbound topic, read until `wanted` have arrived."""
    reader = make_reader(bus_settings, "test-reader")
    topic = Topics(bus_settings.topic_prefix).inbound
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(bus_settings.partitions)])
    found = []

    def more():
        found.extend(from_record(r.value(), r.headers()) for r in reader.consume(500, 0.2) if r.error() is None)
        return len(found) >= wanted

    try:
        wait_for(more, timeout, f"{wanted} envelopes on {topic}")
    finally:
        reader.close()
    return found


def post(url: str, body: bytes, *, auth: str | None = None, content_type: str = "application/json", **kw):
    headers = {"Content-Type": content_type}
    if auth is not None:
        headers["Authorization"] = f"Bearer {auth}"
    return httpx.post(f"{url}/handover", content=body, headers=headers, timeout=30, **kw)


def test_accepted_handover_is_in_kafka_before_202(connector, bus):
    body = (SAMPLES / "handover-full.json").read_bytes()
    r = post(f"http://127.0.0.1:{connector.port}", body, auth=token())
    assert r.status_code == 202, r.text
    envelope_id = r.json()["envelopeId"]
    envelope = inbound(bus, 1)[0]
    assert envelope.id == envelope_id
    assert (envelope.source, envelope.kind, envelope.person_key) == ("mod-handover", "mod-handover", "nhs:9994500007")
    assert envelope.payload == body and envelope.correlation_id == "HO-2026-000417"


def _outcome(r: httpx.Response) -> list[dict]:
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"]


def test_refusals_each_get_their_status_and_publish_nothing(connector, bus):
    url = f"http://127.0.0.1:{connector.port}"
    good = (SAMPLES / "handover-minimal.json").read_bytes()

    r = post(url, good)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert _outcome(r)[0]["code"] == "login"
    assert post(url, good, auth=token(key=generate_signing_key())).status_code == 401  # another issuer's key

    r = post(url, good, auth=token("charity"))
    assert r.status_code == 403 and _outcome(r)[0]["code"] == "forbidden"

    for content_type in ("text/plain", "application/xml", "application/json; charset=latin-1"):
        r = post(url, good, auth=token(), content_type=content_type)
        assert r.status_code == 415, content_type
        assert _outcome(r)[0]["code"] == "not-supported"

    r = post(url, b" " * (MAX_BODY + 1), auth=token())
    assert r.status_code == 413 and _outcome(r)[0]["code"] == "too-long"

    def chunks():
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    r = httpx.post(f"{url}/handover", content=chunks(), timeout=30,  # no Content-Length: counted as it arrives
                   headers={"Content-Type": "application/json", "Authorization": f"Bearer {token()}"})
    assert r.status_code == 413

    r = post(url, (SAMPLES / "bad" / "latin1.json").read_bytes(), auth=token())
    assert r.status_code == 400 and "not UTF-8" in _outcome(r)[0]["diagnostics"]
    r = post(url, (SAMPLES / "bad" / "truncated.json").read_bytes(), auth=token())
    assert r.status_code == 400 and _outcome(r)[0]["code"] == "structure"

    r = post(url, (SAMPLES / "bad" / "schema-violations.json").read_bytes(), auth=token())
    assert r.status_code == 422
    issues = _outcome(r)
    assert [(i["expression"], i["location"]) for i in issues] == [
        (["/extra"], ["/extra"]), (["/person/serviceNumber"], ["/person/serviceNumber"]),
        (["/service/branch"], ["/service/branch"])]
    r = post(url, (SAMPLES / "bad" / "snomed-check-digit.json").read_bytes(), auth=token())
    assert r.status_code == 422
    assert [(i["code"], i["expression"]) for i in _outcome(r)] == [("code-invalid", ["/conditions/1/snomedCode"])]

    # Only the good document sent after all the refusals reaches Kafka.
    r = post(url, good, auth=token())
    assert r.status_code == 202
    envelopes = inbound(bus, 1)
    assert [e.id for e in envelopes] == [r.json()["envelopeId"]]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_when_tls_is_configured(bus, jwks_url, tmp_path):
    cert, key = _self_signed(tmp_path)
    running = Connector(settings_for(bus, jwks_url, mod_tls_cert=cert, mod_tls_key=key))
    try:
        r = post(f"https://127.0.0.1:{running.port}", (SAMPLES / "handover-minimal.json").read_bytes(),
                 auth=token(), verify=ssl.create_default_context(cafile=str(cert)))
        assert r.status_code == 202, r.text
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken
            post(f"http://127.0.0.1:{running.port}", b"{}", auth=token())
    finally:
        running.close()
    assert inbound(bus, 1)[0].id == r.json()["envelopeId"]


@pytest.mark.parametrize(("env", "message"), [
    ({"HUB_MOD_TLS_CERT": "/nonexistent/cert.pem"}, "set both HUB_MOD_TLS_CERT and HUB_MOD_TLS_KEY"),
    ({"HUB_AUTH_JWKS_URL": "http://127.0.0.1:{port}/.well-known/jwks.json"}, "cannot read the token keys"),
])
def test_cli_refuses_a_bad_configuration_before_starting_anything(env, message, tmp_path):
    values = {k: v.format(port=free_port()) for k, v in env.items()}
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    result = subprocess.run([IPC_HUB, "connector", "mod"], capture_output=True, text=True, timeout=60, check=False,
                            env={**base, "HUB_MOD_PORT": str(free_port()), "HUB_DATA_DIR": str(tmp_path), **values})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
