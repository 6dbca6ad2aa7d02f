"""Driving a real `ipc-hub up` for the durability and chaos tests: its process tree (found
through /proc, so kill -9 reaches every part), its embedded database, and HL7 v2 sent with
python-hl7's own MLLP client (an independent implementation of the framing)."""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import hl7
import hl7.mllp
import psycopg

from hub.runtime.embedded import running_postgres_url


def children_of(pid: int) -> list[int]:
    """Every descendant of `pid` (children first found through /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def kill_tree(pid: int, data_dir: Path) -> None:
    """kill -9 the hub, everything under it, and its embedded PostgreSQL (a daemon of its own)."""
    victims = [pid, *children_of(pid)]
    pg = postmaster_pid(data_dir)
    if pg:
        victims += [pg, *children_of(pg)]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def database(data_dir: Path) -> str:
    url = running_postgres_url(data_dir)
    assert url, "the hub's embedded PostgreSQL is not running"
    return url


def adt_a28(control: str, mrn: str, family: str = "DURABLE", birth: str = "19700214") -> str:
    return "\r".join([
        f"MSH|^~\\&|PAS|RXX01|IPC|HUB|20260301120000||ADT^A28^ADT_A05|{control}|P|2.4",
        "EVN|A28|20260301120000",
        f"PID|1||{mrn}^^^RXX01^MR||{family}^Sam||{birth}|F|||1 Station Road^^Leeds^^LS1 1AA^GBR^H",
    ]) + "\r"


async def _send_all(port: int, messages: list[str], connections: int) -> list[str]:
    """Each message over python-hl7's MLLP client; returns each ACK's MSA-1 ('' if none came)."""
    codes = [""] * len(messages)

    async def lane(start: int) -> None:
        try:
            reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
        except OSError:
            return
        try:
            for i in range(start, len(messages), connections):
                writer.writemessage(hl7.parse(messages[i]))
                await writer.drain()
                ack = await asyncio.wait_for(reader.readmessage(), 30)
                codes[i] = str(ack.segment("MSA")[1])
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    await asyncio.gather(*(lane(i) for i in range(connections)))
    return codes


def send_hl7(port: int, messages: list[str], connections: int = 8) -> list[str]:
    return asyncio.run(_send_all(port, messages, connections))


def recorded(url: str, prefix: str) -> tuple[int, int, int]:
    """(Patients whose MRN starts with `prefix`, distinct MRNs among them, their highest version)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT r.res_id), count(DISTINCT i->>'value'), coalesce(max(r.version), 0) "
            "FROM resource r, json_array_elements(r.content->'identifier') i "
            "WHERE r.res_type = 'Patient' AND NOT r.deleted AND i->>'value' LIKE %s", (prefix + "%",)).fetchone()
    return int(row[0]), int(row[1]), int(row[2])
