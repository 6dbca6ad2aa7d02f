"""Section `csv`: a million-row local authority events extract (plus its people file) imported
through the LA connector into a real Kafka-protocol broker, beside the limits measured in the
same run on the same file: parsing it with the bare `csv` module, and producing the same number
of records of the same size to the same broker with the same producer settings (acks=all,
idempotent). Each of the three runs in a fresh child process, which reports its own peak
memory (VmHWM), so the import's memory is measured alone and shown against an idle
interpreter that has imported the same modules.

Target: the whole file published (every row accounted for) with peak memory under 256 MiB:
the connector streams, so its memory must not grow with the file."""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

MEMORY_TARGET_MIB = 256
_PEOPLE_COLUMNS = ("LA_Code,LA_Person_Unique_Identifier,NHS_Number,Given_Name,Family_Name,Date_of_Birth,"
                   "Gender,Postcode,Date_of_Death")
_EVENT_COLUMNS = ("LA_Code,Event_Reference,LA_Person_Unique_Identifier,Client_Type,Event_Type,Event_Start_Date,"
                  "Event_End_Date,Event_Outcome,Service_Type,Service_Component,Delivery_Mechanism,Unit_Cost,"
                  "Cost_Frequency_Unit_Type,Planned_units_per_week")
_SERVICES = [
    ("Long Term Support: Community", "Home Support", "Direct Payment", "22.50", "Hourly", "10"),
    ("Long Term Support: Community", "Day Care", "CASSR Managed Personal Budget", "45.00", "Per session", "2"),
    ("Short Term Support: ST-Max", "Home Support", "CASSR Commissioned Support only", "120.00", "Weekly", "1"),
    ("Long Term Support: Community", "Transport", "CASSR Managed Personal Budget", "80.00", "Monthly", "1"),
    ("Carer Support: Direct to Carer", "Carer Break", "Direct Payment", "300.00", "Annually", "1"),
]


def _nhs_numbers():
    """Test-range NHS numbers (999 000 0000 onwards) that pass Modulus 11."""
    from hub.fhir.identifiers import is_valid_nhs_number

    n = 9990000000
    while True:
        n += 1
        if is_valid_nhs_number(str(n)):
            yield str(n)


def generate(folder: Path, people: int, events: int) -> tuple[Path, Path]:
    """A people file and an events file in no particular person order (as councils send them)."""
    rng = random.Random(6)
    people_path, events_path = folder / "people.csv", folder / "events.csv"
    numbers = _nhs_numbers()
    with open(people_path, "w", encoding="utf-8") as out:
        out.write(_PEOPLE_COLUMNS + "\n")
        out.writelines(f"E10000024,B{i:07d},{next(numbers)},Sam,Bench{i % 997},19{40 + i % 60}-0{1 + i % 9}-1{i % 10},"
                      f"{('Male', 'Female')[i % 2]},NG{1 + i % 9} {i % 10}AB,\n" for i in range(people))
    with open(events_path, "w", encoding="utf-8") as out:
        out.write(_EVENT_COLUMNS + "\n")
        for i in range(events):
            person = rng.randrange(people)
            month = 1 + i % 12
            if rng.random() < 0.7:
                st, comp, mech, cost, freq, units = _SERVICES[rng.randrange(len(_SERVICES))]
                out.write(f"E10000024,EV{i:08d},B{person:07d},Service User,Service,2026-{month:02d}-01,,,"
                          f"{st},{comp},{mech},{cost},{freq},{units}\n")
            else:
                kind = ("Request", "Assessment", "Review")[i % 3]
                out.write(f"E10000024,EV{i:08d},B{person:07d},Service User,{kind},2026-{month:02d}-01,"
                          f"2026-{month:02d}-02,,,,,,,\n")
    return people_path, events_path


# --- the three measured runs, each in a child process -------------------------------------------

