"""`ipc-hub connector statements`: direct payment and support service statements, and providers'
invoices (CSV, one row per line), to Kafka.

`import FILE...` imports statement files and says, per file, what was published and what was
rejected (the error file beside each input); `watch` takes files from the drop folder until
stopped. Exit status of `import`: 0 every line imported, 1 some rows rejected (bad or duplicate),
2 a file refused, a duplicate upload, or the broker did not take everything."""
from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

from connectors.la import Ledger
from connectors.statements import StatementImporter
from hub.cli.la_extracts import inbound_sink, run_file_connector
from hub.config import Settings


def drop_dir(settings: Settings) -> Path:
    return settings.statements_drop_dir or settings.data_dir / "statements-drop"


def ledger_dir(settings: Settings) -> Path:
    return settings.statements_ledger_dir or settings.data_dir / "statement-imports"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipc-hub connector statements",
        description="Direct payment and support service statements, third party and providers' invoices (CSV, "
        "one row per line; see connectors/statements/README.md). Good lines go to Kafka (HUB_KAFKA_BOOTSTRAP) "
        "keyed by person; every bad or duplicate row is listed with its line, column and reason in "
        "<file>.errors.csv beside the file.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("import", help="import statement files",
                       description="Import statement files. A file whose content was imported before is refused as "
                       "a duplicate upload (HUB_STATEMENTS_LEDGER_DIR remembers them) unless --force is given.")
    p.add_argument("files", nargs="+", type=Path, help="the statement CSV files")
    p.add_argument("--force", action="store_true", help="publish files already imported once")
    w = sub.add_parser("watch", help="import statement files dropped into a folder",
                       description="Watch HUB_STATEMENTS_DROP_DIR (default HUB_DATA_DIR/statements-drop). Upload each "
                       "file under a temporary name and rename it to *.csv when complete; each ends in processed/ "
                       "or failed/ (with a .reason.txt), beside its error file.")
    w.add_argument("--drop-dir", type=Path, help="the folder to watch (overrides HUB_STATEMENTS_DROP_DIR)")
    return parser


def importer(settings: Settings, bootstrap: str, stack: ExitStack) -> StatementImporter:
    """A StatementImporter on the same producer as the council extracts' (the bus journal on the
    embedded default), closed with the stack."""
    return StatementImporter(inbound_sink(settings, bootstrap, stack, "ipc-hub-statements"),
                             Ledger(ledger_dir(settings)))


def run(args: argparse.Namespace, settings: Settings) -> None:
    run_file_connector(_parser().parse_args(args.options), settings, importer, drop_dir,  # type: ignore[arg-type]
                       "statements")
