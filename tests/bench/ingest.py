"""Section `ingest`: envelopes in → resources committed, beside two limits measured in the same
run: raw PostgreSQL COPY of the same final rows, and a raw produce + consume of the same
envelopes through the same broker.

Phase 1 (throughput): every envelope is produced at once to the inbound topic while a mapper and
a recorder (`ipc-hub worker`, real processes) run; resources committed per second is counted
from the first produce to the last commit. Phase 2 (latency): a second batch of envelopes (new
observations) is produced at a steady rate, half the measured throughput, and each
observation's latency is its commit time (resource_version.last_updated) minus its envelope's
received-at."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

THROUGHPUT_TARGET = 5000.0  # resources committed per second (issue 19)
COPY_RATIO_TARGET = 0.4  # and at least this share of raw COPY of the same rows, same run
P99_TARGET_S = 2.0
NHS = "https://fhir.nhs.uk/Id/nhs-number"
LOCAL = "https://ipc-hub.example.org/fhir/CodeSystem/partner-local-codes"
SOURCE = "bench-partner"


def _nhs(person: int) -> str:
    n = person * 3
    while True:
        first = f"999{n:06d}"
        total = sum(int(d) * w for d, w in zip(first, range(10, 1, -1)))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check != 10:
            return f"{first}{check}"
        n += 1


def _payload(person: int, item: int) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": f"p{person}",
                      "identifier": [{"system": NHS, "value": _nhs(person)}],
                      "name": [{"family": f"Family{person}", "given": ["Sam"]}], "gender": "female",
                      "birthDate": f"19{50 + person % 50}-0{1 + person % 9}-1{person % 10}"}},
        {"resource": {"resourceType": "Observation", "id": f"o{person}-{item}", "status": "final",
                      "code": {"coding": [{"system": LOCAL, "code": "WT"}]},
                      "subject": {"reference": f"Patient/p{person}"},
                      "valueQuantity": {"value": 70 + item % 10, "unit": "kg"}}}]}).encode()


def _envelopes(people: int, items: range):
    from hub.bus.envelope import Envelope

    return [Envelope(source=SOURCE, kind="fhir-bundle", person_key=f"p{p}", payload=_payload(p, i),
                     content_type="application/fhir+json") for i in items for p in range(people)]


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()[0]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest bench: timed out waiting for {what}")
        time.sleep(0.02)


def _produce(bus, topic: str, envelopes, pace_per_s: float | None = None) -> dict[str, float]:
    """Send envelopes (at a steady pace if given); returns envelope id → received-at epoch."""
    from hub.bus.kafka import Publisher

    publisher = Publisher(bus, "bench-feed")
    sent: dict[str, float] = {}
    started = time.monotonic()
    for n, e in enumerate(envelopes):
        if pace_per_s:
            due = started + n / pace_per_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        e = type(e)(**{**{f: getattr(e, f) for f in e.__dataclass_fields__}, "received_at": datetime.now(UTC)})
        publisher.send(topic, e.key(), e.payload, e.headers())
        sent[e.id] = e.received_at.timestamp()
    publisher.flush()
    publisher.close()
    return sent


def raw_copy_rate(url: str) -> dict:
    """COPY the record's final rows (current, versions, index) into empty copies of the tables."""
    tables = ["resource", "resource_version", "idx_token", "idx_string", "idx_reference", "idx_date",
              "idx_number", "idx_quantity", "idx_uri"]
    with psycopg.connect(url, autocommit=True) as conn:
        data = {}
        for t in tables:
            with conn.cursor().copy(f"COPY {t} TO STDOUT") as copy:
                data[t] = b"".join(bytes(chunk) for chunk in copy)
            conn.execute(f"DROP TABLE IF EXISTS bench_{t}")
            conn.execute(f"CREATE TABLE bench_{t} (LIKE {t} INCLUDING ALL)")
        resources = conn.execute("SELECT count(*) FROM resource_version").fetchone()[0]
        started = time.perf_counter()
        with conn.transaction():
            for t in tables:
                with conn.cursor().copy(f"COPY bench_{t} FROM STDIN") as copy:
                    copy.write(data[t])
        seconds = time.perf_counter() - started
        for t in tables:
            conn.execute(f"DROP TABLE bench_{t}")
    return {"resource_versions": resources, "seconds": round(seconds, 3),
            "resources_per_s": round(resources / seconds, 1)}


