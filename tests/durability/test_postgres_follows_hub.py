"""The embedded PostgreSQL stops when the hub that started it dies, even by kill -9 (which runs
none of the hub's own exit code): a hub process starts it exactly as `ipc-hub up` does
(hub.cli.common.database_url → EmbeddedPostgres.start), is killed with SIGKILL, and the
postmaster is awaited to exit (a pidfd: the kernel says when it is gone); the data folder then
starts again with what was committed."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from hub.runtime.embedded import EmbeddedPostgres, running_postgres_url
from tests.durability.hub_process import postmaster_pid

pytestmark = pytest.mark.integration

HUB = """
import sys, time
from contextlib import ExitStack
from pathlib import Path
from hub.cli.common import database_url
from hub.config import Settings
stack = ExitStack()
url = database_url(Settings(data_dir=Path(sys.argv[1])), stack)
import psycopg
with psycopg.connect(url, autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
    conn.execute("INSERT INTO kept VALUES (1)")
print(url, flush=True)
time.sleep(600)
"""


def _await_exit(pid: int, timeout_s: float) -> bool:
    """True once `pid` has exited (or is a zombie nobody reaps), waiting at most timeout_s."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if poller.poll(timeout_s * 1000):
            return True
    finally:
        os.close(fd)
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state in ("Z", "X")


def test_the_embedded_postgres_stops_when_its_hub_is_killed(tmp_path):
    data_dir = tmp_path / "hub-data"
    hub = subprocess.Popen([sys.executable, "-c", HUB, str(data_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert hub.stdout.readline().startswith("postgresql://")   # started, and a row committed
        postmaster = postmaster_pid(data_dir)
        assert postmaster and running_postgres_url(data_dir)
        hub.send_signal(signal.SIGKILL)
        hub.wait(30)
        assert _await_exit(postmaster, 60), "the embedded PostgreSQL outlived its hub"
        assert running_postgres_url(data_dir) is None
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
        left = postmaster_pid(data_dir)
        if left and running_postgres_url(data_dir):
            os.kill(left, signal.SIGKILL)
    # What was committed is there when the folder starts again, and a normal stop stops it.
    server = EmbeddedPostgres(data_dir)
    try:
        with psycopg.connect(server.start()) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)
        again = postmaster_pid(data_dir)
    finally:
        server.stop()
    assert _await_exit(again, 60) and running_postgres_url(data_dir) is None
