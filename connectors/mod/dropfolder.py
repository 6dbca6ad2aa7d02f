"""The watched drop folder: handover documents left as files, taken by one connector each.

Layout under the drop folder: senders write `<name>.json` into it (as a dotfile or `*.tmp` first,
then renamed: those are never touched while being written); `working/` holds files a connector
has claimed; `processed/` what Kafka holds; `failed/` what was refused, each with
`<name>.reason.txt` saying why.

A file is claimed by renaming it into `working/` under a name carrying the host and process id:
the rename is atomic, so when two connectors (or two processes) race for one file exactly one
wins. A connector that dies mid-file leaves its claim in `working/`; any connector on that host
puts claims of dead processes back into the drop folder at start and on every scan, so the file
is taken again. Kafka may then hold the document twice, which changes nothing in the record
(deterministic ids; the recorder skips unchanged content)."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from connectors.mod.intake import Intake
from hub.fhir.errors import FhirError

log = logging.getLogger(__name__)

_SEP = "--"


def is_ready(name: str) -> bool:
    """A finished document: not hidden, not a temporary file still being written."""
    return not name.startswith(".") and not name.endswith((".tmp", ".part", ".reason.txt"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DropFolder:
    def __init__(self, root: Path, intake: Intake, *, max_bytes: int = 10 * 1024 * 1024,
                 host: str | None = None, pid: int | None = None) -> None:
        self.root = root
        self.intake = intake
        self.max_bytes = max_bytes
        self.working = root / "working"
        self.processed = root / "processed"
        self.failed = root / "failed"
        self.host = (host or socket.gethostname()).replace(_SEP, "-")
        self.pid = os.getpid() if pid is None else pid
        for folder in (root, self.working, self.processed, self.failed):
            folder.mkdir(parents=True, exist_ok=True)

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Scan until `stop` is set."""
        while not stop.is_set():
            await self.scan()
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass

    async def scan(self) -> int:
        """Take every ready file once; returns how many were taken."""
        self.recover()
        taken = 0
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.is_file() and is_ready(entry.name):
                claimed = self.claim(entry.name)
                if claimed is not None:
                    await self.process(claimed, entry.name)
                    taken += 1
        return taken

    def claim(self, name: str) -> Path | None:
        """Rename the file into working/; None when another connector was first."""
        target = self.working / f"{self.host}{_SEP}{self.pid}{_SEP}{name}"
        try:
            os.rename(self.root / name, target)
        except FileNotFoundError:
            return None
        return target

    def recover(self) -> None:
        """Put back the claims of dead processes on this host (a crash mid-file)."""
        for entry in os.scandir(self.working):
            host, _, rest = entry.name.partition(_SEP)
            pid, _, name = rest.partition(_SEP)
            if host == self.host and pid.isdigit() and name and not _alive(int(pid)) and int(pid) != self.pid:
                try:
                    os.rename(entry.path, self.root / name)
                    log.info("drop folder: a file claimed by a stopped process is taken again")
                except FileNotFoundError:
                    pass

    async def process(self, claimed: Path, name: str) -> None:
        try:
            if claimed.stat().st_size > self.max_bytes:
                raise FhirError("too-long", f"the handover is larger than {self.max_bytes} bytes", status=413)
            body = await asyncio.to_thread(claimed.read_bytes)
            envelope_id = await self.intake.accept(body)
        except FhirError as error:
            if error.status >= 500:  # not the document's fault: leave it for the next scan
                os.rename(claimed, self.root / name)
                log.warning("drop folder: a file is left to retry (%s)", error.issues[0].diagnostics)
                return
            self._fail(claimed, name, error)
            return
        target = self._free(self.processed, name)
        os.rename(claimed, target)
        log.info("drop folder: a handover was published", extra={"envelope_id": envelope_id})

    def _fail(self, claimed: Path, name: str, error: FhirError) -> None:
        target = self._free(self.failed, name)
        lines = [f"{issue.code}: {issue.diagnostics}" for issue in error.issues]
        reason = target.with_name(target.name + ".reason.txt")
        reason.write_text(f"refused (as HTTP {error.status} would be)\n" + "\n".join(lines) + "\n", encoding="utf-8")
        os.rename(claimed, target)
        log.info("drop folder: a file was refused (%d problems)", len(lines))

    @staticmethod
    def _free(folder: Path, name: str) -> Path:
        """`folder/name`, or `name.1`, `name.2`… when a file of that name is already there."""
        target, n = folder / name, 0
        while target.exists() or target.with_name(target.name + ".reason.txt").exists():
            n += 1
            target = folder / f"{name}.{n}"
        return target
