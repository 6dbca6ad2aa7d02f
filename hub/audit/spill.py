"""Audit records the store would not take, kept on disk: the audit trail's last resort.

The writer (hub.audit.writer) hands records here when storage refused them for their content, or
had not taken them when a stopping hub's time ran out. Each is appended as one JSON line — the
table row (hub.store.audit.COLUMNS order) and why it was set aside — to a file of this process's
own under the spill folder (HUB_AUDIT_SPILL_DIR, unset: HUB_DATA_DIR/audit), created readable by
the hub's user only: the rows name people and what was asked about them. Each time, the count and
the file are logged as an error (never the rows' content: hub/runtime/logs.py), so an operator
learns that the trail has records outside the database and where they are (`load` reads them)."""
from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def spill_dir(configured: str | Path | None, data_dir: str | Path) -> Path:
    return Path(configured) if configured else Path(data_dir) / "audit"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class Spill:
    """Appends set-aside rows to `<folder>/set-aside-<UTC start>-<pid>.jsonl`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / f"set-aside-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}.jsonl"

    def __call__(self, rows: list[tuple], reason: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({"reason": reason, "row": _plain(row)}, ensure_ascii=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
        log.error("audit trail: %d records could not be stored (%s); kept in %s", len(rows), reason, self.path)


def load(folder: Path) -> list[dict[str, Any]]:
    """Every set-aside record under `folder` ({"reason", "row"}), oldest file first."""
    found = []
    for path in sorted(folder.glob("set-aside-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                found.append(json.loads(line))
    return found
