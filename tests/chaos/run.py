"""`make chaos`: a real `ipc-hub up` on the embedded default takes envelopes from all four
sources (HL7 v2 over MLLP, MOD handovers over HTTPS POST, council CSV extracts in the drop
folder, FHIR API creates) while a driver kill -9s, at random, the recorder, the mapper, the
relay, a connector, the broker, PostgreSQL or the whole hub, and lets them come back (the
supervisor restarts its children, the broker and the database; the whole hub is started
again by the driver). Afterwards every acknowledged message must be in the record exactly
once: one Patient per person, no second version, none lost. The run prints the counts and
exits non-zero if any check fails.

Each message is about a person of its own, so "in the record exactly once" is a count per
identifier. Acknowledged means: HL7 AA, MOD 202, a CSV file moved to processed/, an API 201
(a create with If-None-Exist, so a retry after a lost answer is safe).

    python -m tests.chaos.run --envelopes 100000 --kills 40"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import psycopg

import connectors.mod
from tests.durability.hub_process import (
    adt_a28,
    children_of,
    cmdline,
    kill_tree,
    postmaster_pid,
    send_hl7,
)

CHAOS_SYSTEM = "https://ipc-hub.example.org/fhir/chaos-test"
MOD_SAMPLE = json.loads((Path(connectors.mod.__file__).parent / "samples" / "handover-minimal.json").read_text())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """`ipc-hub up` in its own process, restartable on the same data folder and ports."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.http, self.kafka, self.mllp, self.mod = free_port(), free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http}"
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update(HUB_DATA_DIR=str(self.data_dir), HUB_HTTP_PORT=str(self.http),
                   HUB_EMBEDDED_KAFKA_PORT=str(self.kafka), HUB_MLLP_PORT=str(self.mllp),
                   HUB_MOD_PORT=str(self.mod), HUB_DEMO_COHORT="false", HUB_RATE_LIMIT_RPS="0",
                   HUB_LA_POLL_INTERVAL_S="0.2", HUB_LOG_LEVEL="warning")
        self.output = []
        ready = threading.Event()
        self.process = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "up"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def read(process: subprocess.Popen) -> None:
            for line in process.stdout:
                self.output.append(line)
                if "IPC Hub is ready" in line:
                    ready.set()

        threading.Thread(target=read, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + 180
        while not ready.wait(0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ipc-hub up did not become ready (exit code "
                                   f"{self.process.poll()}):\n" + "".join(self.output[-40:]))

    def secret(self, partner: str) -> tuple[str, str]:
        """The demonstration client's id and secret from the banner (new at each start); while the
        whole hub is being started again there is none yet: ValueError, and the source retries."""
        found = re.search(rf"{partner}\s+(\S+)\s+(\S+)", "".join(self.output))
        if not found:
            raise ValueError(f"no {partner} client in the banner (yet)")
        return found.group(1), found.group(2)

    def token(self, partner: str) -> str:
        answer = httpx.post(f"{self.base}/auth/token", data={"grant_type": "client_credentials"},
                            auth=self.secret(partner), timeout=30)
        return answer.json()["access_token"]

    def child(self, name: str) -> int | None:
        """The pid of a supervised child (`worker recorder`, `connector hl7v2`, the broker)."""
        if self.process is None:
            return None
        for pid in children_of(self.process.pid):
            line = cmdline(pid)
            if name in line:
                return pid
        return None

    def database(self) -> str:
        from hub.runtime.embedded import running_postgres_url

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            url = running_postgres_url(self.data_dir)
            if url:
                return url
            time.sleep(0.5)
        raise RuntimeError("the hub's PostgreSQL did not come back")

    def stop(self) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(120)
        self.process = None
        return code


class Ledger:
    """What each source was told was accepted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: dict[str, set[str]] = {"hl7v2": set(), "mod": set(), "la": set(), "api": set()}
        self.sent: dict[str, int] = {k: 0 for k in self.acked}

    def add(self, source: str, ids: list[str], sent: int) -> None:
        with self.lock:
            self.acked[source].update(ids)
            self.sent[source] += sent


def person(identifier: str) -> tuple[str, date]:
    """A family name and birth date of this person's own: people who share both are compared
    with each other for a possible-duplicate review, which for 100,000 look-alikes would be the
    run's real work (people in real feeds do not all share a name and a birthday)."""
    n = int(identifier[-7:]) * 4 + {"H": 0, "M": 1, "L": 2, "A": 3}[identifier.removeprefix("CH").lstrip("-")[0]]
    letters = ""
    while True:
        n, r = divmod(n, 26)
        letters += "abcdefghijklmnopqrstuvwxyz"[r]
        if not n:
            break
    return "Chaos" + letters, date(1930, 1, 1) + timedelta(days=int(identifier[-7:]) % 25000)


# A sender keeps what was not acknowledged and sends it again (as HL7 v2 senders, the MOD and
# councils do), pausing while the hub is down, until it is acknowledged or its time is up.
RESEND_PAUSE_S = 0.5
GIVE_UP_S = 900.0


def hl7_source(hub: Hub, ledger: Ledger, ids: list[str], stop: threading.Event) -> None:
    for start in range(0, len(ids), 200):
        todo = ids[start:start + 200]
        sent, deadline = 0, time.monotonic() + GIVE_UP_S
        while todo and not stop.is_set() and time.monotonic() < deadline:
            codes = send_hl7(hub.mllp, [adt_a28(i, i, family=person(i)[0].upper(), birth=f"{person(i)[1]:%Y%m%d}")
                                        for i in todo], connections=4)
            sent += len(todo)
            ledger.add("hl7v2", [i for i, c in zip(todo, codes) if c == "AA"], 0)
            todo = [i for i, c in zip(todo, codes) if c != "AA"]
            if todo:
                time.sleep(RESEND_PAUSE_S)
        ledger.add("hl7v2", [], sent)


class Sender:
    """Posts for one partner, keeping its token (a new one after a 401 or a failure: the hub's
    clients get new secrets at each start) and resending until the answer is an acceptance."""

    def __init__(self, hub: Hub, partner: str) -> None:
        self.hub, self.partner, self.token = hub, partner, None

    def until_accepted(self, send, accepted: set[int]) -> tuple[bool, int]:
        """send(token) until its status is in `accepted`; returns (accepted, attempts)."""
        attempts, deadline = 0, time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline:
            attempts += 1
            try:
                self.token = self.token or self.hub.token(self.partner)
                status = send(self.token)
                if status in accepted:
                    return True, attempts
                if status == 401:
                    self.token = None
            except (httpx.HTTPError, KeyError, ValueError):
                self.token = None
            time.sleep(RESEND_PAUSE_S)
        return False, attempts


LANES = 4  # concurrent senders per HTTP source: a MOD team or a partner system sends in parallel


def in_lanes(source):
    """Run `source` on LANES threads, each with its share of the ids."""
    def run(hub: Hub, ledger: Ledger, ids: list[str], stop: threading.Event) -> None:
        lanes = [threading.Thread(target=source, args=(hub, ledger, ids[n::LANES], stop), daemon=True)
                 for n in range(LANES)]
        for lane in lanes:
            lane.start()
        for lane in lanes:
            lane.join()
    return run


def mod_source(hub: Hub, ledger: Ledger, ids: list[str], stop: threading.Event) -> None:
    sender = Sender(hub, "defence")
    with httpx.Client(timeout=30) as client:
        for i in ids:
            if stop.is_set():
                return
            doc = json.loads(json.dumps(MOD_SAMPLE))
            doc["handoverId"] = f"HO-{i}"
            doc["person"]["serviceNumber"] = i
            family, born = person(i)
            doc["person"]["name"]["family"] = family
            doc["person"]["birthDate"] = born.isoformat()

            def send(token: str) -> int:
                return client.post(f"http://127.0.0.1:{hub.mod}/handover", content=json.dumps(doc), headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json"}).status_code

            ok, attempts = sender.until_accepted(send, {202})
            ledger.add("mod", [i] if ok else [], attempts)


def la_source(hub: Hub, ledger: Ledger, ids: list[str], stop: threading.Event, rows: int = 500) -> None:
    drop = hub.data_dir / "la-drop"
    for n, start in enumerate(range(0, len(ids), rows)):
        if stop.is_set():
            return
        chunk = ids[start:start + rows]
        name = f"chaos-{n:05d}-people.csv"
        part = drop / f".{name}.part"
        drop.mkdir(parents=True, exist_ok=True)
        with open(part, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["LA_Code", "LA_Person_Unique_Identifier", "NHS_Number", "Given_Name", "Family_Name",
                        "Date_of_Birth", "Gender", "Postcode", "Date_of_Death"])
            for i in chunk:
                family, born = person(i)
                w.writerow(["E10000024", i, "", "Sam", family, born.isoformat(), "Female", "NG5 1AB", ""])
        os.replace(part, drop / name)
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline and not stop.is_set():
            # The watcher files a file away as `<stamp>-<name>` (connectors/la/dropfolder.py).
            if any((drop / "processed").glob(f"*-{name}")):
                ledger.add("la", chunk, len(chunk))
                break
            for refused in (drop / "failed").glob(f"*-{name}"):  # not accepted: the sender sends it again
                os.replace(refused, drop / name)
            time.sleep(0.2)


def api_source(hub: Hub, ledger: Ledger, ids: list[str], stop: threading.Event) -> None:
    sender = Sender(hub, "nhs")
    with httpx.Client(timeout=30) as client:
        for i in ids:
            if stop.is_set():
                return
            family, born = person(i)
            body = {"resourceType": "Patient", "identifier": [{"system": CHAOS_SYSTEM, "value": i}],
                    "name": [{"family": family, "given": ["Api"]}], "birthDate": born.isoformat()}

            def send(token: str) -> int:
                return client.post(f"{hub.base}/fhir/Patient", json=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json",
                    "If-None-Exist": f"identifier={CHAOS_SYSTEM}|{i}"}).status_code

            ok, attempts = sender.until_accepted(send, {200, 201})
            ledger.add("api", [i] if ok else [], attempts)


TARGETS = ["recorder", "mapper", "relay", "connector hl7v2", "connector mod", "connector la", "broker",
           "postgres", "whole hub"]


def kill(hub: Hub, target: str, hub_lock: threading.Lock) -> bool:
    """kill -9 one part; True if something was killed."""
    if target == "whole hub":
        with hub_lock:
            kill_tree(hub.process.pid, hub.data_dir)
            hub.process.wait(30)
            for attempt in range(1, 4):  # as an operator would: start it again, and again
                try:
                    hub.start()
                    break
                except RuntimeError as exc:
                    print(f"  (restart {attempt} of the whole hub failed: {str(exc)[-800:]})", flush=True)
                    kill_tree(hub.process.pid, hub.data_dir)
                    hub.process.wait(30)
                    time.sleep(5)
        return True
    if target == "postgres":
        pid = postmaster_pid(hub.data_dir)
    elif target == "broker":
        pid = hub.child("tansu")
    else:
        pid = hub.child(("worker " if target in ("recorder", "mapper", "relay") else "") + target)
    if not pid:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def recorded_counts(url: str) -> dict[str, tuple[int, int, int]]:
    """Per source: (identifier values found, Patients holding them, Patients with a second version)."""
    out = {}
    with psycopg.connect(url) as conn:
        for source, prefix in (("hl7v2", "CH-H"), ("mod", "CHM"), ("la", "CH-L"), ("api", "CH-A")):
            row = conn.execute(
                "SELECT count(DISTINCT i->>'value'), count(DISTINCT r.res_id), "
                "count(DISTINCT r.res_id) FILTER (WHERE r.version > 1) "
                "FROM resource r, json_array_elements(r.content->'identifier') i "
                "WHERE r.res_type = 'Patient' AND NOT r.deleted AND i->>'value' LIKE %s", (prefix + "%",)).fetchone()
            out[source] = (int(row[0]), int(row[1]), int(row[2]))
        # Identifier values held by more than one Patient: a person recorded twice.
        out["split"] = conn.execute(
            "SELECT count(*) FROM (SELECT i->>'value' FROM resource r, json_array_elements(r.content->'identifier') i "
            "WHERE r.res_type = 'Patient' AND NOT r.deleted AND i->>'value' LIKE 'CH%%' "
            "GROUP BY 1 HAVING count(DISTINCT r.res_id) > 1) s").fetchone()[0]
    return out


def found_ids(url: str, prefix: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT DISTINCT i->>'value' FROM resource r, json_array_elements(r.content->'identifier') i "
                            "WHERE r.res_type = 'Patient' AND NOT r.deleted AND i->>'value' LIKE %s", (prefix + "%",))
        return {r[0] for r in rows}


def run(envelopes: int, kills: int, seed: int, data_dir: Path, settle_s: float = 600) -> int:
    rng = random.Random(seed)
    share = {"hl7v2": 0.4, "la": 0.4, "mod": 0.1, "api": 0.1}
    counts = {k: max(1, int(envelopes * v)) for k, v in share.items()}
    ids = {"hl7v2": [f"CH-H{n:07d}" for n in range(counts["hl7v2"])],
           "mod": [f"CHM{n:07d}" for n in range(counts["mod"])],
           "la": [f"CH-L{n:07d}" for n in range(counts["la"])],
           "api": [f"CH-A{n:07d}" for n in range(counts["api"])]}
    hub = Hub(data_dir)
    started = time.monotonic()
    hub.start()
    ledger = Ledger()
    stop = threading.Event()
    hub_lock = threading.Lock()
    sources = {"hl7v2": hl7_source, "mod": in_lanes(mod_source), "la": la_source, "api": in_lanes(api_source)}
    threads = [threading.Thread(target=fn, args=(hub, ledger, ids[name], stop), name=name, daemon=True)
               for name, fn in sources.items()]
    for t in threads:
        t.start()
    killed: list[str] = []
    # Kills spread over the sending: a pause, a kill, a pause… (the longer the run, the longer the
    # pauses: about 4 s for the short run in `make test`, 40 s for 100,000 envelopes)
    pause = max(4.0, envelopes / 2500)
    while any(t.is_alive() for t in threads) and len(killed) < kills:
        if stop.wait(rng.uniform(0.5, 1.5) * pause) or not any(t.is_alive() for t in threads):
            break
        target = rng.choice(TARGETS)
        try:
            if kill(hub, target, hub_lock):
                killed.append(target)
                print(f"[{time.monotonic() - started:6.1f} s] kill -9 {target}", flush=True)
        except Exception as exc:  # noqa: BLE001 - report and go on: the check at the end decides
            print(f"  (could not kill {target}: {type(exc).__name__})", flush=True)
    for t in threads:
        t.join()
    sending_s = time.monotonic() - started
    # Let the pipeline finish: wait until every acknowledged id is recorded or time runs out.
    url = hub.database()
    prefixes = {"hl7v2": "CH-H", "mod": "CHM", "la": "CH-L", "api": "CH-A"}
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        try:
            missing = sum(len(ledger.acked[s] - found_ids(url, p)) for s, p in prefixes.items())
        except psycopg.Error:
            missing = -1
        if missing == 0:
            break
        time.sleep(2)
    counts_now = recorded_counts(url)
    missing_ids = {s: ledger.acked[s] - found_ids(url, p) for s, p in prefixes.items()}
    lost = {s: sorted(m)[:5] for s, m in missing_ids.items()}
    lost_counts = {s: len(m) for s, m in missing_ids.items()}
    with psycopg.connect(url) as conn:
        journal = conn.execute("SELECT count(*) FILTER (WHERE dead_letter IS NULL), count(dead_letter) "
                               "FROM bus_journal").fetchone()
    code = hub.stop()
    failures = []
    print(f"\nchaos run: {envelopes} envelopes planned, seed {seed}, {len(killed)} kills in {sending_s:.0f} s "
          f"of sending ({', '.join(f'{k} {killed.count(k)}' for k in TARGETS if k in killed)})")
    print(f"{'source':8} {'sends':>8} {'acked':>8} {'recorded':>9} {'lost':>6} {'patients':>9} {'2nd version':>12}")
    for s in prefixes:
        found, patients, second = counts_now[s]
        acked = len(ledger.acked[s])
        lost_n = lost_counts[s]
        print(f"{s:8} {ledger.sent[s]:>8} {acked:>8} {found:>9} {lost_n:>6} {patients:>9} {second:>12}")
        if lost[s]:
            failures.append(f"{s}: acknowledged but not recorded, e.g. {lost[s]}")
        if patients != found:
            failures.append(f"{s}: {patients} Patients for {found} people")
        if second:
            failures.append(f"{s}: {second} Patients have a second version")
    if counts_now["split"]:
        failures.append(f"{counts_now['split']} people are recorded as more than one Patient")
    print(f"bus journal afterwards: {journal[0]} pending, {journal[1]} dead-lettered; hub stopped with code {code}")
    for f in failures:
        print("FAIL:", f)
    print("chaos: PASS" if not failures else "chaos: FAIL")
    return 0 if not failures else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envelopes", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ipc-chaos-") as tmp:
        return run(args.envelopes, args.kills, args.seed, args.data_dir or Path(tmp) / "hub-data")


if __name__ == "__main__":
    sys.exit(main())
