"""`make population`: issue 16's check that cohort definitions find exactly the right people in a
synthetic population of 10,000 built through the real feeds — too long for `make test`.

A real `ipc-hub up` on the embedded default (its broker, mapper, recorder, relay, cohort worker
and connectors as supervised children) is fed, as partners would feed it:

- **HL7 v2 over MLLP** (the hospital PAS, through the MLLP connector): an A28 per person (NHS
  number in PID-3, PID-30 `Y` for the people who have died) and an A04 with PV1-2 `E` per
  emergency attendance;
- **FHIR Bundles from the GP system** (envelopes of kind `fhir-bundle` on the inbound topic, as a
  partner that sends FHIR does: the hub has no GP connector of its own) with the person's
  long-term conditions and learning disability, each naming the person by NHS number;
- **MOD handovers** (the MOD endpoint, HTTPS POST with a defence token) for the service leavers,
  with their Service-attributable conditions and the same NHS number.

One person is one record however many feeds name them (the recorder matches the NHS number).
Three approved definitions are then written through the API and the cohort worker evaluates them
from the change events: multiple long-term conditions (search syntax, minimum 2, the dead
excluded by FHIRPath), complex needs (learning disability, or two or more emergency attendances
by FHIRPath), and IPC for Veterans (two or more Service-attributable conditions). Each cohort's
members must be exactly the people the population was built to have, with one offer each;
`$evaluate-cohort` on demand must find nothing to change; and when the GP resends five members'
conditions as resolved, they leave the cohort (with why) and their open offers are withdrawn.

    python -m tests.population.run                 # 10,000 people
    python -m tests.population.run --people 1000   # a shorter run

Prints what it sent, how long the record took to hold it, and each check; exits 1 if any fails."""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from tests.chaos.run import MOD_SAMPLE, Hub
from tests.durability.hub_process import send_hl7
from tests.pipeline.cohort_cases import LEARNING_DISABILITY, LONG_TERM, complex_needs, multiple_conditions
from tests.pipeline.cohort_cases import QUERY, characteristic, definition

NHS = "https://fhir.nhs.uk/Id/nhs-number"
SNOMED = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
TRANSITION = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-transition"
SERVICE_CONDITIONS = (("90584004", "Spinal cord injury"), ("47505003", "Posttraumatic stress disorder"))
GP_SOURCE = "gp-population"


@dataclass
class Person:
    n: int
    nhs: str
    conditions: list[tuple[str, str]] = field(default_factory=list)   # (SNOMED code, clinical status)
    emergencies: int = 0
    deceased: bool = False
    service_conditions: int = 0                                          # a service leaver's, from the MOD

    def multimorbid(self) -> bool:
        return sum(1 for c, s in self.conditions if c in LONG_TERM and s == "active") >= 2 and not self.deceased

    def complex_needs(self) -> bool:
        return any(c == LEARNING_DISABILITY and s == "active" for c, s in self.conditions) or self.emergencies >= 2

    def veteran_complex(self) -> bool:
        return self.service_conditions >= 2


def nhs_numbers():
    from hub.fhir.identifiers import is_valid_nhs_number

    n = 9994000000
    while True:
        n += 1
        if is_valid_nhs_number(str(n)):
            yield str(n)


def population(size: int, seed: int = 16) -> list[Person]:
    rng = random.Random(seed)
    numbers = nhs_numbers()
    people = []
    for n in range(size):
        person = Person(n, next(numbers))
        for code in rng.sample(LONG_TERM, rng.choice((0, 0, 1, 1, 2, 3))):
            person.conditions.append((code, rng.choice(("active", "active", "active", "resolved"))))
        if rng.random() < 0.05:
            person.conditions.append((LEARNING_DISABILITY, "active"))
        person.emergencies = rng.choice((0, 0, 0, 0, 1, 2))
        person.deceased = rng.random() < 0.03
        if rng.random() < 0.05:
            person.service_conditions = rng.choice((1, 2, 2))
        people.append(person)
    return people


# --- the feeds ------------------------------------------------------------------------------------

