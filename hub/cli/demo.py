"""The demonstration cohort `ipc-hub up` loads on a first start of the embedded default: the
sample MOD handover and local authority extract, dropped into the connectors' watched folders,
so the record fills through the real feeds (connector → Kafka → mapper → recorder) rather than
by writing to the database behind the pipeline's back."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg

import connectors.la
import connectors.mod

MOD_SAMPLE = Path(connectors.mod.__file__).parent / "samples" / "handover-full.json"
LA_SAMPLES = [Path(connectors.la.__file__).parent / "samples" / name
              for name in ("people.csv", "carers.csv", "events.csv")]


def record_is_empty(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT NOT EXISTS (SELECT 1 FROM resource WHERE res_type = 'Patient')").fetchone()[0]


def drop(sample: Path, folder: Path) -> None:
    """Put a sample in a watched folder the way a sender must: written under a temporary name,
    then renamed, so the watcher never takes a half-written file."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{sample.name}.part"
    shutil.copyfile(sample, partial)
    os.replace(partial, folder / sample.name)


def load_cohort(database_url: str, mod_drop_dir: Path, la_drop_dir: Path) -> str:
    """Drop the samples when the record holds nobody yet; a line for the banner saying what was done."""
    if not record_is_empty(database_url):
        return ""
    drop(MOD_SAMPLE, mod_drop_dir)
    for sample in LA_SAMPLES:
        drop(sample, la_drop_dir)
    return ("Demonstration cohort: a MOD handover and a local authority extract were dropped into\n"
            f"  {mod_drop_dir} and {la_drop_dir}; they reach the record through the feeds in a few seconds.\n")
