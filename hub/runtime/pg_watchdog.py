"""The embedded PostgreSQL's watchdog: stops the server when the hub process that started it is
gone, even by kill -9.

pg_ctl starts PostgreSQL as a daemon of its own, so a hub killed without running its exit code
(kill -9, the OOM killer, a test's timeout) used to leave the server running, holding the data
folder and its memory. The hub (hub.runtime.embedded) starts this script once the server
answers, with its standard input the read end of a pipe only the hub holds the write end of; the
kernel closes that end when the hub dies, however it dies, and the read here returns. Then the
postmaster the hub started — only if it is still that server, a `postgres -D <this folder>` with
the same pid — gets SIGINT, PostgreSQL's fast shutdown: what was committed is already in the
write-ahead log, and the next start finds a clean folder. A hub that stops normally stops the
server itself first and then lets go of the pipe; the watchdog finds nothing to stop.

Standard library only, run as a script (`python -I pg_watchdog.py <pgdata> <pid>`), so it
imports nothing of the hub and costs one small process."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def still_the_server(pid: int, pgdata: Path) -> bool:
    """Whether `pid` is a live postmaster of `pgdata` (not a zombie, not a reused pid)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X") or not args or not args[0].endswith(b"postgres") or b"-D" not in args:
        return False
    folder = args[args.index(b"-D") + 1] if args.index(b"-D") + 1 < len(args) else b""
    return Path(os.fsdecode(folder)).resolve() == pgdata


def main(argv: list[str]) -> int:
    pgdata, pid = Path(argv[1]).resolve(), int(argv[2])
    # A terminal's Ctrl-C is the hub's to handle (it stops the server in order); this process
    # has its own session, and ignores it should it arrive anyway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass   # nothing is ever written: the read ends when the hub is gone
    if still_the_server(pid, pgdata):
        os.kill(pid, signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