def _pid(p: Person) -> str:
    dead = "Y" if p.deceased else "N"
    born = f"{1940 + p.n % 60}{1 + p.n % 12:02d}{1 + p.n % 28:02d}"
    return (f"PID|1||{p.nhs}^^^NHS^NH~M{p.n:07d}^^^RXX01^MR||Pop{p.n}^Sam||{born}|{'F' if p.n % 2 else 'M'}"
            f"|||1 Station Road^^Leeds^^LS1 1AA^GBR^H" + "|" * 19 + dead)


def hl7_messages(people: list[Person]) -> list[str]:
    out = []
    for p in people:
        out.append("\r".join([f"MSH|^~\\&|PAS|RXX01|IPC|HUB|20260301120000||ADT^A28^ADT_A05|POP-{p.n}-R|P|2.4",
                              "EVN|A28|20260301120000", _pid(p)]) + "\r")
        for k in range(p.emergencies):
            out.append("\r".join([f"MSH|^~\\&|PAS|RXX01|IPC|HUB|2026031{k}090000||ADT^A04^ADT_A01|POP-{p.n}-E{k}|P|2.4",
                                  f"EVN|A04|2026031{k}090000", _pid(p),
                                  f"PV1|1|E|ED^^^RXX01||||||||||||||||POP-{p.n}-V{k}|||||||||||||||||||||||||"
                                  f"2026031{k}090000"]) + "\r")
    return out


def send_all_hl7(port: int, messages: list[str]) -> int:
    """Send until every message is acknowledged AA; returns the resends."""
    todo, resends = messages, 0
    deadline = time.monotonic() + 3600
    while todo and time.monotonic() < deadline:
        codes = []
        for start in range(0, len(todo), 500):
            codes += send_hl7(port, todo[start:start + 500], connections=4)
        failed = [m for m, c in zip(todo, codes) if c != "AA"]
        resends += len(failed)
        todo = failed
        if todo:
            time.sleep(1)
    if todo:
        raise RuntimeError(f"{len(todo)} HL7 v2 messages were never acknowledged")
    return resends


def gp_bundle(p: Person, statuses: dict[str, str] | None = None) -> bytes:
    entries = [{"resource": {"resourceType": "Patient", "id": f"gp-{p.n}",
                             "identifier": [{"system": NHS, "value": p.nhs}], "name": [{"family": f"Pop{p.n}"}]}}]
    for code, status in p.conditions:
        entries.append({"resource": {
            "resourceType": "Condition", "id": f"gp-{p.n}-{code}",
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": (statuses or {}).get(code, status)}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": SNOMED, "code": code}]}, "subject": {"reference": f"Patient/gp-{p.n}"}}})
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


def send_gp(hub: Hub, bundles: list[tuple[Person, bytes]]) -> None:
    from hub.bus.envelope import Envelope
    from hub.bus.kafka import BusSettings, Publisher
    from hub.bus.topics import Topics

    topics = Topics("ipc")
    publisher = Publisher(BusSettings(bootstrap=f"127.0.0.1:{hub.kafka}", topic_prefix="ipc"), "population-gp")
    for p, payload in bundles:
        e = Envelope(source=GP_SOURCE, kind="fhir-bundle", person_key=p.nhs, payload=payload,
                     content_type="application/fhir+json", received_at=datetime.now(UTC))
        publisher.send(topics.inbound, e.key(), e.payload, e.headers())
    publisher.flush()
    publisher.close()