def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that across
    exec, so a child would report the bench driver's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_idle(_: argparse.Namespace) -> dict:
    import connectors.la  # noqa: F401 - the same modules the import loads
    from connectors.la.publish import KafkaSink  # noqa: F401

    return {"peak_mib": _peak_mib()}


def _child_import(args: argparse.Namespace) -> dict:
    from connectors.la import Importer, Ledger
    from connectors.la.publish import KafkaSink
    from hub.bus.kafka import BusSettings

    sink = KafkaSink(BusSettings(bootstrap=args.bootstrap, topic_prefix=args.prefix), max_in_flight=10_000)
    started = time.perf_counter()
    reports = Importer(sink, Ledger(Path(args.ledger)), work_dir=Path(args.work)).import_extract(
        [Path(f) for f in args.files], force=True)
    seconds = time.perf_counter() - started
    sink.close()
    return {"seconds": seconds, "peak_mib": _peak_mib(),
            "files": [{"name": r.path.name, "status": r.status, "rows": r.rows_read, "good": r.rows_good,
                       "bad": r.rows_bad, "envelopes": r.envelopes} for r in reports]}


def _child_csv(args: argparse.Namespace) -> dict:
    import csv

    started = time.perf_counter()
    rows = 0
    for path in args.files:
        with open(path, encoding="utf-8", newline="") as stream:
            for _ in csv.reader(stream):
                rows += 1
    return {"seconds": time.perf_counter() - started, "rows": rows - len(args.files), "peak_mib": _peak_mib()}


def _child_produce(args: argparse.Namespace) -> dict:
    from hub.bus.envelope import Envelope
    from hub.bus.kafka import BusSettings, make_producer, produce

    producer = make_producer(BusSettings(bootstrap=args.bootstrap, topic_prefix=args.prefix), "bench-raw")
    payload = b"x" * args.size
    started = time.perf_counter()
    for i in range(args.count):
        headers = None
        if args.headers:  # what the hub's envelope costs on the wire: nine headers per record
            headers = Envelope(source="la-E10000024", kind="la-cld-events", payload=payload,
                               person_key=f"la-E10000024:B{i:07d}", content_type="text/csv; charset=utf-8").headers()
        produce(producer, f"{args.prefix}.raw", str(i % 100_000).encode(), payload, headers or [], None)
        producer.poll(0)
    producer.flush()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "records": args.count, "peak_mib": _peak_mib()}


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["idle", "import", "csv", "produce"])
    parser.add_argument("--files", nargs="*", default=[])
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--ledger", default="")
    parser.add_argument("--work", default="")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--headers", action="store_true")
    args = parser.parse_args(argv)
    run = {"idle": _child_idle, "import": _child_import, "csv": _child_csv, "produce": _child_produce}[args.mode]
    print(json.dumps(run(args)), flush=True)


