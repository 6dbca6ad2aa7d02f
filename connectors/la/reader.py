"""Reading one extract file as a stream: bytes → checked rows, one line at a time.

Never the whole file in memory: the file is read line by line, each line decoded on its own
(so a byte that is not UTF-8 spoils its row only, and the report says which line), and parsed
with the csv module. The header decides the file's kind and is checked before any row. Every
rejected row becomes a `RowError` naming the file, line, column and reason; the caller writes
them to the error file beside the input."""
from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from connectors.la.format import KINDS, FileKind, HeaderError, check_row, kind_of_header

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class RowError:
    file: str
    line: int  # 1 is the header
    column: str  # empty when the whole line (or file) is at fault
    reason: str


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    values: dict[str, str]


class FileRefused(Exception):
    """The whole file is refused (bad header, not UTF-8 at the header, empty): nothing in it
    is published. `error` says why, in the same form as a row error."""

    def __init__(self, error: RowError) -> None:
        super().__init__(error.reason)
        self.error = error


class _Lines:
    """Physical lines of a binary stream, decoded one at a time. An undecodable line is given
    to csv as an empty line and remembered, so the row loop reports it in its place. Tracks
    whether the last line ended with its line break."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.number = 0
        self.undecodable: dict[int, str] = {}
        self.ended_cleanly = True

    def __iter__(self) -> Iterator[str]:
        for raw in self.stream:
            self.number += 1
            if self.number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            self.ended_cleanly = raw.endswith(b"\n")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.undecodable[self.number] = (
                    f"not UTF-8: byte 0x{raw[exc.start]:02X} at position {exc.start + 1} of the line "
                    "(extracts must be UTF-8; a byte order mark is allowed)")
                yield "\n"


class FileReader:
    """Iterate `rows()` for the good rows; each bad row goes to `on_error` as it is met (so a
    file of bad rows needs no memory for them either). Afterwards `kind` and the
    counts are complete. Whole-file problems raise FileRefused from `rows()` before any row."""

    def __init__(self, path: Path, on_error: Callable[[RowError], None],
                 kinds: tuple[FileKind, ...] = KINDS) -> None:
        self.path = path
        self.on_error = on_error
        self.kinds = kinds  # the kinds of file this may be (connectors/statements reads its own)
        self.kind: FileKind | None = None
        self.rows_read = 0
        self.rows_good = 0
        self._lines: _Lines | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def _refuse(self, reason: str, line: int = 1, column: str = "") -> FileRefused:
        return FileRefused(RowError(self.name, line, column, reason))

    def rows(self) -> Iterator[Row]:
        with open(self.path, "rb") as stream:
            lines = self._lines = _Lines(stream)
            reader = csv.reader(iter(lines), strict=True)
            try:
                header = next(reader)
            except StopIteration:
                raise self._refuse("the file is empty (no header line)") from None
            except csv.Error as exc:
                raise self._refuse(f"the header line is not CSV ({exc})") from None
            if 1 in lines.undecodable:
                raise self._refuse(f"header {lines.undecodable[1]}")
            try:
                self.kind = kind_of_header(header, self.kinds)
            except HeaderError as exc:
                raise self._refuse(str(exc)) from None
            stripped = [h.strip() for h in header]
            positions = tuple(stripped.index(n) for n in self.kind.names)
            yield from self._body(reader, lines, positions, len(header))

    def _body(self, reader: Iterator[list[str]], lines: _Lines, positions: tuple[int, ...],
              width: int) -> Iterator[Row]:
        assert self.kind is not None
        previous_end = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                start = previous_end + 1
                previous_end = lines.number
                self.rows_read += 1
                self.on_error(self._truncated(start) if self._at_end(lines) else
                              RowError(self.name, start, "", f"not a CSV row ({exc}); lines {start} "
                                       f"to {previous_end} are not imported"))
                continue
            start, previous_end = previous_end + 1, lines.number
            if (undecodable := lines.undecodable.pop(start, None)) is not None:  # popped: memory stays flat
                self.rows_read += 1
                self.on_error(RowError(self.name, start, "", undecodable))
                continue
            if not fields or fields == [""]:
                continue  # a blank line carries nothing
            self.rows_read += 1
            if len(fields) != width:
                if len(fields) < width and self._at_end(lines):
                    self.on_error(self._truncated(start, len(fields), width))
                else:
                    spans = f" (a quoted field runs on to line {previous_end})" if previous_end > start else ""
                    self.on_error(RowError(self.name, start, "",
                                           f"{len(fields)} fields where the header has {width}{spans}"))
                continue
            values, problems = check_row(self.kind, positions, fields)
            if problems:
                for column, reason in problems:
                    self.on_error(RowError(self.name, start, column, reason))
                continue
            self.rows_good += 1
            yield Row(start, values)

    @staticmethod
    def _at_end(lines: _Lines) -> bool:
        """Whether the row ran into the end of a file whose last line has no line break (only
        the last line can lack one): the sign of an upload cut short."""
        return not lines.ended_cleanly

    def _truncated(self, line: int, found: int | None = None, width: int | None = None) -> RowError:
        detail = f" ({found} of {width} fields)" if found is not None else " (inside a quoted field)"
        return RowError(self.name, line, "", "truncated last line: the file ends in the middle of a row"
                        + detail + "; send the whole file again")