def send_mod(hub: Hub, veterans: list[Person]) -> int:
    token, resends = hub.token("defence"), 0
    with httpx.Client(timeout=60) as client:
        for p in veterans:
            doc = json.loads(json.dumps(MOD_SAMPLE))
            doc["handoverId"] = f"HO-POP-{p.n}"
            doc["person"].update(serviceNumber=f"P{p.n:07d}", nhsNumber=p.nhs)
            doc["person"]["name"]["family"] = f"Pop{p.n}"
            doc["conditions"] = [{"snomedCode": c, "display": d} for c, d in SERVICE_CONDITIONS[:p.service_conditions]]
            for _attempt in range(20):
                answer = client.post(f"http://127.0.0.1:{hub.mod}/handover", content=json.dumps(doc),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                if answer.status_code == 202:
                    break
                resends += 1
                if answer.status_code == 401:
                    token = hub.token("defence")
                time.sleep(0.5)
            else:
                raise RuntimeError(f"the MOD endpoint never accepted handover HO-POP-{p.n}: {answer.status_code}")
    return resends


# --- the record -----------------------------------------------------------------------------------

def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        patients = conn.execute(
            "SELECT count(DISTINCT r.res_id), count(DISTINCT i->>'value') FROM resource r, "
            "json_array_elements(r.content->'identifier') i WHERE r.res_type = 'Patient' AND NOT r.deleted "
            "AND i->>'system' = %s AND i->>'value' LIKE '9994%%'", (NHS,)).fetchone()
        rows = dict(conn.execute(
            "SELECT res_type, count(*) FROM resource WHERE NOT deleted AND res_type IN ('Condition', 'Encounter') "
            "GROUP BY res_type").fetchall())
        emer = conn.execute("SELECT count(*) FROM resource WHERE res_type = 'Encounter' AND NOT deleted "
                            "AND content->'class'->>'code' = 'EMER'").fetchone()[0]
    return {"patients": patients[0], "nhs_numbers": patients[1], "conditions": rows.get("Condition", 0),
            "encounters": rows.get("Encounter", 0), "emergencies": emer}


def patient_ids(url: str) -> dict[str, str]:
    """NHS number → Patient id, for the population's people."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT i->>'value', r.res_id FROM resource r, json_array_elements(r.content->'identifier') i "
            "WHERE r.res_type = 'Patient' AND NOT r.deleted AND i->>'system' = %s AND i->>'value' LIKE '9994%%'",
            (NHS,)).fetchall()
    return dict(rows)


def members(url: str, gid: str) -> tuple[set[str], set[str]]:
    """(current members, people who left) of a cohort Group, by Patient id."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT content FROM resource WHERE res_type = 'Group' AND res_id = %s AND NOT deleted",
                           (gid,)).fetchone()
    current, left = set(), set()
    for m in (row[0] if row else {}).get("member") or []:
        pid = m["entity"]["reference"].split("/")[1]
        (left if (m.get("period") or {}).get("end") else current).add(pid)
    return current, left - current


