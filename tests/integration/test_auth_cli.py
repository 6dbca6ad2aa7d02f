"""`ipc-hub clients add|list|rotate|revoke` through the real command, against the test API."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.integration.test_auth_oauth import wait_until

IPC_HUB = str(Path(sys.executable).with_name("ipc-hub"))


def clients(pg_url: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k == "HUB_ID_KEY_FILE"}
    env["HUB_DATABASE_URL"] = pg_url
    done = subprocess.run([IPC_HUB, "clients", *args], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def credentials(output: str) -> tuple[str, str]:
    client_id = re.search(r"client_id:\s+(\S+)", output).group(1)
    secret = re.search(r"client_secret:\s+(\S+)", output).group(1)
    return client_id, secret


def listing(pg_url: str) -> dict[str, dict]:
    return {c["client_id"]: c for c in json.loads(clients(pg_url, "list", "--json").stdout)}


def token(hub_url: str, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(f"{hub_url}/auth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


def test_add_list_rotate_revoke(hub_url, pg_url):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    added = clients(pg_url, "add", "--partner-class", "charity", "--organisation", "1122334",
                    "--scopes", "system/CarePlan.rus system/Goal.crus", "--client-id", name)
    client_id, secret = credentials(added.stdout)
    assert client_id == name
    first = token(hub_url, client_id, secret)
    assert first.status_code == 200 and first.json()["scope"] == "system/CarePlan.rus system/Goal.crus"

    listed = clients(pg_url, "list").stdout
    assert name in listed and "charity" in listed and "client_secret_basic" in listed
    assert secret not in listed and "scrypt" not in listed
    as_json = listing(pg_url)
    assert as_json[name]["status"] == "active" and as_json[name]["rotated_at"] == "-"
    assert "secret_hash" not in as_json[name]

    rotated = clients(pg_url, "rotate", name)
    _, new_secret = credentials(rotated.stdout)
    assert new_secret != secret
    assert token(hub_url, client_id, secret).status_code == 401  # the old secret is gone
    assert token(hub_url, client_id, new_secret).status_code == 200
    assert listing(pg_url)[name]["rotated_at"] != "-"

    live = token(hub_url, client_id, new_secret).json()["access_token"]
    headers = {"Authorization": f"Bearer {live}"}
    assert httpx.get(f"{hub_url}/fhir/CarePlan", headers=headers).status_code == 200
    revoked = clients(pg_url, "revoke", name)
    assert "revoked" in revoked.stdout
    assert wait_until(lambda: httpx.get(f"{hub_url}/fhir/CarePlan", headers=headers).status_code == 401)
    assert token(hub_url, client_id, new_secret).status_code == 401
    assert listing(pg_url)[name]["status"] == "revoked"
    assert "no active client" in clients(pg_url, "revoke", name, ok=False).stderr


def test_add_with_a_jwks_then_rotate_keys(hub_url, pg_url, tmp_path):
    old, new = (ECKey.generate_key("P-384", parameters={"kid": kid}) for kid in ("k-old", "k-new"))
    old_file, new_file = tmp_path / "old.json", tmp_path / "new.json"
    old_file.write_text(json.dumps({"keys": [old.as_dict(private=False)]}))
    new_file.write_text(json.dumps({"keys": [new.as_dict(private=False)]}))
    name = f"cli-jwt-{uuid.uuid4().hex[:6]}"
    added = clients(pg_url, "add", "--partner-class", "local-authority", "--organisation", "E09000033",
                    "--scopes", "system/CarePlan.rs", "--client-id", name, "--jwks", str(old_file))
    assert "client_secret" not in added.stdout and "private_key_jwt" in added.stdout

    def get(key) -> httpx.Response:
        import time

        now = int(time.time())
        signed = jwt.encode({"alg": "ES384", "kid": key.kid}, {
            "iss": name, "sub": name, "aud": f"{hub_url}/auth/token", "exp": now + 120,
            "jti": uuid.uuid4().hex}, key, algorithms=["ES384"])
        return httpx.post(f"{hub_url}/auth/token", data={
            "grant_type": "client_credentials", "client_assertion": signed,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})

    assert get(old).status_code == 200
    clients(pg_url, "rotate", name, "--jwks", str(new_file))
    assert get(old).json()["error"] == "invalid_client"
    assert get(new).status_code == 200


def test_add_refuses_bad_input(pg_url, tmp_path):
    bad_scope = clients(pg_url, "add", "--partner-class", "nhs", "--organisation", "RX1", "--scopes",
                        "patient/*.read", ok=False)
    assert "system/" in bad_scope.stderr
    private = ECKey.generate_key("P-384", parameters={"kid": "k"})
    leaked = tmp_path / "private.json"
    leaked.write_text(json.dumps({"keys": [private.as_dict(private=True)]}))
    refused = clients(pg_url, "add", "--partner-class", "nhs", "--organisation", "RX1", "--scopes",
                      "system/*.rs", "--jwks", str(leaked), ok=False)
    assert "private key" in refused.stderr
    unknown_class = clients(pg_url, "add", "--partner-class", "pirate", "--organisation", "X", "--scopes",
                            "system/*.rs", ok=False)
    assert "invalid choice" in unknown_class.stderr


def test_clients_are_managed_beside_a_running_up(tmp_path):
    """On the embedded default the command reaches the database `ipc-hub up` runs, and leaves it
    running (it must not stop a server it did not start)."""
    from tests.integration.conftest import free_port
    from tests.integration.test_cli import RunningHub

    data_dir = tmp_path / "hub-data"
    hub = RunningHub(data_dir, free_port(), free_port())
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k == "HUB_ID_KEY_FILE"}
        env["HUB_DATA_DIR"] = str(data_dir)

        def run(*args: str) -> str:
            done = subprocess.run([IPC_HUB, "clients", *args], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        listed = run("list")
        assert all(demo in listed for demo in ("demo-nhs-trust", "demo-lead-charity", "demo-defence",
                                               "demo-local-authority", "demo-education"))
        client_id, secret = credentials(run("add", "--partner-class", "defence", "--organisation", "D1A",
                                            "--scopes", "system/Patient.rs", "--client-id", "beside-up"))
        assert httpx.get(f"{hub.base}/readyz").json()["status"] == "ready"
        live = token(hub.base, client_id, secret)
        assert live.status_code == 200
        headers = {"Authorization": f"Bearer {live.json()['access_token']}"}
        assert httpx.get(f"{hub.base}/fhir/Patient", headers=headers).status_code == 200
        run("revoke", client_id)
        assert wait_until(lambda: httpx.get(f"{hub.base}/fhir/Patient", headers=headers).status_code == 401)
    finally:
        assert hub.stop() == 0
