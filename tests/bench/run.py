"""`make bench`: the hub's performance, measured on this machine against a limit measured in the
same run, section by section.

    python -m tests.bench.run                     # every section
    python -m tests.bench.run --section http      # one section (repeatable)
    python -m tests.bench.run --quick             # shorter runs, for a smoke test
    python -m tests.bench.run --bare-only         # the limit alone (no hub needed)

It starts everything it measures, in a temporary folder: an embedded PostgreSQL (migrated), the
Tansu Kafka-protocol broker and `ipc-hub api`, seeds data through the hub's own API, runs each
section's load with `wrk`, prints a table and writes `.bench/results-<section>.json`. Everything
it started is stopped on the way out, on error and on Ctrl-C too.

Sections register themselves in SECTIONS; a section gets a BenchContext (database, hub URL,
a way to start more processes that are stopped with the rest) and returns its results.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

warnings.filterwarnings("ignore", module="platformdirs.*")

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / ".bench"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The bench could not run; the message says why and what to do."""


# --- processes ------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the driver dies, even by kill -9."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the whole process group (uvicorn workers, wrk threads), SIGKILL if it lingers."""
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _process_cpu() -> Iterator[tuple[int, int, int, float]]:
    """(pid, parent pid, process group, user + system CPU seconds) of every live process, from /proc."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        yield int(entry.name), int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_of_group(pgid: int) -> float:
    """CPU seconds of every live process in a process group."""
    return sum(cpu for _, _, group, cpu in _process_cpu() if group == pgid)


def cpu_seconds_of_tree(root_pid: int) -> float:
    """CPU seconds of a process and its direct children (the postmaster and its backends)."""
    return sum(cpu for pid, parent, _, cpu in _process_cpu() if root_pid in (pid, parent))


# --- the context every section gets ---------------------------------------------------------------

@dataclass
class BenchContext:
    work_dir: Path                  # temporary: the database, process data; removed at the end
    out_dir: Path                   # .bench: results, logs, generated wrk scripts
    duration: float                 # seconds per measured run
    clients: list[int]
    quick: bool
    rounds: int = 1                 # measured runs per figure (the median is reported)
    database_url: str = ""
    hub_url: str | None = None      # None with --bare-only
    hub: Proc | None = None
    # Sent with every request to the hub: a full-access bearer token (authorisation is on, as in production).
    hub_headers: dict[str, str] = field(default_factory=dict)
    # The same hub with authorisation, consent and audit off, to price security (section http).
    open_url: str | None = None
    open_hub: Proc | None = None
    postmaster_pid: int | None = None
    processes: list[Proc] = field(default_factory=list)

    def start_process(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                      cwd: Path = ROOT) -> Proc:
        """A child in its own process group, logged to .bench/logs/<name>.log, stopped at exit."""
        log_dir = self.out_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                env=env if env is not None else dict(os.environ),
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        proc = Proc(name, popen, log_path)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        while self.processes:
            proc = self.processes.pop()
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {proc.name}: {exc}", file=sys.stderr)

    def cpu_probe(self, server: Proc) -> Callable[[], dict[str, float]]:
        """Call before a run; call the result after it for CPU seconds spent meanwhile."""
        def sample() -> tuple[float, float]:
            pg = cpu_seconds_of_tree(self.postmaster_pid) if self.postmaster_pid else 0.0
            return cpu_seconds_of_group(server.pid), pg

        before = sample()

        def after() -> dict[str, float]:
            now = sample()
            return {"server": now[0] - before[0], "postgres": now[1] - before[1]}

        return after


def wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise BenchError(
                f"{proc.name} exited with code {proc.popen.returncode} before {url} answered;"
                f" its log ({proc.log_path}) ends:\n{proc.log_tail()}"
            )
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f}s (last: {last})")


# --- wrk ------------------------------------------------------------------------------------------

WRK_MISSING = (
    "wrk is not installed. It is the load generator (Debian package `wrk`): run "
    "`apt-get update && apt-get install -y wrk` as root (`make bench` does this when run as root)."
)

_LUA = r"""-- generated by tests/bench/run.py: GET a random one of the given ids per request
local ids = {%(ids)s}
local template = %(template)s
local headers = {%(headers)s}
local requests_ = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
  math.random(); math.random()
  -- every request built once: request() then costs wrk next to nothing
  for i, id in ipairs(ids) do
    requests_[i] = wrk.format("GET", string.format(template, id), headers)
  end
end