def _in_child(mode: str, *options: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    done = subprocess.run([sys.executable, "-m", "tests.bench.csv_import", mode, *options], env=env,
                          capture_output=True, text=True, timeout=3600, check=False, cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        raise RuntimeError(f"csv bench: the {mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(ctx, args: argparse.Namespace) -> dict:
    from hub.bus.topics import Topics, ensure_topics
    from hub.runtime.embedded import EmbeddedKafka
    from tests.bench.run import free_port

    people_rows, event_rows = (10_000, 100_000) if ctx.quick else (100_000, 1_000_000)
    folder = ctx.work_dir / "la-extract"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    people, events = generate(folder, people_rows, event_rows)
    generated = time.perf_counter() - started
    files = [str(people), str(events)]
    broker = EmbeddedKafka(free_port(), ctx.out_dir / "logs")
    bootstrap = broker.start()
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        ensure_topics(bootstrap, Topics(prefix), 4)
        idle = _in_child("idle")
        imported = _in_child("import", "--files", *files, "--bootstrap", bootstrap, "--prefix", prefix,
                             "--ledger", str(ctx.work_dir / "la-ledger"), "--work", str(ctx.work_dir))
        parsed = _in_child("csv", "--files", *files)
        rows = people_rows + event_rows
        size = (people.stat().st_size + events.stat().st_size) // rows
        produced = _in_child("produce", "--bootstrap", bootstrap, "--prefix", prefix, "--count", str(rows),
                             "--size", str(size))
        envelopes = sum(f["envelopes"] for f in imported["files"])
        enveloped = _in_child("produce", "--bootstrap", bootstrap, "--prefix", prefix, "--count", str(envelopes),
                              "--size", str(int(people.stat().st_size + events.stat().st_size) // envelopes),
                              "--headers")
    finally:
        broker.stop()
    import_rate = rows / imported["seconds"]
    csv_rate = parsed["rows"] / parsed["seconds"]
    produce_rate = produced["records"] / produced["seconds"]
    complete = all(f["status"] == "imported" and f["good"] == f["rows"] for f in imported["files"])
    return {
        "people_rows": people_rows, "event_rows": event_rows, "file_mib": round(
            (people.stat().st_size + events.stat().st_size) / 2**20, 1),
        "generated_seconds": round(generated, 1),
        "import": {**imported, "rows_per_s": round(import_rate)}, "idle_peak_mib": round(idle["peak_mib"], 1),
        "csv_parse": {**parsed, "rows_per_s": round(csv_rate)},
        "raw_produce": {**produced, "records_per_s": round(produce_rate), "record_bytes": size},
        "ratio_to_csv_parse": round(import_rate / csv_rate, 3),
        "ratio_to_raw_produce": round(import_rate / produce_rate, 3),
        "raw_envelopes": {**enveloped, "records_per_s": round(enveloped["records"] / enveloped["seconds"])},
        "ratio_to_raw_envelopes": round(enveloped["seconds"] / imported["seconds"], 3),
        "memory_target_mib": MEMORY_TARGET_MIB,
        "pass": complete and imported["peak_mib"] < MEMORY_TARGET_MIB,
    }


def print_result(result: dict) -> bool:
    imp, raw_csv, raw_kafka = result["import"], result["csv_parse"], result["raw_produce"]
    print(f"  extract: {result['event_rows']:,} events + {result['people_rows']:,} people rows, "
          f"{result['file_mib']} MiB (generated in {result['generated_seconds']} s)")
    print(f"  {'':<44}{'rows/s':>10}{'seconds':>9}{'peak MiB':>10}{'import ÷':>10}")
    print(f"  {'LA connector import → Kafka (acks=all)':<44}{imp['rows_per_s']:>10,}{imp['seconds']:>9.1f}"
          f"{imp['peak_mib']:>10.1f}")
    print(f"  {'limit: csv.reader over the same files':<44}{raw_csv['rows_per_s']:>10,}{raw_csv['seconds']:>9.1f}"
          f"{raw_csv['peak_mib']:>10.1f}{result['ratio_to_csv_parse']:>10.3f}")
    print(f"  {'limit: raw produce, same count and size':<44}{raw_kafka['records_per_s']:>10,}"
          f"{raw_kafka['seconds']:>9.1f}{raw_kafka['peak_mib']:>10.1f}{result['ratio_to_raw_produce']:>10.3f}")
    env = result["raw_envelopes"]
    print(f"  {'limit: raw produce of the import envelopes':<44}{'':>10}{env['seconds']:>9.1f}{env['peak_mib']:>10.1f}"
          f"{result['ratio_to_raw_envelopes']:>10.3f}")
    print(f"    ({env['records']:,} records with the envelope's nine headers, {env['records_per_s']:,}/s; "
          "ratio = its time ÷ the import's)")
    print(f"  idle interpreter with the same modules: {result['idle_peak_mib']} MiB peak")
    for f in imp["files"]:
        print(f"  {f['name']}: {f['status']}, {f['good']:,} of {f['rows']:,} rows in {f['envelopes']:,} envelopes")
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"  every row published and peak memory < {result['memory_target_mib']} MiB: {verdict}")
    return result["pass"]


if __name__ == "__main__":
    _child(sys.argv[1:])
