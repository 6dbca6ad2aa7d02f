"""Section `money`: the two speed figures issue 14 asks for.

1. **Statement import.** A million-line direct payment statement file imported through the
   statements connector into a real Kafka-protocol broker (every line checked, duplicates looked
   for by line reference in bounded memory, one envelope per line), beside the limits measured in
   the same run on the same file: parsing it with the bare `csv` module, and producing as many
   records of the same size to the same broker (the council extract section's children, so the
   two sections' limits are the same code). Each run is a fresh child process reporting its own
   peak memory. Target: every line published, peak memory under 256 MiB (the connector streams).
2. **Cohort cost of care.** 100,000 people written into the store (per person an A&E attendance
   before their budget, a month of direct payment spend after it, and for every tenth a council
   account with no lines: tests/money/cohort.py), then `hub.money.costing.cost_of_care` for all of
   them over a year before and a quarter after, timed, beside the limit: one plain SQL pass that
   reads the same rows' JSON and counts them (what any aggregate over these resources must at
   least do). Target: the totals come out exactly as the cohort was built."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

from tests.bench.csv_import import MEMORY_TARGET_MIB, _in_child, _nhs_numbers, _peak_mib

_HEADER = ("Provider_Code,Statement_Reference,Line_Reference,NHS_Number,Funding_Source,Management_Option,"
           "Line_Date,Line_Type,Payee,Amount,Category,Description,Goal,Outcome,Setting")
_LINES = [
    ("Spend", "Personal assistant (payroll PA-{p})", "412.50", "personal-assistant", "PA wages", "home-and-community"),
    ("Spend", "Mobility Direct Ltd", "125.00", "equipment", "Wheelchair tyres", "home-and-community"),
    ("Spend", "Riverside Day Opportunities", "48.00", "activities", "Day session", ""),
    ("Refund", "Mobility Direct Ltd", "12.00", "equipment", "Delivery charged twice", ""),
    ("Spend", "DPSS01 payroll service", "38.00", "support-service-fee", "Monthly account fee", ""),
]
PERIODS = [("before", date(2025, 4, 1), date(2026, 3, 31)), ("after", date(2026, 4, 1), date(2026, 6, 29))]


def generate(path: Path, lines: int, people: int) -> Path:
    """A statement file of `lines` lines spread over `people` people (test-range NHS numbers)."""
    numbers = _nhs_numbers()
    nhs = [next(numbers) for _ in range(people)]
    with open(path, "w", encoding="utf-8") as out:
        out.write(_HEADER + "\n")
        for i in range(lines):
            kind, payee, amount, category, what, setting = _LINES[i % len(_LINES)]
            month = 1 + i % 12
            out.write(f"DPSS01,2026-{month:02d},DPSS01-{i:09d},{nhs[(i * 7919) % people]},nhs,direct-payment,"
                      f"2026-{month:02d}-{1 + i % 28:02d},{kind},{payee.format(p=i % 50)},{amount},{category},"
                      f"{what},,,{setting}\n")
    return path


# --- the statement import, in a child process ---------------------------------------------------

def _child_import(args: argparse.Namespace) -> dict:
    from connectors.la import Ledger
    from connectors.la.publish import KafkaSink
    from connectors.statements import StatementImporter
    from hub.bus.kafka import BusSettings

    sink = KafkaSink(BusSettings(bootstrap=args.bootstrap, topic_prefix=args.prefix), max_in_flight=10_000,
                     client_id="bench-statements")
    started = time.perf_counter()
    reports = StatementImporter(sink, Ledger(Path(args.ledger)), work_dir=Path(args.work)).import_extract(
        [Path(args.file)], force=True)
    seconds = time.perf_counter() - started
    sink.close()
    r = reports[0]
    return {"seconds": seconds, "peak_mib": _peak_mib(), "status": r.status, "rows": r.rows_read,
            "good": r.rows_good, "bad": r.rows_bad, "envelopes": r.envelopes}


def _import_in_child(*options: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    done = subprocess.run([sys.executable, "-m", "tests.bench.money", *options], env=env, capture_output=True,
                          text=True, timeout=3600, check=False, cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        raise RuntimeError(f"money bench: the statement import failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _statements(ctx, lines: int, people: int) -> dict:
    from hub.bus.topics import Topics, ensure_topics
    from hub.runtime.embedded import EmbeddedKafka
    from tests.bench.run import free_port

    folder = ctx.work_dir / "statements"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    path = generate(folder / "statement.csv", lines, people)
    generated = time.perf_counter() - started
    broker = EmbeddedKafka(free_port(), ctx.out_dir / "logs")
    bootstrap = broker.start()
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        ensure_topics(bootstrap, Topics(prefix), 4)
        idle = _in_child("idle")
        imported = _import_in_child("--file", str(path), "--bootstrap", bootstrap, "--prefix", prefix,
                                    "--ledger", str(ctx.work_dir / "statement-ledger"), "--work", str(ctx.work_dir))
        parsed = _in_child("csv", "--files", str(path))
        size = path.stat().st_size // lines
        produced = _in_child("produce", "--bootstrap", bootstrap, "--prefix", prefix, "--count", str(lines),
                             "--size", str(size))
    finally:
        broker.stop()
    rate = lines / imported["seconds"]
    csv_rate = parsed["rows"] / parsed["seconds"]
    produce_rate = produced["records"] / produced["seconds"]
    return {"lines": lines, "people": people, "file_mib": round(path.stat().st_size / 2**20, 1),
            "generated_seconds": round(generated, 1), "idle_peak_mib": round(idle["peak_mib"], 1),
            "import": {**imported, "rows_per_s": round(rate)},
            "csv_parse": {**parsed, "rows_per_s": round(csv_rate)},
            "raw_produce": {**produced, "records_per_s": round(produce_rate), "record_bytes": size},
            "ratio_to_csv_parse": round(rate / csv_rate, 3), "ratio_to_raw_produce": round(rate / produce_rate, 3),
            "memory_target_mib": MEMORY_TARGET_MIB,
            "pass": (imported["status"] == "imported" and imported["good"] == lines == imported["envelopes"]
                     and imported["peak_mib"] < MEMORY_TARGET_MIB)}


# --- the cohort cost query ----------------------------------------------------------------------

async def _cohort(database_url: str, people: int) -> dict:
    from psycopg import AsyncConnection

    from hub.api.capability import implementation_guide
    from hub.fhir.validation import load_guide
    from hub.money.costing import cost_of_care
    from hub.search.access import Access
    from hub.store.conformance import load_conformance
    from tests.money.cohort import SPEND, write_cohort

    guide = load_guide()
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await load_conformance(conn, [*guide.conformance_resources(), implementation_guide(guide)])
    async with await AsyncConnection.connect(database_url) as conn:
        started = time.perf_counter()
        ids = await write_cohort(conn, people)
        written = time.perf_counter() - started
        await conn.execute("ANALYZE resource")
        await conn.commit()
        started = time.perf_counter()
        table = await cost_of_care(conn, ids, PERIODS, access=Access.system())
        query = time.perf_counter() - started
        await conn.commit()
        started = time.perf_counter()
        cur = await conn.execute(
            "SELECT count(*), sum(length(r.content::jsonb::text)) FROM resource r"
            " WHERE r.res_type IN ('ChargeItem', 'Encounter', 'Account') AND NOT r.deleted"
            " AND r.patient_id = ANY(%s)", [ids])
        rows, _ = await cur.fetchone()
        raw = time.perf_counter() - started
    a_and_e = Decimal("252")  # the illustrative 2025/26 tariff (the cohort test checks the same)
    expected_after = SPEND * people + Decimal("900.00") * ((people + 9) // 10)
    correct = (table.total("before") == a_and_e * people and table.total("after") == expected_after
               and table.unpriced == 0)
    return {"people": people, "resources": rows, "write_seconds": round(written, 1),
            "query_seconds": round(query, 2), "raw_read_seconds": round(raw, 2),
            "ratio_to_raw_read": round(raw / query, 3),
            "before": str(table.total("before")), "after": str(table.total("after")), "correct": correct}


def run(ctx, args: argparse.Namespace) -> dict:
    lines, people = (100_000, 1_000) if ctx.quick else (1_000_000, 10_000)
    cohort = 10_000 if ctx.quick else 100_000
    statements = _statements(ctx, lines, people)
    costing = asyncio.run(_cohort(ctx.database_url, cohort))
    return {"statements": statements, "cohort": costing, "pass": statements["pass"] and costing["correct"]}


def print_result(result: dict) -> bool:
    s, c = result["statements"], result["cohort"]
    imp, raw_csv, raw_kafka = s["import"], s["csv_parse"], s["raw_produce"]
    print(f"  statement file: {s['lines']:,} lines for {s['people']:,} people, {s['file_mib']} MiB "
          f"(generated in {s['generated_seconds']} s)")
    print(f"  {'':<46}{'rows/s':>10}{'seconds':>9}{'peak MiB':>10}{'import ÷':>10}")
    print(f"  {'statements connector → Kafka (acks=all)':<46}{imp['rows_per_s']:>10,}{imp['seconds']:>9.1f}"
          f"{imp['peak_mib']:>10.1f}")
    print(f"  {'limit: csv.reader over the same file':<46}{raw_csv['rows_per_s']:>10,}{raw_csv['seconds']:>9.1f}"
          f"{raw_csv['peak_mib']:>10.1f}{s['ratio_to_csv_parse']:>10.3f}")
    print(f"  {'limit: raw produce, same count and size':<46}{raw_kafka['records_per_s']:>10,}"
          f"{raw_kafka['seconds']:>9.1f}{raw_kafka['peak_mib']:>10.1f}{s['ratio_to_raw_produce']:>10.3f}")
    print(f"  idle interpreter with the same modules: {s['idle_peak_mib']} MiB peak")
    print(f"  {imp['status']}: {imp['good']:,} of {imp['rows']:,} lines in {imp['envelopes']:,} envelopes; "
          f"every line published and peak memory < {s['memory_target_mib']} MiB: {'PASS' if s['pass'] else 'FAIL'}")
    print(f"  cohort: {c['people']:,} people, {c['resources']:,} costed resources (written in {c['write_seconds']} s)")
    print(f"  {'':<46}{'seconds':>9}{'limit ÷ ours':>14}")
    print(f"  {'cost_of_care, a year before and a quarter after':<46}{c['query_seconds']:>9.2f}")
    print(f"  {'limit: one SQL pass reading the same rows':<46}{c['raw_read_seconds']:>9.2f}{c['ratio_to_raw_read']:>14.3f}")
    print(f"  totals before £{c['before']}, after £{c['after']}: {'PASS' if c['correct'] else 'FAIL'} (as built)")
    return result["pass"]


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    for option in ("--file", "--bootstrap", "--prefix", "--ledger", "--work"):
        parser.add_argument(option, required=True)
    print(json.dumps(_child_import(parser.parse_args(argv))), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1:])