function request()
  return requests_[math.random(#requests_)]
end

"""

# Every generated wrk script ends with this: one JSON line the driver reads (run_wrk).
LUA_SUMMARY = r"""function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},' ..
    '"latency_us":{"min":%.1f,"mean":%.1f,"p50":%.1f,"p75":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise BenchError(WRK_MISSING)
    return found


def wrk_version() -> str:
    result = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True)
    match = re.search(r"wrk\s+(\S+)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def write_wrk_script(path: Path, template: str, ids: list[str], headers: dict[str, str] | None = None) -> Path:
    def lua_string(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    sent = {"Accept": "application/fhir+json", **(headers or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_LUA % {"ids": ", ".join(lua_string(i) for i in ids), "template": lua_string(template),
                            "headers": ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in sent.items())}
                    + LUA_SUMMARY)
    return path


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk_text(text: str) -> dict:
    """Requests/sec and the --latency percentiles from wrk's own report (a check on the Lua figures)."""
    parsed: dict = {}
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if match:
        parsed["rps"] = float(match.group(1))
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
        parsed[f"p{pct}_ms"] = float(value) * _UNITS_MS[unit]
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    parsed["non2xx"] = int(match.group(1)) if match else 0
    return parsed


def run_wrk(ctx: BenchContext, *, label: str, url: str, script: Path, clients: int,
            duration: float, server: Proc, record: bool = True) -> dict:
    """One wrk run; returns req/s, latency percentiles (ms), errors and the CPU each side used."""
    threads = min(2, clients)
    argv = [wrk_binary(), "-t", str(threads), "-c", str(clients), "-d", f"{duration:g}s",
            "--latency", "--timeout", "10s", "-s", str(script), url]
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after = ctx.cpu_probe(server)
    started = time.monotonic()
    proc = ctx.start_process(f"wrk-{label}-c{clients}", argv)
    try:
        proc.popen.wait(duration + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk ({label}, {clients} clients) did not finish; see {proc.log_path}") from None
    finally:
        proc.stop()
        ctx.processes.remove(proc)
    wall = time.monotonic() - started
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after()
    text = proc.log_path.read_text(errors="replace")
    if not record:
        proc.log_path.unlink(missing_ok=True)
    if proc.popen.returncode != 0:
        raise BenchError(f"wrk failed (exit {proc.popen.returncode}) for {url}:\n{text[-2000:]}")
    line = next((l for l in text.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise BenchError(f"wrk printed no summary for {url}:\n{text[-2000:]}")
    raw = json.loads(line.split(" ", 1)[1])
    seconds = raw["duration_us"] / 1e6
    wrk_cpu = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    errors = raw["errors"]
    lat = raw["latency_us"]
    text_figures = parse_wrk_text(text)
    return {
        "clients": clients,
        "threads": threads,
        "duration_s": round(seconds, 3),
        "requests": int(raw["requests"]),
        "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "p50_ms": round(lat["p50"] / 1000, 3),
        "p75_ms": round(lat["p75"] / 1000, 3),
        "p90_ms": round(lat["p90"] / 1000, 3),
        "p99_ms": round(lat["p99"] / 1000, 3),
        "p999_ms": round(lat["p999"] / 1000, 3),
        "max_ms": round(lat["max"] / 1000, 3),
        "mean_ms": round(lat["mean"] / 1000, 3),
        "errors": {k: int(v) for k, v in errors.items()},
        "error_count": int(sum(errors.values())),
        # CPU used during the run, in cores (1.0 = one core busy the whole time)
        "cpu_cores": {
            "server": round(cpu["server"] / wall, 2),
            "postgres": round(cpu["postgres"] / wall, 2),
            "wrk": round(wrk_cpu / wall, 2),
        },
        "wrk_report": text_figures,
    }


# --- the stack: PostgreSQL, broker, hub -------------------------------------------------------------

def hub_env(ctx: BenchContext, port: int, kafka_bootstrap: str | None, log_level: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k == "HUB_ID_KEY_FILE"}
    env.update({
        "HUB_DATABASE_URL": ctx.database_url,
        "HUB_HTTP_HOST": "127.0.0.1",
        "HUB_HTTP_PORT": str(port),
        "HUB_HTTP_WORKERS": "1",
        "HUB_DATA_DIR": str(ctx.work_dir / "hub-data"),
        "HUB_AUTH_SIGNING_KEY_FILE": str(bench_signing_key(ctx)),
        # One issuer and audience for every hub the bench starts, so the bench token works on each.
        "HUB_AUTH_ISSUER": BENCH_ISSUER, "HUB_AUTH_AUDIENCE": f"{BENCH_ISSUER}/fhir",
        # The rate limiter runs (its cost is measured) but never refuses the load generator.
        "HUB_RATE_LIMIT_RPS": "1000000000", "HUB_RATE_LIMIT_BURST": "1000000000",
    })
    if log_level:
        env["HUB_LOG_LEVEL"] = log_level
    if kafka_bootstrap:
        env["HUB_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    return env


def start_hub(ctx: BenchContext, kafka_bootstrap: str | None, log_level: str | None) -> None:
    exe = VENV_BIN / "ipc-hub"
    argv = [str(exe), "api"] if exe.exists() else [
        sys.executable, "-c", "import sys; from hub.cli.main import main; sys.argv[0] = 'ipc-hub'; sys.exit(main())",
        "api",
    ]
    port = free_port()
    ctx.hub = ctx.start_process("hub-api", argv, env=hub_env(ctx, port, kafka_bootstrap, log_level))
    ctx.hub_url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{ctx.hub_url}/fhir/metadata", 90, ctx.hub)
    except BenchError as exc:
        raise BenchError(f"`ipc-hub api` did not come up: {exc}\n(--bare-only measures the limit alone)") from None
    ctx.hub_headers = {"Authorization": f"Bearer {bench_token(ctx)}"}


def start_open_hub(ctx: BenchContext) -> None:
    """A second `ipc-hub api` on the same database with HUB_AUTH_ENABLED and HUB_AUDIT_ENABLED
    off: no token check, no scopes, no consent filter, no AuditEvents. Section http compares
    the secured hub's figures with it (SECURED_TARGET)."""
    exe = VENV_BIN / "ipc-hub"
    argv = [str(exe), "api"] if exe.exists() else [
        sys.executable, "-c", "import sys; from hub.cli.main import main; sys.argv[0] = 'ipc-hub'; sys.exit(main())",
        "api",
    ]
    port = free_port()
    env = hub_env(ctx, port, None, None)
    env.update({"HUB_AUTH_ENABLED": "false", "HUB_AUDIT_ENABLED": "false",
                "HUB_DATA_DIR": str(ctx.work_dir / "hub-open-data")})
    ctx.open_hub = ctx.start_process("hub-api-open", argv, env=env)
    ctx.open_url = f"http://127.0.0.1:{port}"
    wait_http(f"{ctx.open_url}/fhir/metadata", 90, ctx.open_hub)


BENCH_ISSUER = "http://127.0.0.1:8080"


def bench_signing_key(ctx: BenchContext) -> Path:
    """The hub's token signing key (HUB_AUTH_SIGNING_KEY_FILE), made once per run."""
    path = ctx.work_dir / "signing-key.jwks"
    if not path.exists():
        from hub.auth.tokens import generate_signing_key

        path.write_text(json.dumps({"keys": [generate_signing_key().as_dict(private=True)]}))
        path.chmod(0o600)
    return path


def bench_token(ctx: BenchContext) -> str:
    """A full-access token (partner class nhs, system/*.cruds) for the whole run, as the token
    endpoint would issue it, signed with the hub's key."""
    from hub.auth.keys import load_signing_keys
    from hub.auth.tokens import TokenRequest, issue_access_token

    keys = load_signing_keys(bench_signing_key(ctx), ctx.work_dir)
    token, _ = issue_access_token(keys.signing, TokenRequest(
        client_id="bench", organisation="RX1", organisation_system="https://fhir.nhs.uk/Id/ods-organization-code",
        partner_class="nhs", scopes=("system/*.cruds",)), issuer=BENCH_ISSUER, audience=f"{BENCH_ISSUER}/fhir",
        lifetime_s=24 * 3600)
    return token


# --- section http: read by id and CarePlan search against the bare endpoint -------------------------

READ_THROUGHPUT_TARGET = 0.7   # hub read req/s ≥ 0.7 × bare read req/s
READ_P99_TARGET = 1.5          # hub read p99 ≤ 1.5 × bare read p99
SECURED_TARGET = 0.8           # with authorisation + consent + audit: req/s ≥ 0.8 × the same hub without

GIVEN = ["Olivia", "Amelia", "Isla", "Ava", "Mia", "Noah", "Oliver", "George", "Arthur", "Leo",
         "Harry", "Freya", "Lily", "Grace", "Jack", "Alfie", "Evie", "Rosie", "Thomas", "Ivy"]
FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
          "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall"]
CATEGORIES = [
    ("736366004", "Personalised care and support plan"),
    ("735321000", "Surgical inpatient care plan"),
    ("773130005", "Nursing care plan"),
    ("736371005", "Mental health crisis plan"),
]


def nhs_number(n: int) -> str:
    """A valid-checksum NHS number in the 999 test range."""
    for tail in range(n, n + 20):
        digits = f"999{tail % 10**6:06d}"
        total = sum(int(d) * w for d, w in zip(digits, range(10, 1, -1)))
        check = 11 - total % 11
        if check == 11:
            check = 0
        if check != 10:
            return digits + str(check)
    raise AssertionError("unreachable")


def make_patient(i: int) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs_number(i * 7)}],
        "active": True,
        "name": [{"use": "official", "family": FAMILY[i % len(FAMILY)],
                  "given": [GIVEN[i % len(GIVEN)], GIVEN[(i * 7 + 3) % len(GIVEN)]]}],
        "telecom": [{"system": "phone", "value": f"07700 9{i % 100000:05d}", "use": "mobile"}],
        "gender": ["female", "male", "other", "unknown"][i % 4],
        "birthDate": f"{1935 + i % 70}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "address": [{"use": "home", "line": [f"{1 + i % 200} High Street"], "city": "Leeds",
                     "postalCode": f"LS{1 + i % 28} {i % 10}AB", "country": "GB"}],
    }


