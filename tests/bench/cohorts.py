"""Section `cohorts`: the two speed figures issue 16 asks for.

1. **Bulk Data export.** A population written into the store with the recorder's batch writer
   (per person a Patient, 0–3 long-term Conditions and 1–2 Encounters), then a system-level
   `$export` of those three types through the driver's secured `ipc-hub api` (kick-off, polling
   the status URL to the manifest; the export runner in the API process writes the NDJSON
   files), timed from kick-off to the complete manifest: resources per second. Beside it, in the
   same run, the limit: PostgreSQL's raw `COPY (SELECT content …) TO STDOUT` of the same rows into
   a file. The API process's resident memory is sampled through the export: its peak above what it
   held before the kick-off is the export's memory (target: under 256 MiB, whatever the size: the
   runner streams). Every resource must be in the files exactly once. Then reads by id (wrk, 16
   clients) alone and while a second export runs: what the export costs the API's readers.
2. **Cohort evaluation.** The same population (100,000 people; `--quick` 10,000): the definition
   "two or more active long-term conditions, alive" (search syntax with a minimum, and a FHIRPath
   exclusion), evaluated in full with `hub.cohorts.evaluate.evaluate` — finding the people, then
   writing the member Group and an offer Task per member, in one transaction — and evaluated again
   (nothing changed: finding alone). The limit: one plain SQL pass over the same Condition and
   Patient rows that finds the same people (what any evaluation must at least do). The members
   must be exactly those the population was built to have.

The issue sets no time for either, so the figures are reported with their ratios; the verdict is
on correctness and memory."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

SNOMED = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
LONG_TERM = ("44054006", "13645005", "84114007", "709044004")
TYPES = ("Patient", "Condition", "Encounter")
MEMORY_TARGET_MIB = 256
# The export runs in the API process's own thread by default (HUB_EXPORT_IN_API): what its readers
# may lose while it runs. Reported, not part of the verdict: the issue leaves the figure to the bench.
READ_RATIO_TARGET = 0.5


def person(n: int) -> tuple[list[dict[str, Any]], bool]:
    """Person n's resources, and whether they meet the definition (the truth, from how they are
    built): n % 4 long-term conditions, the first resolved for every seventh person, every
    twentieth person dead."""
    pid = f"bench-{n}"
    subject = {"reference": f"Patient/{pid}"}
    dead = n % 20 == 0
    patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "name": [{"family": f"Bench{n}"}],
                               "birthDate": f"{1930 + n % 70}-0{1 + n % 9}-1{n % 10}"}
    if dead:
        patient["deceasedBoolean"] = True
    out = [patient]
    active = 0
    for k in range(n % 4):
        status = "resolved" if k == 0 and n % 7 == 0 else "active"
        active += status == "active"
        out.append({"resourceType": "Condition", "id": f"{pid}-c{k}",
                    "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
                    "code": {"coding": [{"system": SNOMED, "code": LONG_TERM[(n + k) % 4]}]}, "subject": subject})
    for k in range(1 + n % 2):
        out.append({"resourceType": "Encounter", "id": f"{pid}-e{k}", "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                              "code": "EMER" if k else "AMB"}, "subject": subject,
                    "period": {"start": "2026-03-0" + str(1 + k)}})
    return out, active >= 2 and not dead


async def _write(database_url: str, people: int, chunk: int = 2000) -> tuple[int, set[str], float]:
    from psycopg import AsyncConnection

    from hub.store import batch as store_batch

    expected: set[str] = set()
    resources = 0
    started = time.perf_counter()
    async with await AsyncConnection.connect(database_url) as conn:
        for start in range(0, people, chunk):
            staged = []
            for n in range(start, min(people, start + chunk)):
                made, member = person(n)
                if member:
                    expected.add(f"bench-{n}")
                for r in made:
                    s = store_batch.stage(r["resourceType"], r["id"], r, None)
                    if s is not None:
                        staged.append(s)
            resources += len(staged)
            async with conn.transaction():
                await store_batch.write_staged(conn, staged, set())
        await conn.execute("ANALYZE")
        await conn.commit()
    return resources, expected, time.perf_counter() - started


# --- export ---------------------------------------------------------------------------------------

def _rss_mib(pgid: int) -> float:
    """Resident memory of every process in a process group (the API and its children)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
            with open(f"/proc/{entry.name}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024


def _kick_off(client: httpx.Client, ctx) -> str:
    headers = {**ctx.hub_headers, "Accept": "application/fhir+json", "Prefer": "respond-async"}
    kick = client.get(f"{ctx.hub_url}/fhir/$export", params={"_type": ",".join(TYPES)}, headers=headers)
    if kick.status_code != 202:
        raise RuntimeError(f"export kick-off answered {kick.status_code}: {kick.text[:400]}")
    return kick.headers["Content-Location"]


def _finished(client: httpx.Client, ctx, status_url: str) -> tuple[dict, int]:
    polls = 0
    while True:
        polls += 1
        answer = client.get(status_url, headers=ctx.hub_headers)
        if answer.status_code == 200:
            return answer.json(), polls
        if answer.status_code != 202:
            raise RuntimeError(f"export status answered {answer.status_code}: {answer.text[:400]}")
        time.sleep(0.2)   # the bench's own polling interval (a client would honour Retry-After)


def _reads_beside_an_export(ctx, people: int, seconds_alone: float) -> dict:
    """Reads by id at 16 clients with nothing else running, then while a second export of the
    same rows runs (for at most 0.6 of the time the first export took, so the export outlasts
    the reads): the export's cost to the API's readers."""
    from tests.bench import run as bench

    ids = [f"bench-{n}" for n in range(0, people, max(1, people // 1000))]
    script = bench.write_wrk_script(ctx.out_dir / "wrk" / "cohorts-read.lua", "/fhir/Patient/%s", ids, ctx.hub_headers)
    duration = max(1.0, min(ctx.duration, 0.6 * seconds_alone))
    idle = bench.run_wrk(ctx, label="read-idle", url=ctx.hub_url, script=script, clients=16, duration=duration,
                         server=ctx.hub)
    with httpx.Client(timeout=120) as client:
        started = time.perf_counter()
        status_url = _kick_off(client, ctx)
        during = bench.run_wrk(ctx, label="read-during-export", url=ctx.hub_url, script=script, clients=16,
                               duration=duration, server=ctx.hub)
        reads_ended = time.perf_counter() - started
        _finished(client, ctx, status_url)
        export_seconds = time.perf_counter() - started
    return {"clients": 16, "seconds": round(duration, 1), "idle_rps": round(idle["rps"]), "during_rps": round(during["rps"]),
            "idle_p99_ms": idle.get("p99_ms"), "during_p99_ms": during.get("p99_ms"),
            "ratio": round(during["rps"] / idle["rps"], 3) if idle["rps"] else None,
            "export_outlasted_reads": export_seconds >= reads_ended, "export_seconds": round(export_seconds, 2),
            "errors": idle["error_count"] + during["error_count"]}


def _export(ctx, resources: int, pgid: int | None = None) -> dict:
    """One export timed from kick-off to manifest; `pgid`: the process group whose memory the
    export costs (the API's, or the exporter worker's)."""
    pgid = pgid or ctx.hub.pid
    baseline = _rss_mib(pgid)
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _rss_mib(pgid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with httpx.Client(timeout=120) as client:
        started = time.perf_counter()
        try:
            manifest, polls = _finished(client, ctx, _kick_off(client, ctx))
        finally:
            seconds = time.perf_counter() - started
            done.set()
            sampler.join()
        counted: dict[str, int] = {}
        ids: set[str] = set()
        duplicates = 0
        for item in manifest["output"]:
            body = client.get(item["url"], headers=ctx.hub_headers)
            for line in body.content.splitlines():
                resource = json.loads(line)
                key = f"{resource['resourceType']}/{resource['id']}"
                duplicates += key in ids
                ids.add(key)
                counted[item["type"]] = counted.get(item["type"], 0) + 1
    exported = sum(counted.values())
    return {"resources": exported, "by_type": counted, "files": len(manifest["output"]), "seconds": round(seconds, 2),
            "resources_per_s": round(exported / seconds), "polls": polls, "baseline_mib": round(baseline, 1),
            "peak_mib": round(peak[0], 1), "growth_mib": round(peak[0] - baseline, 1),
            "complete": exported == resources and duplicates == 0, "duplicates": duplicates}


def _hub_environment(ctx) -> dict[str, str]:
    """The environment the driver started `ipc-hub api` with (its database, broker, keys)."""
    raw = Path(f"/proc/{ctx.hub.pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def _as_up_runs_it(ctx, people: int, resources: int) -> dict:
    """The same export and reads with the export in an `ipc-hub worker exporter` process of its
    own (at HUB_EXPORT_NICENESS) and none in the API (HUB_EXPORT_IN_API=false): how `ipc-hub up`
    runs them. The driver's API is restarted so configured, and restarted as it was afterwards."""
    from tests.bench import run as bench

    env = _hub_environment(ctx)
    argv = list(ctx.hub.popen.args)
    original = ctx.hub
    original.stop()
    ctx.processes.remove(original)
    try:
        ctx.hub = ctx.start_process("hub-api-no-exports", argv, env={**env, "HUB_EXPORT_IN_API": "false"})
        bench.wait_http(f"{ctx.hub_url}/fhir/metadata", 90, ctx.hub)
        port = bench.free_port()
        exporter = ctx.start_process("exporter", [*argv[:-1], "worker", "exporter"],
                                     env={**env, "HUB_WORKER_HTTP_PORT": str(port)})
        bench.wait_http(f"http://127.0.0.1:{port}/readyz", 90, exporter)
        exported = _export(ctx, resources, pgid=exporter.pid)
        reads = _reads_beside_an_export(ctx, people, exported["seconds"])
        exported["worker_alive"] = exporter.alive()
        return {"export": exported, "reads": reads}
    finally:
        for proc in [p for p in ctx.processes if p.name in ("hub-api-no-exports", "exporter")]:
            proc.stop()
            ctx.processes.remove(proc)
        ctx.hub = ctx.start_process("hub-api", argv, env=env)
        bench.wait_http(f"{ctx.hub_url}/fhir/metadata", 90, ctx.hub)


def _raw_copy(database_url: str, work_dir: Path) -> dict:
    import psycopg

    path = work_dir / "raw-copy.ndjson"
    started = time.perf_counter()
    rows = 0
    with psycopg.connect(database_url) as conn, open(path, "wb") as out:
        with conn.cursor().copy("COPY (SELECT r.content::text FROM resource r WHERE r.res_type = ANY(%s) "
                                "AND NOT r.deleted) TO STDOUT", (list(TYPES),)) as copy:
            for data in copy:
                out.write(data)
                rows += bytes(data).count(b"\n")
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    path.unlink()
    return {"resources": rows, "seconds": round(seconds, 2), "resources_per_s": round(rows / seconds),
            "mib": round(size / 2**20, 1)}


# --- cohort evaluation ----------------------------------------------------------------------------

def _definition() -> dict:
    from tests.pipeline.cohort_cases import multiple_conditions

    return multiple_conditions("def-bench-mltc")


async def _evaluate(database_url: str, expected: set[str]) -> dict:
    from psycopg import AsyncConnection

    from hub.cohorts.definitions import read_definition
    from hub.cohorts.evaluate import evaluate
    from hub.cohorts.membership import active_members
    from hub.fhir import jsontext
    from hub.search.access import Access
    from hub.store.resources import read, update

    async with await AsyncConnection.connect(database_url) as conn:
        group = _definition()
        async with conn.transaction():
            await update(conn, "Group", group["id"], group, access=Access.system())
        definition = read_definition(group, 1)
        timings = []
        results = []
        for _ in range(2):   # the first writes the Group and every offer; the second finds no change
            started = time.perf_counter()
            async with conn.transaction():
                results.append(await evaluate(conn, definition))
            timings.append(time.perf_counter() - started)
        stored = jsontext.loads((await read(conn, "Group", results[0].cohort, access=Access.system())).content)
        members = set(active_members(stored))
        codes = list(LONG_TERM)
        started = time.perf_counter()
        cur = await conn.execute(
            "SELECT c.patient_id FROM resource c JOIN resource p ON p.res_type = 'Patient' AND p.res_id = c.patient_id"
            " AND NOT p.deleted AND coalesce((p.content::jsonb ->> 'deceasedBoolean')::boolean, false) = false"
            " WHERE c.res_type = 'Condition' AND NOT c.deleted"
            " AND c.content::jsonb #>> '{clinicalStatus,coding,0,code}' = 'active'"
            " AND c.content::jsonb #>> '{code,coding,0,code}' = ANY(%s)"
            " GROUP BY c.patient_id HAVING count(*) >= 2", [codes])
        raw = {row[0] for row in await cur.fetchall()}
        raw_seconds = time.perf_counter() - started
    return {"members": len(members), "expected": len(expected), "correct": members == expected == raw,
            "first_seconds": round(timings[0], 2), "again_seconds": round(timings[1], 2),
            "offers": len(results[0].offers), "changed_again": len(results[1].entered) + len(results[1].left),
            "raw_seconds": round(raw_seconds, 2), "ratio_first": round(raw_seconds / timings[0], 3),
            "ratio_again": round(raw_seconds / timings[1], 3)}


def run(ctx, args: argparse.Namespace) -> dict:
    people = getattr(args, "people", None) or (10_000 if ctx.quick else 100_000)
    loads = [os.getloadavg()]
    resources, expected, written = asyncio.run(_write(ctx.database_url, people))
    exported = _export(ctx, resources)
    reads = _reads_beside_an_export(ctx, people, exported["seconds"])
    raw = _raw_copy(ctx.database_url, ctx.work_dir)
    loads.append(os.getloadavg())
    up = _as_up_runs_it(ctx, people, resources)
    raw_again = _raw_copy(ctx.database_url, ctx.work_dir)
    loads.append(os.getloadavg())
    evaluated = asyncio.run(_evaluate(ctx.database_url, expected))
    loads.append(os.getloadavg())
    up_export = up["export"]
    return {"people": people, "resources": resources, "write_seconds": round(written, 1), "export": exported,
            "raw_copy": raw, "reads": reads, "ratio_export_to_copy": round(exported["resources_per_s"] / raw["resources_per_s"], 3),
            "up": {**up, "raw_copy": raw_again,
                   "ratio_export_to_copy": round(up_export["resources_per_s"] / raw_again["resources_per_s"], 3)},
            "memory_target_mib": MEMORY_TARGET_MIB, "cohort": evaluated,
            "load_average": [round(x[0], 1) for x in loads],
            "pass": exported["complete"] and exported["growth_mib"] < MEMORY_TARGET_MIB and evaluated["correct"]
            and up_export["complete"] and up_export["growth_mib"] < MEMORY_TARGET_MIB
            and evaluated["changed_again"] == 0}


def _print_reads(where: str, rd: dict) -> None:
    print(f"  reads by id, 16 clients, {rd['seconds']} s, export {where}: {rd['idle_rps']:,} req/s alone "
          f"(p99 {rd['idle_p99_ms']} ms), {rd['during_rps']:,} req/s while an export runs (p99 {rd['during_p99_ms']} ms): "
          f"ratio {rd['ratio']} (target ≥ {READ_RATIO_TARGET}: {'PASS' if (rd['ratio'] or 0) >= READ_RATIO_TARGET else 'FAIL'}); "
          f"the export outlasted the reads: {rd['export_outlasted_reads']}; errors {rd['errors']}")


def print_result(result: dict) -> bool:
    e, r, c = result["export"], result["raw_copy"], result["cohort"]
    print(f"  population: {result['people']:,} people, {result['resources']:,} resources (written in "
          f"{result['write_seconds']} s); 1-minute load average before, after the API's export, after the "
          f"worker's, after the cohort: {result['load_average']}")
    print(f"  {'':<52}{'resources/s':>12}{'seconds':>9}{'ours ÷ limit':>14}")
    print(f"  {'$export (system, 3 types), kick-off → manifest':<52}{e['resources_per_s']:>12,}{e['seconds']:>9.2f}"
          f"{result['ratio_export_to_copy']:>14.3f}")
    print(f"  {'limit: raw COPY … TO STDOUT of the same rows':<52}{r['resources_per_s']:>12,}{r['seconds']:>9.2f}")
    print(f"  export: {e['resources']:,} resources in {e['files']} files, {e['duplicates']} duplicates, "
          f"complete: {e['complete']}; API memory {e['baseline_mib']} MiB before, peak {e['peak_mib']} MiB "
          f"(+{e['growth_mib']} MiB; target < {result['memory_target_mib']} MiB)")
    _print_reads("in the API's thread (`ipc-hub api`)", result["reads"])
    u = result["up"]
    ue, ur = u["export"], u["raw_copy"]
    print("  as `ipc-hub up` runs it: the export in `ipc-hub worker exporter` (HUB_EXPORT_IN_API=false in the API)")
    print(f"  {'$export, kick-off → manifest':<52}{ue['resources_per_s']:>12,}{ue['seconds']:>9.2f}"
          f"{u['ratio_export_to_copy']:>14.3f}")
    print(f"  {'limit: raw COPY … TO STDOUT, again':<52}{ur['resources_per_s']:>12,}{ur['seconds']:>9.2f}")
    print(f"  export: {ue['resources']:,} resources in {ue['files']} files, {ue['duplicates']} duplicates, "
          f"complete: {ue['complete']}; exporter memory {ue['baseline_mib']} MiB before, peak {ue['peak_mib']} MiB "
          f"(+{ue['growth_mib']} MiB; target < {result['memory_target_mib']} MiB)")
    _print_reads("with the export in the exporter worker", u["reads"])
    print(f"  {'':<52}{'seconds':>9}{'limit ÷ ours':>14}")
    print(f"  {'cohort evaluation, first (Group + ' + format(c['offers'], ',') + ' offers)':<52}"
          f"{c['first_seconds']:>9.2f}{c['ratio_first']:>14.3f}")
    print(f"  {'cohort evaluation again (nothing changed)':<52}{c['again_seconds']:>9.2f}{c['ratio_again']:>14.3f}")
    print(f"  {'limit: one SQL pass finding the same people':<52}{c['raw_seconds']:>9.2f}")
    print(f"  members {c['members']:,} (built to be {c['expected']:,}): {'PASS' if c['correct'] else 'FAIL'}; "
          f"overall {'PASS' if result['pass'] else 'FAIL'}")
    return result["pass"]
