"""Local authority social care extracts (CSV shaped like the Adult Social Care Client Level Data
return): people, carers and events files, read as streams, checked row by row, published to
the inbound topic keyed by person. See README.md for the format."""
from connectors.la.dropfolder import DropFolder
from connectors.la.extract import ERRORS_SUFFIX, FileReport, Importer, Ledger, PublishError, iter_errors
from connectors.la.format import CARERS, EVENTS, KINDS, PEOPLE, FileKind
from connectors.la.reader import FileReader, FileRefused, Row, RowError

__all__ = ["CARERS", "ERRORS_SUFFIX", "EVENTS", "KINDS", "PEOPLE", "DropFolder", "FileKind", "FileReader",
           "FileRefused", "FileReport", "Importer", "Ledger", "PublishError", "Row", "RowError", "iter_errors"]