def careplan_status(i: int) -> str:
    return "draft" if i % 4 == 0 else "active"  # three in four active


def make_careplan(i: int, patient_id: str) -> dict:
    code, display = CATEGORIES[i % len(CATEGORIES)]
    return {
        "resourceType": "CarePlan",
        "status": careplan_status(i),
        "intent": "plan",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}],
        "title": f"{display} {i}",
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": f"2025-{1 + i % 12:02d}-01"},
        "description": "Agreed with the person and their family; reviewed every six months.",
    }


def _created_id(response, resource_type: str) -> str:
    if response.status_code not in (200, 201):
        raise BenchError(
            f"seeding: POST /fhir/{resource_type} answered {response.status_code}: {response.text[:500]}"
        )
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("id"):
            return body["id"]
    except ValueError:
        pass
    location = response.headers.get("location", "")
    match = re.search(rf"{resource_type}/([A-Za-z0-9\-.]{{1,64}})", location)
    if not match:
        raise BenchError(f"seeding: POST /fhir/{resource_type} gave neither a body id nor a Location")
    return match.group(1)


async def _seed_via_hub(base: str, count: int, concurrency: int = 16,
                        auth: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    import httpx

    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", **(auth or {})}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:
        async def post(resource_type: str, body: dict) -> str:
            async with gate:
                response = await client.post(f"/fhir/{resource_type}", content=json.dumps(body))
            return _created_id(response, resource_type)

        patients = await asyncio.gather(*(post("Patient", make_patient(i)) for i in range(count)))
        await asyncio.gather(*(post("CarePlan", make_careplan(i, pid)) for i, pid in enumerate(patients)))
    active = [pid for i, pid in enumerate(patients) if careplan_status(i) == "active"]
    return list(patients), active


def seed_via_sql(database_url: str, count: int) -> list[str]:
    """--bare-only: Patient rows written straight into the store (no hub to write them)."""
    import uuid

    import psycopg

    ids = [str(uuid.uuid4()) for _ in range(count)]
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO resource (res_type, res_id, version, last_updated, content)"
            " VALUES ('Patient', %s, 1, now(), %s::jsonb)",
            [(rid, json.dumps({**make_patient(i), "id": rid, "meta": {"versionId": "1"}}))
             for i, rid in enumerate(ids)],
        )
    return ids


