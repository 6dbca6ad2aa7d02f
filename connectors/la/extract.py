"""Importing one extract (its people, carers and events files) onto the inbound topic.

Per file: hash it (a duplicate upload is refused before anything is published), read and check
it as a stream, write each bad row to the error file beside it as it is met, publish the good
rows. Files are published people, then carers, then events, and every envelope is keyed by the
person, so the pipeline records a person before anything that refers to them.

People and carers travel one row per envelope. Events travel one envelope per person holding
all of that person's events in the file, because the budget allocation is a sum over the
person's services: the file is not sorted by person, so its checked rows are first spread over
a few temporary bucket files by person (bounded memory: one bucket is grouped at a time)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from connectors.la.format import EVENTS, KINDS, FileKind, HeaderError, kind_of_header
from connectors.la.reader import BOM, FileReader, FileRefused, RowError
from hub.bus.envelope import Envelope

CONTENT_TYPE = "text/csv; charset=utf-8"
ERRORS_SUFFIX = ".errors.csv"
_BUCKET_BYTES = 16 * 1024 * 1024
_MAX_BUCKETS = 128


class Sink(Protocol):
    """Where envelopes go: `send` may return before the broker has them (a bounded number
    wait); `flush` returns once every envelope sent is acknowledged, PublishError if one was not."""

    def send(self, envelope: Envelope) -> None: ...

    def flush(self) -> None: ...


class PublishError(Exception):
    """The broker did not take an envelope: the file is not done and may be imported again
    (what was published changes nothing when sent twice)."""


@dataclass
class FileReport:
    path: Path
    kind: str = ""
    status: str = "imported"  # imported | refused | duplicate | failed
    reason: str = ""
    rows_read: int = 0
    rows_good: int = 0
    rows_bad: int = 0
    envelopes: int = 0
    errors_path: Path | None = None
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "imported"

    def summary(self) -> str:
        text = (f"{self.path.name}: {self.status}" + (f" as {self.kind}" if self.kind else "")
                + f"; {self.rows_read} rows read, {self.rows_good} published in {self.envelopes} envelopes, "
                f"{self.rows_bad} rejected")
        if self.reason:
            text += f" ({self.reason})"
        if self.errors_path:
            text += f"; errors in {self.errors_path.name}"
        return text


@dataclass
class Ledger:
    """Which file contents have been imported (by SHA-256), so a second upload of the same
    extract is recognised and reported instead of silently published again."""
    folder: Path

    def _entry(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.json"

    def seen(self, sha256: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._entry(sha256).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def remember(self, sha256: str, report: FileReport) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = {"file": report.path.name, "kind": report.kind, "rows": report.rows_good,
                 "imported_at": datetime.now(UTC).isoformat(timespec="seconds")}
        temporary = self._entry(sha256).with_suffix(".tmp")
        temporary.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(temporary, self._entry(sha256))


class ErrorFile:
    """`<name>.errors.csv` beside the input, opened at the first error and written as errors
    come; a stale one from an earlier import is removed when this one found nothing wrong."""

    def __init__(self, source: Path) -> None:
        self.path = source.with_name(source.name + ERRORS_SUFFIX)
        self._out: IO[str] | None = None
        self._writer: Any = None
        self.count = 0

    def add(self, error: RowError) -> None:
        if self._out is None:
            self._out = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
            self._writer = csv.writer(self._out)
            self._writer.writerow(["file", "line", "column", "reason"])
        self._writer.writerow((error.file, error.line, error.column, error.reason))
        self.count += 1

    def close(self) -> Path | None:
        if self._out is None:
            self.path.unlink(missing_ok=True)
            return None
        self._out.close()
        return self.path


def refused_as_duplicate(ledger: Ledger, report: FileReport, errors: ErrorFile, force: bool) -> bool:
    """Hash the file into its report; a content imported before (and no `force`) is refused as a
    duplicate upload, said in the report and the error file, before anything is published."""
    report.sha256 = file_sha256(report.path)
    earlier = ledger.seen(report.sha256)
    if earlier is None or force:
        return False
    report.status = "duplicate"
    report.reason = (f"duplicate upload: the same content was imported as {earlier['file']} at "
                     f"{earlier['imported_at']}; nothing was published (import with --force to "
                     "send it again, which changes nothing already recorded)")
    errors.add(RowError(report.path.name, 0, "", report.reason))
    return True


@dataclass
class Importer:
    sink: Sink
    ledger: Ledger
    work_dir: Path | None = None  # for the event buckets; the system's temporary folder if None
    # The kinds of file an extract may hold, in publication order: a council's adult extract by
    # default; connectors/children gives its own (read, checked and published the same way).
    kinds: tuple[FileKind, ...] = KINDS

    def import_extract(self, paths: Iterable[Path], *, force: bool = False) -> list[FileReport]:
        """Import the files of one extract: people first, then carers, then events."""
        reports = [FileReport(Path(p)) for p in paths]
        ranked = []
        for report in reports:
            errors = ErrorFile(report.path)
            try:
                ranked.append((self.kinds.index(kind_of_file(report.path, self.kinds)), report))
            except FileRefused as refused:
                report.status, report.reason = "refused", refused.error.reason
                errors.add(refused.error)
            report.errors_path = errors.close()
        for _, report in sorted(ranked, key=lambda item: item[0]):
            self._import_file(report, force)
        return reports

    def _import_file(self, report: FileReport, force: bool) -> None:
        path = report.path
        errors = ErrorFile(path)
        try:
            if refused_as_duplicate(self.ledger, report, errors, force):
                return
            reader = FileReader(path, errors.add, self.kinds)
            try:
                if kind_of_file(path, self.kinds) is EVENTS:
                    self._publish_grouped(reader, report)
                else:
                    self._publish_rows(reader, report)
                self.sink.flush()
            except FileRefused as refused:
                report.status, report.reason = "refused", refused.error.reason
                errors.add(refused.error)
                return
            except PublishError as exc:
                report.status, report.reason = "failed", str(exc)
            report.kind = reader.kind.name if reader.kind else ""
            report.rows_read, report.rows_good = reader.rows_read, reader.rows_good
            report.rows_bad = reader.rows_read - reader.rows_good
            if report.ok:
                self.ledger.remember(report.sha256, report)
        finally:
            report.errors_path = errors.close()

    def _publish_rows(self, reader: FileReader, report: FileReport) -> None:
        for row in reader.rows():
            kind = reader.kind
            assert kind is not None
            self.sink.send(envelope_for(kind, [row.values], report.sha256, row.line))
            report.envelopes += 1

    def _publish_grouped(self, reader: FileReader, report: FileReport) -> None:
        """Events: spread the checked rows over bucket files by person, then one envelope per
        person (a person's rows all land in one bucket, in file order)."""
        count = min(_MAX_BUCKETS, reader.path.stat().st_size // _BUCKET_BYTES + 1)
        with tempfile.TemporaryDirectory(prefix="la-buckets-", dir=self.work_dir) as folder, ExitStack() as files:
            buckets = [files.enter_context(open(Path(folder) / f"{i}.txt", "w+", encoding="utf-8", newline="\n"))
                       for i in range(count)]
            for row in reader.rows():
                key = person_key(EVENTS, row.values)
                bucket = buckets[zlib.crc32(key.encode()) % count]
                bucket.write(f"{key}\t{row.line}\t{csv_line(row.values.values())}\n")
            for bucket in buckets:
                bucket.seek(0)
                for key, (line, texts) in _grouped(bucket).items():
                    values = dict(zip(EVENTS.names, next(csv.reader([texts[0]])), strict=True))
                    self.sink.send(_envelope(EVENTS, values, texts, report.sha256, line, key))
                    report.envelopes += 1


def kind_of_file(path: Path, kinds: tuple[FileKind, ...] = KINDS) -> FileKind:
    """The file's kind from its header alone (the rows are read later, in extract order)."""
    with open(path, "rb") as stream:
        first = stream.readline()
    first = first.removeprefix(BOM)
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused(RowError(path.name, 1, "", "the header is not UTF-8 (extracts must be UTF-8; "
                                   "a byte order mark is allowed)")) from None
    if not text.strip():
        raise FileRefused(RowError(path.name, 1, "", "the file is empty (no header line)"))
    try:
        return kind_of_header(next(csv.reader([text])), kinds)
    except HeaderError as exc:
        raise FileRefused(RowError(path.name, 1, "", str(exc))) from None
    except csv.Error as exc:
        raise FileRefused(RowError(path.name, 1, "", f"the header line is not CSV ({exc})")) from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def source_of(values: dict[str, str]) -> str:
    """The source system a row comes from: its local authority, by ONS code."""
    return f"la-{values['LA_Code']}"


def person_key(kind: FileKind, values: dict[str, str]) -> str:
    """The Kafka key: the person the row is about, as their council knows them."""
    return f"{source_of(values)}:{values[kind.person_column]}"


def envelope_for(kind: FileKind, rows: list[dict[str, str]], sha256: str, line: int) -> Envelope:
    return _envelope(kind, rows[0], [csv_line(r.values()) for r in rows], sha256, line, None)


def _envelope(kind: FileKind, values: dict[str, str], lines: list[str], sha256: str, line: int,
              key: str | None) -> Envelope:
    """The payload is CSV with the kind's header: the rows as the council sent them, checked."""
    payload = ",".join(kind.names) + "\n" + "\n".join(lines) + "\n"
    return Envelope(source=source_of(values), kind=kind.envelope_kind, payload=payload.encode("utf-8"),
                    person_key=key or person_key(kind, values), content_type=CONTENT_TYPE,
                    correlation_id=f"la-extract:{sha256[:16]}:{line}")


def csv_line(values: Iterable[str]) -> str:
    """One CSV line (values never hold line breaks: the format refuses them). Most rows need
    no quoting: one join tells, and only the others are quoted field by field."""
    values = tuple(values)
    text = ",".join(values)
    if '"' not in text and text.count(",") == len(values) - 1:
        return text
    out = []
    for value in values:
        if "," in value or '"' in value:
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return ",".join(out)


def _grouped(bucket: Iterable[str]) -> dict[str, tuple[int, list[str]]]:
    """Bucket records by person key: (first line number, the rows' CSV lines in file order)."""
    groups: dict[str, tuple[int, list[str]]] = {}
    for record in bucket:
        key, line, text = record.rstrip("\n").split("\t", 2)
        if key in groups:
            groups[key][1].append(text)
        else:
            groups[key] = (int(line), [text])
    return groups


def iter_errors(path: Path) -> Iterator[RowError]:
    """Read an error file back (operators' tools, tests)."""
    with open(path, encoding="utf-8", newline="") as stream:
        for record in csv.DictReader(stream):
            yield RowError(record["file"], int(record["line"]), record["column"], record["reason"])
