"""The watched drop folder: councils (or their transfer service) put extract files in a folder
and the hub picks them up.

An uploader writes each file under a temporary name (anything not ending `.csv`, e.g.
`people.csv.part`) and renames it when complete; the watcher only takes `*.csv`. It claims the
files present in one scan by renaming them into `processing/` (atomic: two watchers never
take the same file), imports them as one extract (people, carers, events), then moves each to
`processed/` (imported, possibly with an error file for its bad rows) or `failed/` (refused,
duplicate, or the broker did not take it) with a `.reason.txt`. Files found in `processing/`
at start were claimed by a watcher that stopped mid-import: they are imported again (a second
publication changes nothing in the record)."""
from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from connectors.la.extract import ERRORS_SUFFIX, FileReport, Importer

log = logging.getLogger("hub.la")


class DropFolder:
    def __init__(self, folder: Path, importer: Importer) -> None:
        self.folder = folder
        self.importer = importer
        self.processing = folder / "processing"
        self.processed = folder / "processed"
        self.failed = folder / "failed"
        for sub in (folder, self.processing, self.processed, self.failed):
            sub.mkdir(parents=True, exist_ok=True)

    def claim(self) -> list[Path]:
        """Move the complete files now in the folder into `processing/` and return them."""
        claimed = []
        for path in sorted(self.folder.glob("*.csv")):
            if path.name.endswith(ERRORS_SUFFIX) or not path.is_file():
                continue
            target = self.processing / path.name
            if target.exists():
                continue  # the same name is still being imported; take it next time
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another watcher took it
            claimed.append(target)
        return claimed

    def scan(self) -> list[FileReport]:
        """One pick-up: what was left in `processing/` and what is new, imported as one extract."""
        left = sorted(p for p in self.processing.glob("*.csv") if not p.name.endswith(ERRORS_SUFFIX))
        files = left + [p for p in self.claim() if p not in left]
        if not files:
            return []
        reports = self.importer.import_extract(files)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        for report in reports:
            self._file_away(report, stamp)
        return reports

    def _file_away(self, report: FileReport, stamp: str) -> None:
        folder = self.processed if report.ok else self.failed
        name = f"{stamp}-{report.path.name}"
        os.replace(report.path, folder / name)
        if report.errors_path is not None and report.errors_path.exists():
            moved = folder / (name + ERRORS_SUFFIX)
            os.replace(report.errors_path, moved)
            report.errors_path = moved
        if not report.ok:
            (folder / (name + ".reason.txt")).write_text(
                f"{report.status}: {report.reason}\n", encoding="utf-8")
        report.path = folder / name
        # The file's name is the council's and may name a person: the counts only.
        log.info("LA extract file %s: %d rows read, %d published in %d envelopes, %d rejected",
                 report.status, report.rows_read, report.rows_good, report.envelopes, report.rows_bad)

    def watch(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Scan until `stop` is set. A failing scan is logged and retried at the next tick
        (the files stay in `processing/`, so nothing is lost)."""
        while not stop.is_set():
            try:
                self.scan()
            except Exception:
                log.exception("LA drop folder scan failed; retrying")
            stop.wait(interval_s)