def raw_kafka_rate(bus, envelopes) -> dict:
    """Produce the same envelopes to a fresh topic and consume them all in a group."""
    from hub.bus.kafka import make_consumer
    from hub.bus.topics import Topics, ensure_topics

    raw_bus = type(bus)(**{**{f: getattr(bus, f) for f in bus.__dataclass_fields__},
                           "topic_prefix": bus.topic_prefix + "raw"})
    topics = Topics(raw_bus.topic_prefix)
    ensure_topics(raw_bus.bootstrap, topics, raw_bus.partitions)
    consumer = make_consumer(raw_bus, topics.group("raw"), "bench-raw")
    consumer.subscribe([topics.inbound])
    _wait(lambda: consumer.consume(100, 0.1) == [] and bool(consumer.assignment()), 30, "raw consumer")
    started = time.perf_counter()
    _produce(raw_bus, topics.inbound, envelopes)
    got = 0
    while got < len(envelopes):
        got += sum(1 for r in consumer.consume(500, 0.2) if r.error() is None)
    seconds = time.perf_counter() - started
    consumer.close()
    return {"envelopes": got, "seconds": round(seconds, 3), "envelopes_per_s": round(got / seconds, 1)}


def section_ingest(ctx, args: argparse.Namespace) -> dict:
    from hub.bus.kafka import BusSettings
    from hub.bus.topics import Topics, ensure_topics
    from hub.fhir.ids import source_id
    from hub.runtime.embedded import EmbeddedKafka
    from tests.bench.run import free_port

    people = 200 if ctx.quick else 1000
    per_person = 5
    broker = EmbeddedKafka(free_port(), ctx.out_dir / "logs")
    bootstrap = broker.start()
    try:
        bus = BusSettings(bootstrap=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}", partitions=4,
                          session_timeout_ms=2000, heartbeat_interval_ms=500)
        topics = Topics(bus.topic_prefix)
        ensure_topics(bootstrap, topics, bus.partitions)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update(HUB_KAFKA_BOOTSTRAP=bootstrap, HUB_DATABASE_URL=ctx.database_url,
                   HUB_TOPIC_PREFIX=bus.topic_prefix, HUB_KAFKA_SESSION_TIMEOUT_MS="2000",
                   HUB_KAFKA_HEARTBEAT_INTERVAL_MS="500", HUB_LOG_LEVEL="info", HUB_LOG_FORMAT="console")
        ipc_hub = str(Path(sys.executable).with_name("ipc-hub"))
        procs = [ctx.start_process(f"ingest-{name}", [ipc_hub, "worker", name], env=env)
                 for name in ("mapper", "recorder", "relay")]
        for proc in procs[:2]:
            _wait(lambda: "holds partitions:" in proc.log_path.read_text(), 30, f"{proc.name} to join")
        url = ctx.database_url
        before = _count(url, "SELECT count(*) FROM resource_version")
        first = _envelopes(people, range(per_person))
        expected_obs = people * per_person
        obs_count = "SELECT count(*) FROM resource WHERE res_type = 'Observation'"
        cpu_after = ctx.cpu_probe(procs[1])
        started = time.perf_counter()
        _produce(bus, topics.inbound, first)
        _wait(lambda: _count(url, obs_count) >= expected_obs, 600, "the ingest to finish")
        seconds = time.perf_counter() - started
        cpu = cpu_after()
        versions = _count(url, "SELECT count(*) FROM resource_version") - before
        clinical = _count(url, "SELECT count(*) FROM resource_version WHERE res_type <> 'Provenance'") - before
        rate = versions / seconds

        # Latency at a steady half of the measured envelope rate.
        second = _envelopes(people, range(per_person, per_person + 2))
        pace = max(50.0, 0.5 * len(first) / seconds)
        sent = _produce(bus, topics.inbound, second, pace_per_s=pace)
        _wait(lambda: _count(url, obs_count) >= expected_obs + len(second), 600, "the paced ingest")
        obs_ids = {source_id(SOURCE, "Observation", f"o{p}-{i}"): None
                   for i in range(per_person, per_person + 2) for p in range(people)}
        received = {}
        for e in second:
            doc = json.loads(e.payload)
            local = doc["entry"][1]["resource"]["id"]
            received[source_id(SOURCE, "Observation", local)] = sent[e.id]
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT res_id, extract(epoch FROM last_updated) FROM resource_version "
                                "WHERE res_type = 'Observation' AND res_id = ANY(%s)", (list(obs_ids),)).fetchall()
        latencies = sorted(float(t) - received[i] for i, t in rows)
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

        copy = raw_copy_rate(url)
        kafka = raw_kafka_rate(bus, first)
        return {
            "envelopes": len(first), "people": people, "seconds": round(seconds, 3),
            "resource_versions": versions, "clinical_versions": clinical,
            "resources_per_s": round(rate, 1), "envelopes_per_s": round(len(first) / seconds, 1),
            "cpu_cores": cpu,
            "latency": {"envelopes": len(latencies), "pace_per_s": round(pace, 1),
                        "p50_s": round(p50, 3), "p99_s": round(p99, 3)},
            "raw_copy": copy, "raw_kafka": kafka,
            "ratios": {"resources_vs_copy": round(rate / copy["resources_per_s"], 3),
                       "envelopes_vs_kafka": round(len(first) / seconds / kafka["envelopes_per_s"], 3)},
            "targets": {"resources_per_s": THROUGHPUT_TARGET, "vs_copy": COPY_RATIO_TARGET, "p99_s": P99_TARGET_S},
            "pass": {"throughput": rate >= THROUGHPUT_TARGET,
                     "vs_copy": rate / copy["resources_per_s"] >= COPY_RATIO_TARGET, "p99": p99 <= P99_TARGET_S},
        }
    finally:
        for proc in list(ctx.processes):
            if proc.name.startswith("ingest-"):
                proc.stop()
                ctx.processes.remove(proc)
        broker.stop()


