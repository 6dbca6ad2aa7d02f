"""Section `audit`: what recording an AuditEvent for every request costs, and proof that none is
lost under load.

The secured hub (`ipc-hub api`, audit on) is compared with a second `ipc-hub api` on the same
database that differs only in HUB_AUDIT_ENABLED=false (authorisation and consent still on), so
the difference is the audit middleware and its background writer alone. After each audited run
the section waits for the writer to catch up and checks that the audit table gained at least one
row per answered request (wrk may cut requests off mid-flight, so a few more rows than counted
answers is normal; fewer would be a loss), and reports how long the backlog took to drain.
Target: audit costs at most 10% of read throughput (AUDIT_TARGET)."""
from __future__ import annotations

import argparse
import asyncio
import sys
import time

import psycopg


def _bench():
    """tests.bench.run, imported when the section runs: it imports this module to register it."""
    from tests.bench import run

    return run


AUDIT_TARGET = 0.9  # audited read req/s ≥ 0.9 × the same hub's req/s with audit off
PATIENTS = 200
DRAIN_TIMEOUT_S = 60.0


def _audit_rows(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM audit_event").fetchone()[0]


def _start_unaudited_hub(ctx, log_level: str | None):
    bench = _bench()
    exe = bench.VENV_BIN / "ipc-hub"
    argv = [str(exe), "api"] if exe.exists() else [
        sys.executable, "-c", "import sys; from hub.cli.main import main; sys.argv[0] = 'ipc-hub'; sys.exit(main())",
        "api",
    ]
    port = bench.free_port()
    env = bench.hub_env(ctx, port, None, log_level)
    env.update({"HUB_AUDIT_ENABLED": "false", "HUB_DATA_DIR": str(ctx.work_dir / "hub-unaudited-data")})
    proc = ctx.start_process("hub-api-unaudited", argv, env=env)
    url = f"http://127.0.0.1:{port}"
    bench.wait_http(f"{url}/fhir/metadata", 90, proc)
    return proc, url


def _drain(database_url: str, expected: int) -> tuple[int, float]:
    """(rows written, seconds until at least `expected` were) once the load has stopped."""
    bench = _bench()
    started = time.monotonic()
    while True:
        rows = _audit_rows(database_url)
        if rows >= expected:
            return rows, time.monotonic() - started
        if time.monotonic() - started > DRAIN_TIMEOUT_S:
            raise bench.BenchError(f"audit: only {rows} of {expected} records written {DRAIN_TIMEOUT_S:.0f} s "
                             "after the load stopped")
        time.sleep(0.05)


def run(ctx, args: argparse.Namespace) -> dict:
    """`ctx` is the driver's BenchContext."""
    bench = _bench()
    if ctx.hub_url is None:
        raise bench.BenchError("the audit section needs the hub (not --bare-only)")
    print(f"  seeding {PATIENTS} Patients through the hub's API ...", flush=True)
    patients, _ = asyncio.run(bench._seed_via_hub(ctx.hub_url, PATIENTS, auth=ctx.hub_headers))
    unaudited, unaudited_url = _start_unaudited_hub(ctx, args.hub_log_level)

    scripts = ctx.out_dir / "wrk"
    scenarios = [
        ("audited-read", "read, audit on", ctx.hub_url, ctx.hub,
         bench.write_wrk_script(scripts / "audited-read.lua", "/fhir/Patient/%s", patients, ctx.hub_headers)),
        ("unaudited-read", "read, audit off", unaudited_url, unaudited,
         bench.write_wrk_script(scripts / "unaudited-read.lua", "/fhir/Patient/%s", patients, ctx.hub_headers)),
    ]
    # Warmed at the most clients measured, so both pools reach their maximum (see section http).
    for key, _, url, server, script in scenarios:
        bench.run_wrk(ctx, label=f"warmup-{key}", url=url, script=script, clients=max(16, *ctx.clients),
                duration=1.0 if ctx.quick else 2.0, server=server, record=False)

    samples: dict[tuple[str, int], list[dict]] = {}
    drains = []
    for round_no in range(1, ctx.rounds + 1):
        for clients in ctx.clients:
            for key, title, url, server, script in scenarios:
                before = _audit_rows(ctx.database_url) if key == "audited-read" else 0
                print(f"  {title:<18} {clients:>3} clients ...", end="", flush=True)
                result = bench.run_wrk(ctx, label=f"{key}-r{round_no}", url=url, script=script, clients=clients,
                                 duration=ctx.duration, server=server)
                samples.setdefault((key, clients), []).append(result)
                note = ""
                if key == "audited-read":
                    rows, seconds = _drain(ctx.database_url, before + result["requests"])
                    drains.append({"clients": clients, "requests": result["requests"],
                                   "rows": rows - before, "drain_s": round(seconds, 3)})
                    note = f"  {rows - before} audit rows, drained in {seconds:.2f} s"
                print(f" {result['rps']:>9.1f} req/s  p99 {result['p99_ms']:.2f} ms{note}", flush=True)

    runs = [{"scenario": key, "title": title, **bench.median_of_rounds(samples[(key, clients)])}
            for clients in ctx.clients for key, title, *_ in scenarios]
    by = {(r["scenario"], r["clients"]): r for r in runs}
    ratios = []
    for clients in ctx.clients:
        on, off = by[("audited-read", clients)], by[("unaudited-read", clients)]
        if off["rps"]:
            ratio = on["rps"] / off["rps"]
            ratios.append({"clients": clients, "audited_rps": on["rps"], "unaudited_rps": off["rps"],
                           "ratio": round(ratio, 3), "target": f">= {AUDIT_TARGET}",
                           "pass": ratio >= AUDIT_TARGET})
    return {"runs": runs, "ratios": ratios, "drains": drains,
            "lost": sum(max(0, d["requests"] - d["rows"]) for d in drains)}


def print_result(result: dict) -> bool:
    all_pass = result["lost"] == 0
    print(f"  {'read':<12}{'clients':>8}{'audit on':>10}{'audit off':>11}{'ratio':>8}{'target':>9}"
          f"   cpu cores on/off: hub, pg")
    cpu = {(r["scenario"], r["clients"]): r["cpu_cores"] for r in result["runs"]}
    for q in result["ratios"]:
        all_pass &= q["pass"]
        on, off = cpu[("audited-read", q["clients"])], cpu[("unaudited-read", q["clients"])]
        print(f"  {'':<12}{q['clients']:>8}{q['audited_rps']:>10.1f}{q['unaudited_rps']:>11.1f}{q['ratio']:>8.2f}"
              f"{'≥ ' + str(AUDIT_TARGET):>9}{'PASS' if q['pass'] else 'FAIL':>7}"
              f"   {on['server']:.2f}/{off['server']:.2f}, {on['postgres']:.2f}/{off['postgres']:.2f}")
    errors = sum(r["error_count"] for r in result["runs"])
    if errors:
        all_pass = False
        print(f"\n  {errors} requests failed (non-2xx or socket errors): see .bench/logs/wrk-*.log")
    worst = max((d["drain_s"] for d in result["drains"]), default=0.0)
    print(f"\n  audit rows vs answered requests: {result['lost']} lost; "
          f"longest drain after a run {worst:.2f} s")
    return all_pass
