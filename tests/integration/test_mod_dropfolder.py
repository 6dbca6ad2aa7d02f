"""The MOD drop folder on a real file system, publishing to the real Kafka-protocol broker:
good files end in processed/ with their envelope in Kafka, bad ones in failed/ with a reason
file, files still being written are left alone, a file claimed by a process that died is taken
again, and two connectors racing over one folder take each file exactly once."""
# ruff: noqa: F811 - the broker fixtures are imported from tests/pipeline/conftest.py
from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from connectors.mod import DropFolder, Intake
from hub.bus.produce import EnvelopeProducer
from tests.integration.test_mod_endpoint import inbound
from tests.pipeline.conftest import bus, kafka  # noqa: F401 (fixtures)

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "mod" / "samples"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


async def scan_with(bus_settings, root: Path, rounds: int = 1, folders: int = 1) -> list[int]:
    """Scan `root` with `folders` drop-folder connectors at once (each its own producer)."""
    producers = [EnvelopeProducer(dataclasses.replace(bus_settings, linger_ms=0), f"drop-{i}") for i in range(folders)]
    try:
        drops = [DropFolder(root, Intake(p.send), pid=os.getpid() + i * 100_000 if i else None)
                 for i, p in enumerate(producers)]
        taken = []
        for _ in range(rounds):
            taken += await asyncio.gather(*(d.scan() for d in drops))
        return taken
    finally:
        for p in producers:
            p.close()


def test_good_file_processed_bad_file_failed_with_reason(bus, tmp_path):
    shutil.copy(SAMPLES / "handover-full.json", tmp_path / "sam.json")
    shutil.copy(SAMPLES / "bad" / "snomed-check-digit.json", tmp_path / "typo.json")
    shutil.copy(SAMPLES / "bad" / "latin1.json", tmp_path / "latin1.json")
    (tmp_path / ".half-written.json").write_bytes(b"{")
    (tmp_path / "uploading.json.tmp").write_bytes(b"{")

    assert asyncio.run(scan_with(bus, tmp_path)) == [3]
    assert names(tmp_path / "processed") == ["sam.json"]
    assert names(tmp_path / "failed") == ["latin1.json", "latin1.json.reason.txt", "typo.json",
                                          "typo.json.reason.txt"]
    reason = (tmp_path / "failed" / "typo.json.reason.txt").read_text()
    assert "code-invalid" in reason and "/conditions/1/snomedCode" in reason and "47505004" in reason
    assert "not UTF-8" in (tmp_path / "failed" / "latin1.json.reason.txt").read_text()
    # the refused files are kept byte for byte, and what is being written is not touched
    assert (tmp_path / "failed" / "typo.json").read_bytes() == (SAMPLES / "bad" / "snomed-check-digit.json").read_bytes()
    assert names(tmp_path) == [".half-written.json", "uploading.json.tmp"]
    assert names(tmp_path / "working") == []
    envelopes = inbound(bus, 1)
    assert len(envelopes) == 1 and envelopes[0].payload == (SAMPLES / "handover-full.json").read_bytes()


def test_oversized_file_fails_unread(tmp_path):
    (tmp_path / "huge.json").write_bytes(b" " * 2048)
    drop = DropFolder(tmp_path, Intake(lambda e: None), max_bytes=1024)
    assert asyncio.run(drop.scan()) == 1
    assert names(tmp_path / "failed") == ["huge.json", "huge.json.reason.txt"]
    assert "too-long: the handover is larger than 1024 bytes" in (tmp_path / "failed" / "huge.json.reason.txt").read_text()


def test_same_name_again_is_kept_beside_the_first(bus, tmp_path):
    for _ in range(2):
        shutil.copy(SAMPLES / "handover-minimal.json", tmp_path / "aisha.json")
        asyncio.run(scan_with(bus, tmp_path))
    assert names(tmp_path / "processed") == ["aisha.json", "aisha.json.1"]
    assert len(inbound(bus, 2)) == 2  # a duplicate upload is published again; the record ignores it


def test_claim_of_a_dead_process_is_taken_again(bus, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    drop = DropFolder(tmp_path, Intake(lambda e: None))  # only for its layout and host name
    claimed = tmp_path / "working" / f"{drop.host}--{dead.pid}--sam.json"
    shutil.copy(SAMPLES / "handover-full.json", claimed)
    alive = tmp_path / "working" / f"{drop.host}--1--other.json"  # pid 1 lives: its claim is left alone
    shutil.copy(SAMPLES / "handover-minimal.json", alive)

    assert asyncio.run(scan_with(bus, tmp_path)) == [1]
    assert names(tmp_path / "processed") == ["sam.json"]
    assert names(tmp_path / "working") == [alive.name]
    assert inbound(bus, 1)[0].correlation_id == "HO-2026-000417"


@pytest.mark.parametrize("files", [20])
def test_two_connectors_never_take_one_file(bus, tmp_path, files):
    for i in range(files):
        shutil.copy(SAMPLES / "handover-minimal.json", tmp_path / f"doc-{i:02d}.json")
    taken = asyncio.run(scan_with(bus, tmp_path, folders=2))
    assert sum(taken) == files
    assert names(tmp_path / "processed") == [f"doc-{i:02d}.json" for i in range(files)]
    envelopes = inbound(bus, files)
    assert len(envelopes) == files and len({e.id for e in envelopes}) == files


def test_claims_racing_on_threads_take_each_file_once(tmp_path):
    """The claim itself under real concurrency (os.rename on threads, no event loop between)."""
    files = [f"doc-{i:03d}.json" for i in range(300)]
    for name in files:
        (tmp_path / name).write_bytes(b"{}")
    drops = [DropFolder(tmp_path, Intake(lambda e: None), pid=os.getpid() + i) for i in range(4)]
    start = threading.Barrier(len(drops))
    won: list[list[str]] = [[] for _ in drops]

    def race(index: int) -> None:
        start.wait()
        for name in files:
            if drops[index].claim(name) is not None:
                won[index].append(name)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(drops))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(n for names_won in won for n in names_won) == files
    assert len(list((tmp_path / "working").iterdir())) == len(files)
