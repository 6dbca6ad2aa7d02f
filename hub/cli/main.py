"""`ipc-hub`: the one command operators use. This module only assembles the commands from their
modules (each command module imports its helpers from hub.cli.common, never from here) and
sets up logging; `--help` lists every HUB_* setting with its default."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from hub.cli import api, clients, connectors, subscriptions, up, users, workers
from hub.config import Settings, load_settings, settings_help
from hub.runtime.embedded import EmbeddedError
from hub.bus.kafka import error_names
from hub.bus.topics import Topics
from hub.runtime.logs import allow_terms, configure_logging

COMMANDS = [*up.PARSERS, *api.PARSERS, *workers.PARSERS, *connectors.PARSERS, *clients.PARSERS,
            *users.PARSERS, *subscriptions.PARSERS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipc-hub", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="IPC Hub: one shared FHIR record and care plan per person, joined up from MOD, "
        "GP, hospital, local authority and charity feeds. Configuration comes from HUB_* "
        "environment variables (README: Running it).",
        epilog="settings (environment variable, default):\n" + settings_help(),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so embedded services are stopped by the same cleanup."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def log_terms(settings: Settings) -> list[str]:
    """What the operator configured (folders, addresses) and the topic names: the only
    configuration values a log line may show (hub.runtime.logs keeps everything else out)."""
    topics = Topics(settings.topic_prefix)
    terms: list[str] = [*topics.all(), *(topics.group(w) for w in ("mapper", "recorder")), *error_names()]
    for name, value in settings:
        if isinstance(value, Path):
            terms += [str(value), str(value.resolve())]
        elif name.endswith("_host"):
            terms.append(str(value))
    data = settings.data_dir.resolve()
    terms += [str(data / part) for part in ("postgres", "tansu", "log", "mod-drop", "la-drop")]
    return terms


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings: Settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    allow_terms(log_terms(settings))
    _terminate_on_sigterm()
    try:
        args.handler(args, settings)
    except EmbeddedError as exc:
        print(f"ipc-hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
