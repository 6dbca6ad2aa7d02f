"""Supervision for `ipc-hub up`: the pipeline workers and the connectors run as child processes,
as production runs them, so they neither share the API's interpreter nor die with each other.

Each child runs in its own session (a terminal's Ctrl-C reaches only `ipc-hub up`, which then
stops them in order) and gets SIGTERM from the kernel if `ipc-hub up` dies, even by kill -9. A
child that exits is restarted after a back-off (1 s doubling to 30 s, reset after a minute up)
and the log says so; a worker is also asked for its /readyz, so a stuck or backing-off worker
shows as not ready. A broker that dies (the embedded one) is restarted, the topics made again,
the bus journal republished (hub/bus/journal.py), and every child restarted, since its Kafka
clients belonged to the old broker."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hub.runtime.logs import allow_terms

log = logging.getLogger("hub.supervisor")

# A worker's exit code when the dead-letter limit stopped it (hub.bus.worker.DlqLimitExceeded):
# a bad deploy or a run of bad input, which an operator must look at. It is still restarted
# (with back-off), but the console and /readyz say why it stopped, every time.
EXIT_DLQ_LIMIT = 3
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
_PROCESS_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def die_with_parent() -> None:
    """Runs in a child before exec: its own session, and SIGTERM when the parent dies."""
    import ctypes

    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """One supervised process: `argv` with `env`; `health_port` if it answers /readyz."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_port: int = 0
    # A TCP port the child listens on when it is ready (a connector), probed instead of /readyz.
    listen_port: int = 0
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = BACKOFF_FIRST_S
    restart_at: float = 0.0
    ready: bool = False
    detail: str = "starting"
    _health_at: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        # A child's name is the code's own word (hub.cli.up: the workers and connectors it
        # supervises), never data: it becomes a term of the log rule (hub.runtime.logs) as the
        # child is made, so every line about the child names it.
        if not _PROCESS_NAME.fullmatch(self.name):
            raise ValueError("a supervised process is named by the code, in lower-case words joined by '-'")
        allow_terms([self.name])

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        self.started_at = time.monotonic()
        self.ready = self.health_port == 0 and self.listen_port == 0
        self.detail = "running" if self.ready else "starting"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, wait (a worker finishes and commits its batch), then SIGKILL."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killed", self.name, timeout_s)
                self.process.kill()
                self.process.wait()
        self.process = None
        self.ready = False
        self.detail = "stopped"

    def check_health(self) -> None:
        if not self.running() or time.monotonic() - self._health_at < (0.2 if not self.ready else 2):
            return
        self._health_at = time.monotonic()
        if self.listen_port:
            import socket

            try:
                with socket.create_connection(("127.0.0.1", self.listen_port), timeout=1):
                    self.ready = True
            except OSError:
                self.ready = False
            self.detail = "running" if self.ready else "not listening yet"
            return
        if self.health_port == 0:
            return
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1) as answer:
                self.ready = answer.status == 200
        except OSError:
            self.ready = False
        self.detail = "running" if self.ready else "not ready (starting, stuck or waiting for a dependency)"