def offers(url: str, gid: str) -> dict[str, str]:
    """Patient id → the status of their offer from this cohort."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT content->'for'->>'reference', content->>'status' FROM resource "
                            "WHERE res_type = 'Task' AND NOT deleted AND content->'focus'->>'reference' = %s",
                            (f"Group/{gid}",)).fetchall()
    return {ref.split("/")[1]: status for ref, status in rows}


def wait(what: str, check, timeout: float, every: float = 2.0):
    started = time.monotonic()
    while True:
        value = check()
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)


def veterans_definition() -> dict:
    return definition("def-pop-ipc4v", "IPC for Veterans: complex Service-attributable conditions", [
        characteristic("two or more active Service-attributable conditions", QUERY,
                       f"Condition?category={TRANSITION}|service-attributable&clinical-status=active", minimum=2)])


def run(size: int, data_dir: Path, timeout: float) -> int:
    people = population(size)
    truth = {"def-pop-mltc": {p.nhs for p in people if p.multimorbid()},
             "def-pop-complex": {p.nhs for p in people if p.complex_needs()},
             "def-pop-ipc4v": {p.nhs for p in people if p.veteran_complex()}}
    hl7 = hl7_messages(people)
    gp = [(p, gp_bundle(p)) for p in people if p.conditions]
    veterans = [p for p in people if p.service_conditions]
    expected_conditions = sum(len(p.conditions) for p in people) + sum(p.service_conditions for p in veterans)
    expected_emergencies = sum(p.emergencies for p in people)
    print(f"population: {size:,} people; {len(hl7):,} HL7 v2 messages, {len(gp):,} GP bundles, "
          f"{len(veterans):,} MOD handovers; {expected_conditions:,} conditions, {expected_emergencies:,} "
          f"emergency attendances")
    print("truth: " + ", ".join(f"{k} {len(v):,}" for k, v in truth.items()))
    hub = Hub(data_dir)
    hub.start()
    failures: list[str] = []
    try:
        url = hub.database()
        started = time.monotonic()
        resends = send_all_hl7(hub.mllp, hl7)
        print(f"HL7 v2: {len(hl7):,} acknowledged AA in {time.monotonic() - started:.0f} s ({resends} resent)")
        t = time.monotonic()
        send_gp(hub, gp)
        print(f"GP: {len(gp):,} bundles on the inbound topic in {time.monotonic() - t:.0f} s")
        t = time.monotonic()
        resends = send_mod(hub, veterans)
        print(f"MOD: {len(veterans):,} handovers accepted (202) in {time.monotonic() - t:.0f} s ({resends} resent)")
        seen: dict[str, int] = {}

        def recorded() -> bool:
            seen.update(counts(url))
            return (seen["nhs_numbers"] >= size and seen["conditions"] >= expected_conditions
                    and seen["emergencies"] >= expected_emergencies)

        took = wait("the record to hold the population", recorded, timeout, every=5)
        print(f"record: {seen} {took:.0f} s after the last send; {time.monotonic() - started:.0f} s from the first")
        if seen["patients"] != size or seen["nhs_numbers"] != size:
            failures.append(f"one person one record: {seen['patients']} Patients for {size} people")
        if seen["conditions"] != expected_conditions or seen["emergencies"] != expected_emergencies:
            failures.append(f"record counts {seen} differ from what was sent")
        ids = patient_ids(url)
        expected = {gid: {ids[n] for n in nhs} for gid, nhs in truth.items()}

        client = httpx.Client(base_url=f"{hub.base}/fhir", timeout=600,
                              headers={"Authorization": f"Bearer {hub.token('nhs')}",
                                       "Content-Type": "application/fhir+json"})
        t = time.monotonic()
        for group in (multiple_conditions("def-pop-mltc"), complex_needs("def-pop-complex"), veterans_definition()):
            answer = client.put(f"/Group/{group['id']}", json=group)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"the definition {group['id']} was refused: {answer.text[:400]}")
        for gid, want in expected.items():
            took = wait(f"the cohort worker to find cohort-{gid}",
                        lambda: members(url, f"cohort-{gid}")[0] == want, timeout, every=3)
            print(f"cohort-{gid}: {len(want):,} members found by the worker {time.monotonic() - t:.0f} s after "
                  f"the definitions were written")
            offered = offers(url, f"cohort-{gid}")
            if set(offered) != want or set(offered.values()) != {"requested"}:
                failures.append(f"cohort-{gid}: offers for {len(offered)} people, statuses {set(offered.values())}")
        for gid in expected:
            t = time.monotonic()
            answer = client.post(f"/Group/{gid}/$evaluate-cohort", json={"resourceType": "Parameters"})
            result = {p["name"]: p.get("valueInteger") for p in answer.json().get("parameter", [])}
            print(f"$evaluate-cohort {gid} on demand: {answer.status_code} in {time.monotonic() - t:.1f} s, {result}")
            if answer.status_code != 200 or result.get("entered") or result.get("left") \
                    or members(url, f"cohort-{gid}")[0] != expected[gid]:
                failures.append(f"{gid}: on-demand evaluation disagrees with the worker: {result}")
        # Five members' conditions resolved at the GP: they leave, their open offers are withdrawn.
        leavers = sorted((p for p in people if p.multimorbid()), key=lambda p: p.n)[:5]
        send_gp(hub, [(p, gp_bundle(p, {c: "resolved" for c, _ in p.conditions})) for p in leavers])
        gone = {ids[p.nhs] for p in leavers}
        took = wait("the five to leave cohort-def-pop-mltc",
                    lambda: members(url, "cohort-def-pop-mltc") == (expected["def-pop-mltc"] - gone, gone), timeout)
        withdrawn = offers(url, "cohort-def-pop-mltc")
        print(f"leaving: {len(gone)} people left {took:.0f} s after the GP resent their conditions as resolved; "
              f"their offers: {sorted(withdrawn[g] for g in gone)}")
        if any(withdrawn[g] != "cancelled" for g in gone):
            failures.append("the leavers' open offers were not withdrawn")
        client.close()
    except Exception as exc:  # report and fail, never leave the hub running
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        code = hub.stop()
        print(f"hub stopped with code {code}")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("population: " + ("PASS" if not failures else "FAIL"))
    return 0 if not failures else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each stage")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ipc-population-") as folder:
        return run(args.people, Path(folder), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
