"""`ipc-hub connector children`: a council's children's extract (CSV shaped like the SEN2 return and
the children in need / looked-after children data) to Kafka, with the council extracts' importer.

`import FILE...` imports the files of one extract and says, per file, what was published and
what was rejected (the error file beside each input); `watch` takes extracts from the drop
folder until stopped. Exit status of `import`: 0 every row imported, 1 some rows rejected, 2 a
file refused, a duplicate upload, or the broker did not take everything."""
from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

from connectors.children import KINDS
from connectors.la import Importer, Ledger
from hub.cli.la_extracts import inbound_sink, run_file_connector
from hub.config import Settings


def drop_dir(settings: Settings) -> Path:
    return settings.children_drop_dir or settings.data_dir / "children-drop"


def ledger_dir(settings: Settings) -> Path:
    return settings.children_ledger_dir or settings.data_dir / "children-imports"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipc-hub connector children",
        description="A council's children's extract (children, ehc and episodes CSV files shaped like the SEN2 "
        "return and the children in need / looked-after children data; see connectors/children/README.md). "
        "Good rows go to Kafka (HUB_KAFKA_BOOTSTRAP) keyed by child; every bad row is listed with its line, "
        "column and reason in <file>.errors.csv beside the file.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("import", help="import the files of one extract",
                       description="Import the files of one extract. A file whose content was imported before is "
                       "refused as a duplicate upload (HUB_CHILDREN_LEDGER_DIR remembers them) unless --force is "
                       "given; importing it again changes nothing in the record.")
    p.add_argument("files", nargs="+", type=Path, help="the extract's CSV files (any order)")
    p.add_argument("--force", action="store_true", help="publish files already imported once")
    w = sub.add_parser("watch", help="import extracts dropped into a folder",
                       description="Watch HUB_CHILDREN_DROP_DIR (default HUB_DATA_DIR/children-drop). Upload each "
                       "file under a temporary name and rename it to *.csv when complete; files found in one scan "
                       "are one extract. Each ends in processed/ or failed/ (with a .reason.txt).")
    w.add_argument("--drop-dir", type=Path, help="the folder to watch (overrides HUB_CHILDREN_DROP_DIR)")
    return parser


def importer(settings: Settings, bootstrap: str, stack: ExitStack) -> Importer:
    """The council extracts' Importer with the children's kinds, on the same producer."""
    return Importer(inbound_sink(settings, bootstrap, stack, "ipc-hub-children"), Ledger(ledger_dir(settings)),
                    kinds=KINDS)


def run(args: argparse.Namespace, settings: Settings) -> None:
    run_file_connector(_parser().parse_args(args.options), settings, importer, drop_dir, "children's extracts")
