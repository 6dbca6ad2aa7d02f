"""`ipc-hub` as an operator runs it: one command starts everything on the embedded default,
SIGTERM stops everything, a restart keeps the data, a busy port is one clear line."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.factories import patient
from tests.integration.conftest import free_port

IPC_HUB = str(Path(sys.executable).with_name("ipc-hub"))


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k == "HUB_ID_KEY_FILE"}
    env.update(overrides)
    return env


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (e.g. a data folder or a port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (entry / "status").read_text().splitlines()
                         if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if text in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found


class RunningHub:
    """`ipc-hub up` in its own process; ready when it prints its banner."""

    def __init__(self, data_dir: Path, http_port: int, kafka_port: int, mllp_port: int | None = None,
                 *, demo: bool = False, env: dict[str, str] | None = None) -> None:
        self.base = f"http://127.0.0.1:{http_port}"
        self.bootstrap = f"127.0.0.1:{kafka_port}"
        self.mllp_port = mllp_port or free_port()
        self.mod_port = free_port()
        self.process = subprocess.Popen(
            [IPC_HUB, "up"],
            env=_env(HUB_DATA_DIR=str(data_dir), HUB_HTTP_PORT=str(http_port),
                     HUB_EMBEDDED_KAFKA_PORT=str(kafka_port), HUB_MLLP_PORT=str(self.mllp_port),
                     HUB_MOD_PORT=str(self.mod_port), HUB_DEMO_COHORT=str(demo).lower(),
                     HUB_MOD_POLL_INTERVAL_S="0.2", HUB_LA_POLL_INTERVAL_S="0.2", HUB_LOG_LEVEL="warning",
                     **(env or {})),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        # Awaited, not slept: it returns at the banner. Generous, because a loaded machine can
        # take a minute to start nine children and an embedded PostgreSQL.
        if not self.ready.wait(150):
            # Stopped as an operator would (SIGTERM stops every child and the embedded database,
            # which a kill of `up` alone would leave running), then killed if that hangs.
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            raise AssertionError("ipc-hub up did not become ready:\n" + "".join(self.output))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            if "IPC Hub is ready" in line:
                self.ready.set()

    def bearer(self) -> dict[str, str]:
        """An Authorization header from the demonstration client the banner's curl line names."""
        found = re.search(r"curl -s -u (\S+):(\S+) -d grant_type=client_credentials", "".join(self.output))
        assert found, "the banner shows no way to get a token:\n" + "".join(self.output)
        r = httpx.post(f"{self.base}/auth/token", data={"grant_type": "client_credentials"}, auth=found.groups())
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(30)


def test_up_serves_stops_cleanly_and_keeps_data_across_restarts(tmp_path):
    data_dir = tmp_path / "hub-data"
    http_port, kafka_port = free_port(), free_port()
    hub = RunningHub(data_dir, http_port, kafka_port)
    banner = "".join(hub.output)
    for url in (f"{hub.base}/fhir", f"{hub.base}/fhir/metadata", f"{hub.base}/docs"):
        assert url in banner
    assert httpx.get(f"{hub.base}/fhir/metadata").status_code == 200
    with socket.create_connection(("127.0.0.1", kafka_port), timeout=2):
        pass  # the embedded broker is listening
    assert httpx.get(f"{hub.base}/fhir/Patient").status_code == 401  # the record needs a token
    auth = hub.bearer()
    created = httpx.post(f"{hub.base}/fhir/Patient", json=patient(),
                         headers={"Content-Type": "application/fhir+json", **auth}).json()

    assert hub.stop() == 0
    pgdata = str((data_dir / "postgres").resolve())
    assert _processes_mentioning(pgdata) == []
    assert _processes_mentioning(f"127.0.0.1:{kafka_port}") == []

    again = RunningHub(data_dir, http_port, kafka_port)
    try:
        # The signing key generated into the data folder is reused: the first run's token still works.
        got = httpx.get(f"{again.base}/fhir/Patient/{created['id']}", headers=auth)
        assert got.status_code == 200
        assert got.json()["identifier"] == created["identifier"]
    finally:
        assert again.stop(signal.SIGINT) == 0  # Ctrl-C stops it as cleanly as SIGTERM
    assert _processes_mentioning(pgdata) == []
    assert _processes_mentioning(f"127.0.0.1:{kafka_port}") == []


@pytest.mark.parametrize("command", ["api", "up"])
def test_busy_port_is_one_line_naming_the_variable(tmp_path, command):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [IPC_HUB, command],
            env=_env(HUB_DATA_DIR=str(tmp_path), HUB_HTTP_PORT=str(port),
                     HUB_DATABASE_URL="postgresql://unused@127.0.0.1:1/none"),
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(port) in lines[0] and "HUB_HTTP_PORT" in lines[0]


@pytest.mark.parametrize("command", [[], ["up"], ["api"], ["migrate"], ["connector"]])
def test_help_explains_each_command(command):
    result = subprocess.run([IPC_HUB, *command, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "usage: ipc-hub" in result.stdout
    assert len(result.stdout.split()) > 20


def test_migrate_is_repeatable(pg_url):
    env = _env(HUB_DATABASE_URL=pg_url)
    first = subprocess.run([IPC_HUB, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0
    assert "schema is up to date" in first.stdout  # the session fixture migrated already
