"""Section `push`: Subscriptions' notifications delivered to a local receiver, beside the raw rate
of the change-event topic measured in the same run.

The relay and the notifier run as real processes (`ipc-hub worker relay|notifier`) on a Tansu
broker of their own; one `plan-changed` subscription (id-only, owned by an NHS client, so every
event passes the consent check as a read would) points at an HTTP receiver in this process.
Phase 1 (throughput): plan versions are written to the record one commit each, as fast as one
connection writes them, while the subscription is paused (the notifier queues them, and tells
nothing); once every event is queued it is resumed, and notifications per second is the events
the receiver was told from the resume to the last event told: the notifier's own rate (judging
each event with the subscriber's access, numbering, posting), not the writer's. The write rate
is printed beside it. Phase 2 (latency): plan versions written at a steady pace
(half the measured rate, at most 200/s); each event's latency is its arrival at the receiver
minus its version's commit time (resource_version.last_updated). The limit: a plain consumer
reading the same change-event topic from the start, records per second."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

P99_TARGET_S = 2.0
IPC = "https://ipc-hub.example.org/fhir/"


class _Receiver:
    def __init__(self) -> None:
        self.arrived: dict[tuple[str, str], float] = {}  # (CarePlan id, version) → arrival epoch
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                now = time.time()
                with receiver.lock:
                    for entry in body["entry"][1:]:
                        version = entry["response"]["etag"].split('"')[1]
                        receiver.arrived.setdefault((entry["fullUrl"].rsplit("/", 1)[-1], version), now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.arrived)


def _plan(patient: str) -> dict:
    return {"resourceType": "CarePlan", "status": "draft", "intent": "plan",
            "meta": {"profile": [IPC + "StructureDefinition/ipc-care-plan"]},
            "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "care-support-plan"}]}],
            "title": "Plan", "subject": {"reference": f"Patient/{patient}"}, "description": "v0"}


async def _seed(url: str, people: int) -> list[str]:
    from psycopg import AsyncConnection

    from hub.search.access import Access
    from hub.store import resources

    plans = []
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(people):
            async with conn.transaction():
                patient = await resources.create(conn, {"resourceType": "Patient", "name": [{"family": "Bench"}]},
                                                 access=Access.system())
                plan = await resources.create(conn, _plan(patient.res_id), access=Access.system())
            plans.append(plan.res_id)
    return plans


async def _subscribe(url: str, endpoint: str) -> str:
    from psycopg import AsyncConnection

    from hub.store import subscriptions as state
    from hub.subscriptions.topics import TOPIC_BASE

    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        owner = state.Owner("bench-nhs", "nhs", "RX1", "https://fhir.nhs.uk/Id/ods-organization-code",
                            ("system/*.rs",))
        sub_id = f"bench-{uuid.uuid4().hex[:8]}"
        await state.save(conn, sub_id, owner, topic=TOPIC_BASE + "plan-changed",
                         filters=[], endpoint=endpoint, headers=[], payload="id-only", heartbeat_s=None,
                         max_count=100, status="active")
        return sub_id


async def _pause(url: str, sub_id: str, paused: bool) -> None:
    from psycopg import AsyncConnection

    from hub.store import subscriptions as state

    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await state.set_state(conn, sub_id, paused=paused)


def _queued(url: str, sub_id: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT matched FROM subscription WHERE id = %s", (sub_id,)).fetchone()[0]


async def _write(url: str, plans: list[str], count: int, pace_per_s: float | None) -> None:
    """`count` new plan versions, one commit each, round the plans."""
    from psycopg import AsyncConnection

    from hub.search.access import Access
    from hub.store import resources

    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        for n in range(count):
            if pace_per_s:
                delay = started + n / pace_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            plan_id = plans[n % len(plans)]
            current = await resources.read(conn, "CarePlan", plan_id, access=Access.system())
            body = json.loads(current.content)
            body["description"] = f"v{n}"
            async with conn.transaction():
                await resources.update(conn, "CarePlan", plan_id, body, if_match=None, access=Access.system())


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"push bench: timed out waiting for {what}")
        time.sleep(0.02)


def _raw_topic_rate(bus, topic: str, expected: int) -> dict:
    """A plain consumer in a group of its own reading the change-event topic from the start."""
    from hub.bus.kafka import make_consumer

    consumer = make_consumer(bus, f"{bus.topic_prefix}.bench-raw-{uuid.uuid4().hex[:6]}", "bench-raw")
    consumer.subscribe([topic])
    started = time.perf_counter()
    got = 0
    while got < expected:
        got += sum(1 for r in consumer.consume(500, 0.2) if r.error() is None)
        if time.perf_counter() - started > 300:
            break
    seconds = time.perf_counter() - started
    consumer.close()
    return {"records": got, "seconds": round(seconds, 3), "records_per_s": round(got / seconds, 1)}


def run(ctx, args: argparse.Namespace) -> dict:
    from hub.bus.kafka import BusSettings
    from hub.bus.topics import Topics, ensure_topics
    from hub.runtime.embedded import EmbeddedKafka
    from tests.bench.run import free_port

    people = 50
    events = 500 if ctx.quick else 2000
    broker = EmbeddedKafka(free_port(), ctx.out_dir / "logs")
    bootstrap = broker.start()
    receiver = _Receiver()
    try:
        bus = BusSettings(bootstrap=bootstrap, topic_prefix=f"push{uuid.uuid4().hex[:6]}", partitions=4,
                          session_timeout_ms=2000, heartbeat_interval_ms=500)
        topics = Topics(bus.topic_prefix)
        ensure_topics(bootstrap, topics, bus.partitions)
        url = ctx.database_url
        plans = asyncio.run(_seed(url, people))
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update(HUB_KAFKA_BOOTSTRAP=bootstrap, HUB_DATABASE_URL=url, HUB_TOPIC_PREFIX=bus.topic_prefix,
                   HUB_KAFKA_SESSION_TIMEOUT_MS="2000", HUB_KAFKA_HEARTBEAT_INTERVAL_MS="500",
                   HUB_LOG_LEVEL="info", HUB_LOG_FORMAT="console")
        ipc_hub = str(Path(sys.executable).with_name("ipc-hub"))
        procs = [ctx.start_process(f"push-{name}", [ipc_hub, "worker", name], env=env) for name in ("relay", "notifier")]
        _wait(lambda: "holds partitions:" in procs[1].log_path.read_text(), 60, "the notifier to join")
        sub_id = asyncio.run(_subscribe(url, receiver.url))

        asyncio.run(_pause(url, sub_id, True))
        writing = time.perf_counter()
        asyncio.run(_write(url, plans, events, None))
        write_rate = events / (time.perf_counter() - writing)
        _wait(lambda: _queued(url, sub_id) >= events, 600, "every event queued")
        cpu_after = ctx.cpu_probe(procs[1])
        started = time.perf_counter()
        asyncio.run(_pause(url, sub_id, False))
        _wait(lambda: receiver.count() >= events, 600, "every event told")
        seconds = time.perf_counter() - started
        cpu = cpu_after()
        rate = events / seconds

        pace = min(200.0, max(20.0, rate / 2))
        paced = int(pace * (2 if ctx.quick else 5))
        before = set(receiver.arrived)
        asyncio.run(_write(url, plans, paced, pace))
        _wait(lambda: receiver.count() >= events + paced, 600, "the paced events told")
        new = {k: v for k, v in receiver.arrived.items() if k not in before}
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT res_id, version::text, extract(epoch FROM last_updated) FROM resource_version "
                                "WHERE res_type = 'CarePlan' AND res_id = ANY(%s)", (plans,)).fetchall()
        committed = {(r[0], r[1]): float(r[2]) for r in rows}
        latencies = sorted(new[k] - committed[k] for k in new if k in committed)
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

        raw = _raw_topic_rate(bus, topics.record_events, 2 * people + events + paced)
        return {
            "events": events, "seconds": round(seconds, 3), "notifications_events_per_s": round(rate, 1),
            "writes_per_s": round(write_rate, 1),
            "cpu_cores": cpu,
            "latency": {"events": len(latencies), "pace_per_s": round(pace, 1), "p50_s": round(p50, 3),
                        "p99_s": round(p99, 3)},
            "raw_topic": raw, "ratio_vs_topic": round(rate / raw["records_per_s"], 3),
            "targets": {"p99_s": P99_TARGET_S}, "pass": {"p99": p99 <= P99_TARGET_S},
        }
    finally:
        for proc in list(ctx.processes):
            if proc.name.startswith("push-"):
                proc.stop()
                ctx.processes.remove(proc)
        receiver.server.shutdown()
        broker.stop()


def print_result(result: dict) -> bool:
    lat = result["latency"]
    print(f"  {result['events']} plan versions, one commit each, told to one id-only rest-hook subscription")
    print(f"  {'':<44}{'per s':>10}{'ratio':>8}")
    print(f"  {'hub: events told (queued → receiver)':<44}{result['notifications_events_per_s']:>10.1f}"
          f"{result['ratio_vs_topic']:>8.3f}")
    print(f"  {'(the writer: plan versions committed)':<44}{result.get('writes_per_s', 0):>10.1f}")
    print(f"  {'raw: a plain consumer of record.events':<44}{result['raw_topic']['records_per_s']:>10.1f}")
    ok = "PASS" if result["pass"]["p99"] else "FAIL"
    print(f"  latency commit → receiver at {lat['pace_per_s']}/s: p50 {lat['p50_s']} s, p99 {lat['p99_s']} s"
          f" (target ≤ {P99_TARGET_S} s) {ok}")
    print(f"  notifier cpu: {result['cpu_cores']}")
    return all(result["pass"].values())