def analyze(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def sanity_check_http(ctx: BenchContext, bare_url: str, patient_id: str, active_id: str | None) -> dict[str, str]:
    """Every endpoint must answer what it should before it is timed. The bare app must; a hub
    scenario that does not is left out of the timings and reported (scenario -> why)."""
    import httpx

    bare = httpx.get(f"{bare_url}/Patient/{patient_id}", timeout=10)
    if bare.status_code != 200 or bare.json().get("id") != patient_id:
        raise BenchError(f"bare app: GET /Patient/{patient_id} → {bare.status_code} {bare.text[:300]}")
    broken: dict[str, str] = {}
    if ctx.hub_url is None:
        return broken
    hub = httpx.get(f"{ctx.hub_url}/fhir/Patient/{patient_id}", timeout=10, headers=ctx.hub_headers)
    if hub.status_code != 200 or hub.json().get("id") != patient_id:
        broken["hub-read"] = f"GET /fhir/Patient/{patient_id} → {hub.status_code} {hub.text[:300]}"
    search = httpx.get(f"{ctx.hub_url}/fhir/CarePlan",
                       params={"subject": f"Patient/{active_id}", "status": "active"}, timeout=10,
                       headers=ctx.hub_headers)
    body = search.json() if search.status_code == 200 else {}
    found = [e.get("resource", {}) for e in body.get("entry", [])
             if e.get("search", {}).get("mode", "match") == "match"]
    if search.status_code != 200 or len(found) != 1 or found[0].get("resourceType") != "CarePlan":
        broken["hub-search"] = (
            f"GET /fhir/CarePlan?subject=Patient/{active_id}&status=active should find one plan;"
            f" got {search.status_code} with {len(found)}: {search.text[:300]}"
        )
    if ctx.open_url is not None:
        refused = httpx.get(f"{ctx.hub_url}/fhir/Patient/{patient_id}", timeout=10)
        if refused.status_code != 401:
            broken["hub-read"] = f"the secured hub answered {refused.status_code} to a read without a token"
        unsecured = httpx.get(f"{ctx.open_url}/fhir/Patient/{patient_id}", timeout=10)
        if unsecured.status_code != 200:
            broken["open-read"] = f"the unsecured hub answered {unsecured.status_code}: {unsecured.text[:300]}"
    return broken


def median_of_rounds(rounds: list[dict]) -> dict:
    """One figure per measure: the median over rounds; errors added up; every round kept."""
    from statistics import median

    first = rounds[0]
    merged = {"clients": first["clients"], "threads": first["threads"], "rounds": len(rounds)}
    for key in ("rps", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms"):
        merged[key] = round(median(r[key] for r in rounds), 3)
    merged["max_ms"] = max(r["max_ms"] for r in rounds)
    merged["requests"] = sum(r["requests"] for r in rounds)
    merged["errors"] = {k: sum(r["errors"][k] for r in rounds) for k in first["errors"]}
    merged["error_count"] = sum(r["error_count"] for r in rounds)
    merged["rps_spread"] = round((max(r["rps"] for r in rounds) - min(r["rps"] for r in rounds))
                                 / merged["rps"], 3) if merged["rps"] else 0.0
    merged["cpu_cores"] = {k: round(median(r["cpu_cores"][k] for r in rounds), 2) for k in first["cpu_cores"]}
    merged["per_round"] = [
        {k: r[k] for k in ("rps", "p50_ms", "p99_ms", "requests", "error_count", "cpu_cores", "wrk_report")}
        for r in rounds
    ]
    return merged


def section_http(ctx: BenchContext, args: argparse.Namespace) -> dict:
    count = args.patients
    seeded_started = time.monotonic()
    if ctx.hub_url is not None:
        print(f"  seeding {count} Patients and {count} CarePlans through the hub's API ...", flush=True)
        patients, active = asyncio.run(_seed_via_hub(ctx.hub_url, count, auth=ctx.hub_headers))
    else:
        print(f"  seeding {count} Patients straight into the store (--bare-only) ...", flush=True)
        patients, active = seed_via_sql(ctx.database_url, count), []
    seed_seconds = time.monotonic() - seeded_started
    analyze(ctx.database_url)
    if ctx.hub_url is not None and ctx.open_url is None:
        start_open_hub(ctx)
    print(f"  seeded in {seed_seconds:.1f}s", flush=True)

    bare_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k == "HUB_ID_KEY_FILE"}
    env["BENCH_DATABASE_URL"] = ctx.database_url
    bare_argv = [sys.executable, "-m", "tests.bench.bare_app", "--port", str(bare_port)]
    if not args.bare_no_gc_freeze:
        bare_argv.append("--gc-freeze")
    bare = ctx.start_process("bare-app", bare_argv, env=env)
    bare_url = f"http://127.0.0.1:{bare_port}"
    wait_http(f"{bare_url}/Patient/{patients[0]}", 30, bare)
    broken = sanity_check_http(ctx, bare_url, patients[0], active[0] if active else None)
    for key, why in broken.items():
        print(f"  NOT MEASURED {key}: {why}", flush=True)

    scripts = ctx.out_dir / "wrk"
    scenarios = [("bare-read", "bare read (limit)", bare_url, bare,
                  write_wrk_script(scripts / "bare-read.lua", "/Patient/%s", patients))]
    if ctx.hub_url is not None:
        scenarios += [
            ("hub-read", "hub read", ctx.hub_url, ctx.hub,
             write_wrk_script(scripts / "hub-read.lua", "/fhir/Patient/%s", patients, ctx.hub_headers)),
            ("hub-search", "hub CarePlan search", ctx.hub_url, ctx.hub,
             write_wrk_script(scripts / "hub-search.lua", "/fhir/CarePlan?subject=Patient/%s&status=active",
                              active, ctx.hub_headers)),
        ]
        if ctx.open_url is not None:
            scenarios += [
                ("open-read", "hub read, unsecured", ctx.open_url, ctx.open_hub,
                 write_wrk_script(scripts / "open-read.lua", "/fhir/Patient/%s", patients)),
                ("open-search", "search, unsecured", ctx.open_url, ctx.open_hub,
                 write_wrk_script(scripts / "open-search.lua", "/fhir/CarePlan?subject=Patient/%s&status=active",
                                  active)),
            ]
        scenarios = [s for s in scenarios if s[0] not in broken]

    # Warm every server (pool filled, statements prepared, pages cached) before anything is timed,
    # at the most clients measured: each pool then grows to its maximum, whatever a server did
    # before (the secured hub served the seeding, the unsecured one nothing). psycopg's pool hands
    # its connections out in turn, so a hub holding 16 spreads even a single client's queries over
    # 16 backends, which costs PostgreSQL more per query than 4 would: pools left at different
    # sizes skewed the 1-client comparison by up to a quarter.
    warm_clients = max(16, *ctx.clients)
    for key, _, url, server, script in scenarios:
        run_wrk(ctx, label=f"warmup-{key}", url=url, script=script, clients=warm_clients,
                duration=1.0 if ctx.quick else 2.0, server=server, record=False)

    # Rounds interleave the scenarios (bare, hub read, search at 1 client, then at 16, ...) so that
    # a slow moment of the machine falls on all of them alike; each figure is the median of rounds.
    samples: dict[tuple[str, int], list[dict]] = {}
    for round_no in range(1, ctx.rounds + 1):
        for clients in ctx.clients:
            for key, title, url, server, script in scenarios:
                tag = f" round {round_no}/{ctx.rounds}" if ctx.rounds > 1 else ""
                print(f"  {title:<22} {clients:>3} clients{tag} ...", end="", flush=True)
                result = run_wrk(ctx, label=f"{key}-r{round_no}", url=url, script=script, clients=clients,
                                 duration=ctx.duration, server=server)
                samples.setdefault((key, clients), []).append(result)
                print(f" {result['rps']:>9.1f} req/s  p99 {result['p99_ms']:.2f} ms", flush=True)
    runs = []
    for clients in ctx.clients:
        for key, title, *_ in scenarios:
            runs.append({"scenario": key, "title": title, **median_of_rounds(samples[(key, clients)])})

    by = {(r["scenario"], r["clients"]): r for r in runs}
    ratios = []
    for clients in ctx.clients:
        # Like with like: the bare endpoint authenticates nobody, so it is set beside the hub
        # with security off (what the FHIR read machinery costs); what security costs on top is
        # the secured/unsecured comparison below, and the secured hub against bare is shown too.
        bare_run = by.get(("bare-read", clients))
        hub_run = by.get(("open-read", clients)) or by.get(("hub-read", clients))
        if not bare_run or not hub_run or not bare_run["rps"] or not bare_run["p99_ms"]:
            continue
        throughput = hub_run["rps"] / bare_run["rps"]
        p99 = hub_run["p99_ms"] / bare_run["p99_ms"]
        secured_run = by.get(("hub-read", clients))
        ratios.append({
            "clients": clients,
            "compared": hub_run["scenario"],
            "secured_throughput_ratio": round(secured_run["rps"] / bare_run["rps"], 3) if secured_run else None,
            "throughput_ratio": round(throughput, 3),
            "throughput_target": f">= {READ_THROUGHPUT_TARGET}",
            "throughput_pass": throughput >= READ_THROUGHPUT_TARGET,
            "p99_ratio": round(p99, 3),
            "p99_target": f"<= {READ_P99_TARGET}",
            "p99_pass": p99 <= READ_P99_TARGET,
        })
    secured = [q for clients in ctx.clients
               for on, off, what in (("hub-read", "open-read", "read"), ("hub-search", "open-search", "search"))
               if (q := secured_ratio(what, clients, samples.get((on, clients)), samples.get((off, clients))))]
    return {
        "secured": secured,
        "seeded": {"patients": len(patients), "careplans": len(patients) if ctx.hub_url else 0,
                   "active_careplans": len(active), "seconds": round(seed_seconds, 2),
                   "via": "hub API" if ctx.hub_url else "SQL (--bare-only)"},
        "runs": runs,
        "not_measured": broken,
        "ratios": ratios,
        "targets": {"read_throughput_vs_bare": READ_THROUGHPUT_TARGET, "read_p99_vs_bare": READ_P99_TARGET},
    }


def secured_ratio(what: str, clients: int, on: list[dict] | None, off: list[dict] | None) -> dict | None:
    """Secured req/s over unsecured, from runs of the same rounds: each round's two runs are
    minutes apart at most, so their ratio is steadier than a ratio of medians taken over the
    whole bench. The figure is the median of the rounds' ratios; `spread` is half their range."""
    from statistics import median

    if not on or not off or len(on) != len(off) or not all(r["rps"] for r in off):
        return None
    per_round = [a["rps"] / b["rps"] for a, b in zip(on, off)]
    ratio = median(per_round)
    return {"what": what, "clients": clients, "secured_rps": round(median(r["rps"] for r in on), 1),
            "unsecured_rps": round(median(r["rps"] for r in off), 1), "ratio": round(ratio, 3),
            "per_round": [round(r, 3) for r in per_round],
            "spread": round((max(per_round) - min(per_round)) / 2, 3),
            "target": f">= {SECURED_TARGET}", "pass": ratio >= SECURED_TARGET}


def print_http(result: dict) -> bool:
    """The table; returns whether every target was met."""
    header = (f"  {'scenario':<22}{'clients':>8}{'req/s':>10}{'spread':>8}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'errors':>8}   cpu cores: {'hub/app':>7}{'pg':>6}{'wrk':>6}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in sorted(result["runs"], key=lambda r: (r["clients"], r["scenario"] != "bare-read", r["scenario"])):
        cpu = r["cpu_cores"]
        spread = f"±{r['rps_spread'] * 50:.0f}%" if r["rounds"] > 1 else "-"
        print(f"  {r['title']:<22}{r['clients']:>8}{r['rps']:>10.1f}{spread:>8}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['error_count']:>8}   {'':>11}{cpu['server']:>7.2f}{cpu['postgres']:>6.2f}{cpu['wrk']:>6.2f}")
    all_pass = True
    if result["ratios"]:
        print()
        print(f"  {'hub read / bare read':<22}{'clients':>8}{'req/s ratio':>14}{'target':>9}{'':>7}"
              f"{'p99 ratio':>11}{'target':>9}{'':>7}{'secured / bare':>16}")
        for q in result["ratios"]:
            ok_t = "PASS" if q["throughput_pass"] else "FAIL"
            ok_p = "PASS" if q["p99_pass"] else "FAIL"
            all_pass &= q["throughput_pass"] and q["p99_pass"]
            secured = q.get("secured_throughput_ratio")
            print(f"  {'':<22}{q['clients']:>8}{q['throughput_ratio']:>14.2f}{'≥ ' + str(READ_THROUGHPUT_TARGET):>9}"
                  f"{ok_t:>7}{q['p99_ratio']:>11.2f}{'≤ ' + str(READ_P99_TARGET):>9}{ok_p:>7}"
                  f"{'' if secured is None else format(secured, '.2f'):>16}")
        print("  (hub read: the hub with security off, as the bare endpoint has none; secured / bare: for information)")
    if result.get("secured"):
        print()
        print(f"  {'secured / unsecured hub':<26}{'clients':>8}{'secured':>10}{'unsecured':>11}"
              f"{'ratio':>8}{'spread':>8}{'target':>9}{'':>7}   ratio per round")
        for q in result["secured"]:
            all_pass &= q["pass"]
            rounds = " ".join(f"{r:.2f}" for r in q["per_round"])
            print(f"  {q['what']:<26}{q['clients']:>8}{q['secured_rps']:>10.1f}{q['unsecured_rps']:>11.1f}"
                  f"{q['ratio']:>8.2f}{'±' + format(q['spread'], '.2f'):>8}{'≥ ' + str(SECURED_TARGET):>9}"
                  f"{'PASS' if q['pass'] else 'FAIL':>7}   {rounds}")
        print("  (secured: token, rate limit, SMART scopes, consent in SQL, audit; ratio: median over"
              " rounds of each round's secured ÷ unsecured)")
    for key, why in result.get("not_measured", {}).items():
        all_pass = False
        print(f"\n  {key}: NOT MEASURED — {why}")
    errors = sum(r["error_count"] for r in result["runs"])
    if errors:
        all_pass = False
        print(f"\n  {errors} requests failed (non-2xx or socket errors): see .bench/logs/wrk-*.log")
    return all_pass


@dataclass
class Section:
    name: str
    title: str
    run: Callable[[BenchContext, argparse.Namespace], dict]
    show: Callable[[dict], bool]
    needs_hub: bool = True


# Later sections (pipeline ingest, MLLP, validation cost, CSV import) register here.
SECTIONS: dict[str, Section] = {
    "http": Section("http", "HTTP read by id and CarePlan search, against a bare FastAPI read",
                    section_http, print_http),
}


def _register_section_modules() -> None:
    """Sections written as modules of their own import BenchContext from here, so they register
    once this module is defined."""
    from tests.bench import validation
    from tests.bench.ingest import print_ingest, section_ingest

    SECTIONS["ingest"] = Section("ingest", "Pipeline ingest: envelopes in → resources committed, "
                                 "against raw COPY and raw produce+consume", section_ingest, print_ingest,
                                 needs_hub=False)
    SECTIONS["validation"] = Section("validation", "The whole check every write passes (base R4 rules, structure, IPC profiles) beside the structure alone",
                                     validation.run, validation.print_result, needs_hub=False)
    from tests.bench import mllp

    SECTIONS["mllp"] = Section("mllp", "HL7 v2 ADT over MLLP: acknowledged (after Kafka) and committed, "
                               "8 concurrent senders", mllp.run, mllp.print_result, needs_hub=False)
    from tests.bench import csv_import

    SECTIONS["csv"] = Section("csv", "LA CSV extract import (a million event rows) against raw csv parsing "
                              "and raw produce", csv_import.run, csv_import.print_result, needs_hub=False)
    from tests.bench import audit

    SECTIONS["audit"] = Section("audit", "AuditEvent recording under load: no record lost, and what audit "
                                "alone costs (reads, audit on against off)", audit.run, audit.print_result)
    from tests.bench import money

    SECTIONS["money"] = Section("money", "Statement import (a million lines) against raw csv parsing and raw "
                                "produce; a cohort cost of care for 100,000 people", money.run, money.print_result,
                                needs_hub=False)
    from tests.bench import up

    from tests.bench import write

    SECTIONS["write"] = Section("write", "REST creates, updates (If-Match) and transactions of 1, 10 and 100 "
                                "entries, against the same rows inserted by plain psycopg", write.run,
                                write.print_result)
    SECTIONS["up"] = Section("up", "`ipc-hub up` (workers, connectors, broker beside the API) against "
                             "`ipc-hub api` alone: reads and creates", up.run, up.print_result)
    from tests.bench import cohorts

    SECTIONS["cohorts"] = Section("cohorts", "Bulk Data $export against raw COPY TO of the same rows, with the "
                                  "API's memory and its readers, in the API and in the exporter worker; cohort evaluation "
                                  "for 100,000 people (--people) against one SQL pass",
                                  cohorts.run, cohorts.print_result)
    from tests.bench import push

    SECTIONS["push"] = Section("push", "Subscriptions: events told to a local rest-hook receiver, against a plain "
                               "consumer of the change-event topic", push.run, push.print_result, needs_hub=False)


_register_section_modules()


# --- driver ---------------------------------------------------------------------------------------

def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description="`make bench`: the hub's performance against a limit measured in the same run"
                    " (see tests/bench/README.md).")
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS),
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="2 s per run and 1 round (instead of 5 s and 3)")
    parser.add_argument("--duration", type=float, help="seconds per measured run (overrides --quick)")
    parser.add_argument("--rounds", type=int,
                        help="measured runs per figure, interleaved; the median is reported (default 3, --quick 1)")
    parser.add_argument("--clients", default="1,16,64", help="concurrent clients, comma-separated")
    parser.add_argument("--patients", type=int, default=1000, help="Patients (and CarePlans) to seed")
    parser.add_argument("--people", type=int,
                        help="section cohorts: people in the population, about 4 resources each (default "
                             "100,000; --quick 10,000; 250,000 for a million-resource export)")
    parser.add_argument("--bare-only", action="store_true",
                        help="measure the bare endpoint alone, seeding with SQL: no hub is started")
    parser.add_argument("--hub-log-level",
                        help="HUB_LOG_LEVEL for the hub under test (default: the hub's own default;"
                             " it writes no access log either way)")
    parser.add_argument("--bare-no-gc-freeze", action="store_true",
                        help="the bare app skips gc.freeze() (the hub freezes at start-up, so the "
                             "bare app does too by default)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = [SECTIONS[name] for name in (args.section or SECTIONS)]
    duration = args.duration or (2.0 if args.quick else 5.0)
    try:
        version = wrk_version()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)

    OUT_DIR.mkdir(exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="ipc-hub-bench-"))
    rounds = args.rounds or (1 if args.quick else 3)
    ctx = BenchContext(work_dir=work_dir, out_dir=OUT_DIR, duration=duration, clients=args.clients,
                       quick=args.quick, rounds=rounds)
    machine = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wrk": version,
    }
    print(f"IPC Hub bench — {machine['cores']} cores ({machine['platform']}), python {machine['python']},"
          f" wrk {version}")
    print(f"  {duration:g} s per run, median of {rounds} round(s); wrk, PostgreSQL and the servers share"
          f" these {machine['cores']} cores")
    postgres = kafka = None
    all_pass = True
    try:
        from hub.runtime.embedded import EmbeddedKafka, EmbeddedPostgres
        from hub.store.migrate import migrate

        postgres = EmbeddedPostgres(work_dir)
        ctx.database_url = postgres.start()
        ctx.postmaster_pid = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
        migrate(ctx.database_url)
        if not args.bare_only and any(s.needs_hub for s in sections):
            kafka = EmbeddedKafka(free_port(), OUT_DIR / "logs")
            bootstrap = kafka.start()
            print("  starting `ipc-hub api` ...", flush=True)
            start_hub(ctx, bootstrap, args.hub_log_level)

        for section in sections:
            print(f"\n[{section.name}] {section.title}", flush=True)
            started = datetime.now(timezone.utc)
            result = section.run(ctx, args)
            print()
            passed = section.show(result)
            all_pass &= passed
            document = {
                "section": section.name,
                "title": section.title,
                "started_at": started.isoformat(timespec="seconds"),
                "machine": machine,
                "settings": {"duration_s": duration, "rounds": rounds, "clients": ctx.clients, "bare_only": args.bare_only,
                             "hub_log_level": args.hub_log_level,
                             "bare_gc_freeze": not args.bare_no_gc_freeze},
                "all_targets_met": passed,
                **result,
            }
            out = OUT_DIR / f"results-{section.name}.json"
            out.write_text(json.dumps(document, indent=2) + "\n")
            print(f"\n  results: {out.relative_to(ROOT)}")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        ctx.stop_all()
        if kafka is not None:
            try:
                kafka.stop()
            except Exception as exc:
                print(f"warning: could not stop the broker: {exc}", file=sys.stderr)
        if postgres is not None:
            try:
                postgres.stop()
            except Exception as exc:
                print(f"warning: could not stop PostgreSQL: {exc}", file=sys.stderr)
        shutil.rmtree(work_dir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 1 if (args.strict and not all_pass) else 0


if __name__ == "__main__":
    sys.exit(main())
