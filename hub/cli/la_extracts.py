"""`ipc-hub connector la`: local authority CSV extracts to Kafka.

`import FILE...` imports the files of one extract and says, per file, what was published and
what was rejected (the error file beside each input); `watch` takes extracts from the drop
folder until stopped. `start_la_watch` runs the drop folder on a thread for `ipc-hub up`.

Exit status of `import`: 0 every file imported with no bad row, 1 some rows rejected, 2 a file
refused, a duplicate upload, or the broker did not take everything."""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from contextlib import ExitStack
from pathlib import Path

from connectors.la import DropFolder, FileReport, Importer, Ledger
from connectors.la.publish import KafkaSink
from hub.bus.journal import Journal
from hub.bus.topics import Topics, ensure_topics
from hub.cli.common import bus_settings, journal_enabled, locate_data_dir
from hub.config import Settings
from hub.runtime.embedded import EmbeddedError, running_postgres_url

log = logging.getLogger("hub")


def drop_dir(settings: Settings) -> Path:
    return settings.la_drop_dir or settings.data_dir / "la-drop"


def ledger_dir(settings: Settings) -> Path:
    return settings.la_ledger_dir or settings.data_dir / "la-imports"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipc-hub connector la",
        description="Local authority social care extracts (CSV shaped like the Adult Social Care Client "
        "Level Data return: people, carers and events files; see connectors/la/README.md). Good rows go "
        "to Kafka (HUB_KAFKA_BOOTSTRAP) keyed by person, people before carers before events; every bad "
        "row is listed with its line, column and reason in <file>.errors.csv beside the file.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("import", help="import the files of one extract",
                       description="Import the files of one extract. A file whose content was imported "
                       "before is refused as a duplicate upload (HUB_LA_LEDGER_DIR remembers them) unless "
                       "--force is given; importing it again changes nothing in the record.")
    p.add_argument("files", nargs="+", type=Path, help="the extract's CSV files (any order)")
    p.add_argument("--force", action="store_true", help="publish files already imported once")
    w = sub.add_parser("watch", help="import extracts dropped into a folder",
                       description="Watch HUB_LA_DROP_DIR (default HUB_DATA_DIR/la-drop). Upload each file "
                       "under a temporary name and rename it to *.csv when complete; files found in one "
                       "scan are one extract. Each ends in processed/ or failed/ (with a .reason.txt), "
                       "beside its error file.")
    w.add_argument("--drop-dir", type=Path, help="the folder to watch (overrides HUB_LA_DROP_DIR)")
    return parser


def importer(settings: Settings, bootstrap: str, stack: ExitStack) -> Importer:
    """An Importer publishing to the hub's inbound topic (and the bus journal on the embedded
    default), its producer closed with the stack."""
    bus = bus_settings(settings, bootstrap)
    _check_reachable(bootstrap)
    ensure_topics(bootstrap, Topics(bus.topic_prefix), bus.partitions, bus.max_message_bytes)
    held = None
    if journal_enabled(settings):
        url = settings.database_url or running_postgres_url(settings.data_dir)
        if url is None:
            raise EmbeddedError("no running hub's database found for the bus journal: start `ipc-hub up`, "
                                "or set HUB_DATA_DIR or HUB_DATABASE_URL")
        held = Journal(url)
    sink = KafkaSink(bus, max_in_flight=settings.la_max_in_flight, journal=held)
    stack.callback(sink.close)
    return Importer(sink, Ledger(ledger_dir(settings)))


def exit_status(reports: list[FileReport]) -> int:
    if any(not r.ok for r in reports):
        return 2
    return 1 if any(r.rows_bad for r in reports) else 0


def bootstrap_of(settings: Settings) -> str:
    """HUB_KAFKA_BOOTSTRAP, or the embedded broker of the hub running here (`ipc-hub up`). Never
    a broker of our own: an import into a broker that stops when the command ends (Tansu keeps
    topics in memory) would be lost."""
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.embedded_kafka_port}"


def _check_reachable(bootstrap: str) -> None:
    """A clear start-up failure instead of the Kafka client's retries when no broker is there."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=3):
                return
        except (OSError, ValueError):
            continue
    raise EmbeddedError(f"no Kafka broker answers at {bootstrap}: start `ipc-hub up` or set HUB_KAFKA_BOOTSTRAP")


def run(args: argparse.Namespace, settings: Settings) -> None:
    options = _parser().parse_args(args.options)
    settings = locate_data_dir(settings, must_exist=options.action == "import")
    bootstrap = bootstrap_of(settings)
    with ExitStack() as stack:
        if options.action == "import":
            reports = importer(settings, bootstrap, stack).import_extract(options.files, force=options.force)
            for report in reports:
                print(report.summary(), flush=True)
            status = exit_status(reports)
        else:
            stop = threading.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            folder = DropFolder(options.drop_dir or drop_dir(settings), importer(settings, bootstrap, stack))
            log.info("watching %s for local authority extracts", folder.folder)
            folder.watch(stop, settings.la_poll_interval_s)
            status = 0
    if status:
        raise SystemExit(status)


def start_la_watch(settings: Settings, bootstrap: str, stack: ExitStack) -> DropFolder:
    """For `ipc-hub up`: the drop folder watched on a thread of its own, stopped (after the scan
    in hand) when the stack closes."""
    folder = DropFolder(drop_dir(settings), importer(settings, bootstrap, stack))
    stop = threading.Event()
    thread = threading.Thread(target=folder.watch, args=(stop, settings.la_poll_interval_s),
                              name="la-drop-folder", daemon=True)
    thread.start()
    log.info("watching %s for local authority extracts", folder.folder)

    def stop_watching() -> None:
        stop.set()
        thread.join(60)

    stack.callback(stop_watching)
    return folder