class Supervisor:
    """Starts children, restarts them, reports their state, stops them in order."""

    def __init__(self, children: list[Child], *, broker_alive: Callable[[], bool] | None = None,
                 restart_broker: Callable[[], None] | None = None,
                 database_alive: Callable[[], bool] | None = None,
                 restart_database: Callable[[], None] | None = None) -> None:
        self.children = children
        self._broker_alive = broker_alive
        self._restart_broker = restart_broker
        self._database_alive = database_alive
        self._restart_database = restart_database
        self._database_backoff = BACKOFF_FIRST_S
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        for child in self.children:
            child.start()
            log.info("started %s (pid %d)", child.name, child.process.pid)
        self._thread.start()

    def status(self) -> dict[str, dict[str, object]]:
        """name → {ready, state, restarts}: for /readyz."""
        with self._lock:
            return {c.name: {"ready": c.running() and c.ready, "state": c.detail, "restarts": c.restarts}
                    for c in self.children}

    def wait_ready(self, timeout_s: float) -> bool:
        """True once every child is running and ready (False if the time runs out first)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(v["ready"] for v in self.status().values()):
                return True
            time.sleep(0.1)
        return False

    def metrics(self) -> list[bytes]:
        """Each ready worker's /metrics text, for the API's /metrics under `ipc-hub up`."""
        texts = []
        for child in self.children:
            if child.health_port and child.running():
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{child.health_port}/metrics", timeout=1) as r:
                        texts.append(r.read())
                except OSError:
                    continue
        return texts

    def stop(self, order: list[list[str]] | None = None) -> None:
        """Stop the children, group by group in `order` (names), the rest last."""
        self._stopping.set()
        self._thread.join(5)
        groups = order or []
        named = {n for g in groups for n in g}
        groups = [*groups, [c.name for c in self.children if c.name not in named]]
        for group in groups:
            members = [c for c in self.children if c.name in group]
            for child in members:
                if child.running():
                    child.process.terminate()
            for child in members:
                child.stop()

    def _watch(self) -> None:
        while not self._stopping.wait(0.25):
            with self._lock:
                if self._database_alive is not None and not self._database_alive():
                    self._recover_database()
                if self._broker_alive is not None and not self._broker_alive():
                    self._recover_broker()
                    continue
                for child in self.children:
                    self._look_after(child)

    def _look_after(self, child: Child) -> None:
        now = time.monotonic()
        if child.running():
            child.check_health()
            if now - child.started_at > HEALTHY_AFTER_S:
                child.backoff_s = BACKOFF_FIRST_S
            return
        if child.process is not None:  # it just exited
            code = child.process.returncode
            child.process = None
            child.ready = False
            child.restart_at = now + child.backoff_s
            if code == EXIT_DLQ_LIMIT:
                child.detail = ("stopped by the dead-letter limit (too many messages rejected in a row: "
                                "see its log and the dead-letter topic); restarting")
                log.error("%s stopped by the dead-letter limit: too many messages rejected in a row; nothing "
                          "was committed; restarting in %.0f s", child.name, child.backoff_s)
            else:
                child.detail = f"exited with code {code}; restarting"
                log.warning("%s exited with code %s; restarting in %.0f s", child.name, code, child.backoff_s)
            child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
            return
        if now >= child.restart_at and not self._stopping.is_set():
            child.restarts += 1
            child.start()
            log.info("restarted %s (pid %d, restart %d)", child.name, child.process.pid, child.restarts)

    def _recover_database(self) -> None:
        """The embedded PostgreSQL stopped: start it again (its data is crash-safe; the workers
        and connectors retry meanwhile, and refuse new messages rather than acknowledge them)."""
        log.warning("the embedded PostgreSQL stopped; restarting it")
        try:
            self._restart_database()
            self._database_backoff = BACKOFF_FIRST_S
            log.info("embedded PostgreSQL restarted")
        except Exception as exc:  # noqa: BLE001 - try again after a back-off
            log.warning("PostgreSQL did not restart (%s); trying again in %.0f s", type(exc).__name__,
                        self._database_backoff)
            self._stopping.wait(self._database_backoff)
            self._database_backoff = min(self._database_backoff * 2, BACKOFF_MAX_S)

    def _recover_broker(self) -> None:
        log.warning("the broker stopped; stopping the pipeline and connectors to restart it")
        for child in self.children:
            child.stop(10)
            child.detail = "waiting for the broker"
        delay = BACKOFF_FIRST_S
        while not self._stopping.is_set():
            try:
                self._restart_broker()
                break
            except Exception as exc:  # noqa: BLE001 - keep trying, with back-off, and say so
                log.warning("the broker did not restart (%s); trying again in %.0f s", type(exc).__name__, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        if self._stopping.is_set():
            return
        for child in self.children:
            child.restarts += 1
            child.start()
        log.info("broker restarted; pipeline and connectors started again")
