"""Importing statement files onto the inbound topic: per file, the same steps as a council
extract (connectors/la): hash it (a duplicate upload is refused before anything is published),
read and check it as a stream, write each bad row to the error file beside it as it is met, and
publish the good lines, one envelope per line keyed by the person.

A line reference is a line's identity at its provider: sent twice in one file it is a duplicate
(the same row again) or a clash (another row under the same reference); either way the first is
published and each later one reported on its own line of the error file. Found in bounded
memory: the checked rows are spread over a few temporary bucket files by reference, and one
bucket is looked at a time. A reference sent again in a later file is the provider restating
the line: the same content changes nothing in the record, a corrected one is its next version."""
from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from connectors.la.extract import (
    ErrorFile,
    FileReport,
    Ledger,
    PublishError,
    Sink,
    csv_line,
    refused_as_duplicate,
)
from connectors.la.reader import FileReader, FileRefused, RowError
from connectors.statements.format import KINDS, LINES
from hub.bus.envelope import Envelope

CONTENT_TYPE = "text/csv; charset=utf-8"
_HEADER = ",".join(LINES.names)
_BUCKET_BYTES = 16 * 1024 * 1024
_MAX_BUCKETS = 128


@dataclass
class StatementImporter:
    sink: Sink
    ledger: Ledger
    work_dir: Path | None = None  # for the buckets; the system's temporary folder if None

    def import_extract(self, paths: Iterable[Path], *, force: bool = False) -> list[FileReport]:
        """Import statement files, each on its own (the name matches the council extracts', so
        connectors.la.DropFolder watches a folder of statements the same way)."""
        reports = [FileReport(Path(p)) for p in paths]
        for report in reports:
            self._import_file(report, force)
        return reports

    def _import_file(self, report: FileReport, force: bool) -> None:
        path = report.path
        errors = ErrorFile(path)
        try:
            if refused_as_duplicate(self.ledger, report, errors, force):
                return
            reader = FileReader(path, errors.add, KINDS)
            try:
                duplicates = self._publish(reader, report, errors)
                self.sink.flush()
            except FileRefused as refused:
                report.status, report.reason = "refused", refused.error.reason
                errors.add(refused.error)
                return
            except PublishError as exc:
                report.status, report.reason = "failed", str(exc)
                duplicates = 0
            report.kind = LINES.name
            report.rows_read, report.rows_good = reader.rows_read, reader.rows_good - duplicates
            report.rows_bad = report.rows_read - report.rows_good
            if report.ok:
                self.ledger.remember(report.sha256, report)
        finally:
            report.errors_path = errors.close()

    def _publish(self, reader: FileReader, report: FileReport, errors: ErrorFile) -> int:
        """Spread the checked rows over buckets by line reference, then publish each bucket's
        first row per reference; returns how many rows were duplicates or clashes."""
        count = min(_MAX_BUCKETS, reader.path.stat().st_size // _BUCKET_BYTES + 1)
        duplicates = 0
        with tempfile.TemporaryDirectory(prefix="stmt-buckets-", dir=self.work_dir) as folder, ExitStack() as files:
            buckets = [files.enter_context(open(Path(folder) / f"{i}.txt", "w+", encoding="utf-8", newline="\n"))
                       for i in range(count)]
            for row in reader.rows():
                key = f"{row.values['Provider_Code']}|{row.values['Line_Reference']}"
                bucket = buckets[zlib.crc32(key.encode()) % count]
                bucket.write(f"{key}\t{row.line}\t{row.values['NHS_Number']}\t{csv_line(row.values.values())}\n")
            for bucket in buckets:
                bucket.seek(0)
                seen: dict[str, tuple[int, str]] = {}
                for record in bucket:
                    key, line, nhs, text = record.rstrip("\n").split("\t", 3)
                    if key in seen:
                        first, first_text = seen[key]
                        duplicates += 1
                        reason = (f"duplicate line: the same as line {first}" if text == first_text else
                                  f"Line_Reference already used on line {first} of this file for another line; "
                                  "a correction goes in a later statement")
                        errors.add(RowError(reader.name, int(line), "Line_Reference", reason))
                        continue
                    seen[key] = (int(line), text)
                    self.sink.send(envelope_for(key.partition("|")[0], nhs, text, report.sha256, int(line)))
                    report.envelopes += 1
        return duplicates


def envelope_for(provider: str, nhs_number: str, text: str, sha256: str, line: int) -> Envelope:
    """One line as its envelope: CSV with the format's header; source `stmt-<Provider_Code>`,
    keyed by the person's NHS number (their lines stay in order)."""
    return Envelope(source=f"stmt-{provider}", kind=LINES.envelope_kind,
                    payload=f"{_HEADER}\n{text}\n".encode(), person_key=f"nhs:{nhs_number}",
                    content_type=CONTENT_TYPE, correlation_id=f"statement:{sha256[:16]}:{line}")