def print_ingest(result: dict) -> bool:
    lat = result["latency"]
    print(f"  {result['envelopes']} envelopes for {result['people']} people in {result['seconds']} s:"
          f" {result['resource_versions']} resource versions ({result['clinical_versions']} besides Provenance)")
    print(f"  {'':<34}{'per s':>10}{'ratio':>8}{'target':>10}")
    ok_t = "PASS" if result["pass"]["throughput"] else "FAIL"
    ok_c = "PASS" if result["pass"]["vs_copy"] else "FAIL"
    print(f"  {'hub: resources committed':<34}{result['resources_per_s']:>10.1f}{'':>8}"
          f"{'≥ %.0f' % THROUGHPUT_TARGET:>10} {ok_t}")
    print(f"  {'raw COPY of the same rows':<34}{result['raw_copy']['resources_per_s']:>10.1f}"
          f"{result['ratios']['resources_vs_copy']:>8.3f}{'≥ %.1f' % COPY_RATIO_TARGET:>10} {ok_c}")
    print(f"  {'hub: envelopes':<34}{result['envelopes_per_s']:>10.1f}")
    print(f"  {'raw produce+consume':<34}{result['raw_kafka']['envelopes_per_s']:>10.1f}"
          f"{result['ratios']['envelopes_vs_kafka']:>8.3f}")
    ok_p = "PASS" if result["pass"]["p99"] else "FAIL"
    print(f"  latency receipt → committed at {lat['pace_per_s']}/s: p50 {lat['p50_s']} s, p99 {lat['p99_s']} s"
          f" (target ≤ {P99_TARGET_S} s) {ok_p}")
    print(f"  cpu cores: {result['cpu_cores']}")
    return all(result["pass"].values())
