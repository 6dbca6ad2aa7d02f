"""Section `security`: what the whole security stack costs on the read path, as issue 7 asks
("authorisation, consent and audit on: at most 20% of the unsecured throughput").

The secured hub (`ipc-hub api` as deployed: bearer tokens checked, rate limit, security headers,
SMART scopes and consent, audit) is compared with a second `ipc-hub api` on the same database
with HUB_AUTH_ENABLED=false and HUB_AUDIT_ENABLED=false. Both serve the same reads by id and
CarePlan searches; the secured one gets the bench's full-access token. Before anything is timed
each scenario must answer what it should (a read finds the Patient, a search finds the plan).
Target: secured req/s ≥ 0.8 × open req/s, for reads and for searches (SECURITY_TARGET)."""
from __future__ import annotations

import argparse
import asyncio
import sys

SECURITY_TARGET = 0.8
PATIENTS = 200


def _bench():
    """tests.bench.run, imported when the section runs: it imports this module to register it."""
    from tests.bench import run

    return run


def _start_open_hub(ctx, log_level: str | None):
    bench = _bench()
    exe = bench.VENV_BIN / "ipc-hub"
    argv = [str(exe), "api"] if exe.exists() else [
        sys.executable, "-c", "import sys; from hub.cli.main import main; sys.argv[0] = 'ipc-hub'; sys.exit(main())",
        "api",
    ]
    port = bench.free_port()
    env = bench.hub_env(ctx, port, None, log_level)
    env.update({"HUB_AUTH_ENABLED": "false", "HUB_AUDIT_ENABLED": "false",
                "HUB_DATA_DIR": str(ctx.work_dir / "hub-open-data")})
    proc = ctx.start_process("hub-api-open", argv, env=env)
    url = f"http://127.0.0.1:{port}"
    bench.wait_http(f"{url}/fhir/metadata", 90, proc)
    return proc, url


def _check(url: str, headers: dict[str, str], patient_id: str, active_id: str) -> None:
    """Both hubs must answer the timed requests correctly, or the comparison means nothing."""
    import httpx

    bench = _bench()
    read = httpx.get(f"{url}/fhir/Patient/{patient_id}", headers=headers, timeout=10)
    if read.status_code != 200 or read.json().get("id") != patient_id:
        raise bench.BenchError(f"security: read on {url} → {read.status_code} {read.text[:300]}")
    search = httpx.get(f"{url}/fhir/CarePlan", params={"subject": f"Patient/{active_id}", "status": "active"},
                       headers=headers, timeout=10)
    matches = [e for e in search.json().get("entry", [])
               if e.get("search", {}).get("mode", "match") == "match"] if search.status_code == 200 else []
    if len(matches) != 1:
        raise bench.BenchError(f"security: search on {url} → {search.status_code} {search.text[:300]}")


def run(ctx, args: argparse.Namespace) -> dict:
    """`ctx` is the driver's BenchContext."""
    bench = _bench()
    if ctx.hub_url is None:
        raise bench.BenchError("the security section needs the hub (not --bare-only)")
    print(f"  seeding {PATIENTS} Patients and CarePlans through the hub's API ...", flush=True)
    patients, active = asyncio.run(bench._seed_via_hub(ctx.hub_url, PATIENTS, auth=ctx.hub_headers))
    bench.analyze(ctx.database_url)
    open_hub, open_url = _start_open_hub(ctx, args.hub_log_level)
    _check(ctx.hub_url, ctx.hub_headers, patients[0], active[0])
    _check(open_url, {}, patients[0], active[0])

    scripts = ctx.out_dir / "wrk"
    search = "/fhir/CarePlan?subject=Patient/%s&status=active"
    scenarios = [
        ("secured-read", "read, secured", ctx.hub_url, ctx.hub,
         bench.write_wrk_script(scripts / "secured-read.lua", "/fhir/Patient/%s", patients, ctx.hub_headers)),
        ("open-read", "read, open", open_url, open_hub,
         bench.write_wrk_script(scripts / "open-read.lua", "/fhir/Patient/%s", patients)),
        ("secured-search", "search, secured", ctx.hub_url, ctx.hub,
         bench.write_wrk_script(scripts / "secured-search.lua", search, active, ctx.hub_headers)),
        ("open-search", "search, open", open_url, open_hub,
         bench.write_wrk_script(scripts / "open-search.lua", search, active)),
    ]
    for key, _, url, server, script in scenarios:
        bench.run_wrk(ctx, label=f"warmup-{key}", url=url, script=script, clients=16,
                      duration=1.0 if ctx.quick else 2.0, server=server, record=False)

    samples: dict[tuple[str, int], list[dict]] = {}
    for round_no in range(1, ctx.rounds + 1):
        for clients in ctx.clients:
            for key, title, url, server, script in scenarios:
                print(f"  {title:<18} {clients:>3} clients ...", end="", flush=True)
                result = bench.run_wrk(ctx, label=f"{key}-r{round_no}", url=url, script=script, clients=clients,
                                       duration=ctx.duration, server=server)
                samples.setdefault((key, clients), []).append(result)
                print(f" {result['rps']:>9.1f} req/s  p99 {result['p99_ms']:.2f} ms", flush=True)

    runs = [{"scenario": key, "title": title, **bench.median_of_rounds(samples[(key, clients)])}
            for clients in ctx.clients for key, title, *_ in scenarios]
    by = {(r["scenario"], r["clients"]): r for r in runs}
    ratios = []
    for kind in ("read", "search"):
        for clients in ctx.clients:
            on, off = by[(f"secured-{kind}", clients)], by[(f"open-{kind}", clients)]
            if off["rps"]:
                ratio = on["rps"] / off["rps"]
                ratios.append({"kind": kind, "clients": clients, "secured_rps": on["rps"], "open_rps": off["rps"],
                               "ratio": round(ratio, 3), "target": f">= {SECURITY_TARGET}",
                               "pass": ratio >= SECURITY_TARGET,
                               "errors": on["error_count"] + off["error_count"]})
    return {"runs": runs, "ratios": ratios}


def print_result(result: dict) -> bool:
    all_pass = True
    print(f"  {'':<8}{'clients':>8}{'secured':>10}{'open':>10}{'ratio':>8}{'target':>9}")
    for q in result["ratios"]:
        passed = q["pass"] and q["errors"] == 0
        all_pass &= passed
        print(f"  {q['kind']:<8}{q['clients']:>8}{q['secured_rps']:>10.1f}{q['open_rps']:>10.1f}{q['ratio']:>8.2f}"
              f"{'≥ ' + str(SECURITY_TARGET):>9}{'PASS' if passed else 'FAIL':>7}"
              f"{'' if not q['errors'] else '  ' + str(q['errors']) + ' errors'}")
    return all_pass
