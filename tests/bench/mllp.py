"""Section `mllp`: HL7 v2 ADT over MLLP, acknowledged per second and committed in the record.

`ipc-hub connector hl7v2`, a mapper and a recorder run as real processes against the bench's
PostgreSQL and a Tansu broker of its own. Eight senders, each on its own MLLP connection, send
ADT^A01 messages one at a time and wait for each ACK (as real feeds do); an ACK is AA only after
Kafka acknowledged the envelope (acks=all). Two runs: the connector alone (mapper and recorder
start after it, and the time to commit that backlog is reported), then the same with the pipeline
running on the same cores, until the last message is committed in the record (one Encounter per
message). Targets (issue 19): ≥ 3,000 messages/s acknowledged by the connector alone, and
≥ 1,500/s from the first send to the last commit with the pipeline on the same 2 cores."""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg

ACK_TARGET = 3000.0  # messages acknowledged per second by the connector alone (issue 19)
COMMIT_TARGET = 1500.0  # first send → last commit, per second, with the pipeline on the same cores
SENDERS = 8


def _message(n: int, run: str) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|BENCHPAS|RXX01|IPC|HUB|20260301120000||ADT^A01^ADT_A01|{run}-{n}|P|2.4",
        "EVN|A01|20260301120000",
        f"PID|1||B{n:07d}^^^RXX01^MR||BENCH^Person{n % 997}^^^Mx||19{50 + n % 50}0{1 + n % 9}1{n % 10}|"
        f"{'MF'[n % 2]}|||{n % 90 + 1} Station Road^^Leeds^^LS1 1AA^GBR^H||01131234567^PRN^PH||eng|M",
        f"NK1|1|BENCH^Carer{n % 13}|CGV^Carer|2 Mill Lane^^Leeds^^LS2 2BB|01130000001",
        f"PV1|1|I|WARD1^BED2^^RXX01||||||||||||||||V{run}{n}^^^RXX01^VN|||||||||||||||||||||||||20260301110000",
    ]) + "\r").encode()


async def _sender(port: int, messages: list[bytes], latencies: list[float]) -> int:
    from connectors.hl7v2 import frame
    from connectors.hl7v2.framing import MllpFramer

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framer, accepted = MllpFramer(), 0
    try:
        for message in messages:
            sent = time.perf_counter()
            writer.write(frame(message))
            await writer.drain()
            got: list[bytes] = []
            while not got:
                chunk = await reader.read(65536)
                if not chunk:
                    raise RuntimeError("mllp bench: the listener closed the connection")
                got = framer.feed(chunk).messages
            latencies.append(time.perf_counter() - sent)
            accepted += b"MSA|AA|" in got[0]
    finally:
        writer.close()
    return accepted


async def _send_all(port: int, messages: list[bytes]) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    shares = [messages[i::SENDERS] for i in range(SENDERS)]
    started = time.perf_counter()
    accepted = await asyncio.gather(*(_sender(port, share, latencies) for share in shares))
    return sum(accepted), time.perf_counter() - started, latencies


def _count(url: str, sql: str, *args) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args or None).fetchone()[0]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"mllp bench: timed out waiting for {what}")
        time.sleep(0.02)


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run(ctx, args: argparse.Namespace) -> dict:
    from hub.bus.topics import Topics, ensure_topics
    from hub.runtime.embedded import EmbeddedKafka
    from tests.bench.run import free_port

    total = 3000 if ctx.quick else 10_000
    broker = EmbeddedKafka(free_port(), ctx.out_dir / "logs")
    bootstrap = broker.start()
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        ensure_topics(bootstrap, Topics(prefix), 4)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update(HUB_KAFKA_BOOTSTRAP=bootstrap, HUB_DATABASE_URL=ctx.database_url, HUB_TOPIC_PREFIX=prefix,
                   HUB_KAFKA_SESSION_TIMEOUT_MS="2000", HUB_KAFKA_HEARTBEAT_INTERVAL_MS="500",
                   HUB_LOG_LEVEL="info", HUB_LOG_FORMAT="console", HUB_MLLP_PORT=str(port),
                   # As on the embedded default: every acknowledged message also in the bus journal.
                   HUB_BUS_JOURNAL="on")
        ipc_hub = str(Path(sys.executable).with_name("ipc-hub"))
        connector = ctx.start_process("mllp-connector", [ipc_hub, "connector", "hl7v2"], env=env)
        _wait(lambda: _accepts(port) or not connector.alive(), 30, "the MLLP listener")
        if not connector.alive():
            raise RuntimeError("mllp bench: the connector stopped:\n" + connector.log_tail())
        url = ctx.database_url
        encounters = "SELECT count(*) FROM resource WHERE res_type = 'Encounter' AND content::text LIKE %s"
        asyncio.run(_send_all(port, [_message(n, "warm" + uuid.uuid4().hex[:6]) for n in range(200)]))

        # 1. The connector's own rate: mapper and recorder not yet running (Kafka holds the backlog).
        alone_id = uuid.uuid4().hex[:6]
        cpu_after = ctx.cpu_probe(connector)
        started = time.perf_counter()
        alone = asyncio.run(_send_all(port, [_message(n, alone_id) for n in range(total)]))
        cpu = cpu_after()
        workers_started = time.perf_counter()
        workers = [ctx.start_process(f"mllp-{name}", [ipc_hub, "worker", name], env=env)
                   for name in ("mapper", "recorder")]
        _wait(lambda: _count(url, encounters, f"%V{alone_id}%") >= total, 600, "the backlog in the record")
        backlog_seconds = time.perf_counter() - workers_started
        for proc in workers:
            _wait(lambda p=proc: "holds partitions:" in p.log_path.read_text(), 30, f"{proc.name} to join")

        # 2. The same with the pipeline running on the same 2 cores, until committed.
        busy_id = uuid.uuid4().hex[:6]
        started = time.perf_counter()
        busy = asyncio.run(_send_all(port, [_message(n, busy_id) for n in range(total)]))
        _wait(lambda: _count(url, encounters, f"%V{busy_id}%") >= total, 600, "every message in the record")
        committed_seconds = time.perf_counter() - started

        def figures(result: tuple[int, float, list[float]]) -> dict:
            accepted, seconds, latencies = result
            latencies.sort()
            return {"accepted": accepted, "seconds": round(seconds, 3), "acked_per_s": round(accepted / seconds, 1),
                    "p50_ms": round(1000 * statistics.median(latencies), 2),
                    "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2)}

        a, b = figures(alone), figures(busy)
        return {
            "messages": total, "senders": SENDERS, "connector_alone": a, "with_pipeline": b,
            "backlog_committed_seconds": round(backlog_seconds, 3),
            "backlog_committed_per_s": round(total / backlog_seconds, 1),
            "committed_seconds": round(committed_seconds, 3),
            "committed_per_s": round(total / committed_seconds, 1),
            "cpu_cores_connector_alone": cpu, "target_acked_per_s": ACK_TARGET,
            "target_committed_per_s": COMMIT_TARGET,
            "pass": a["accepted"] == total and b["accepted"] == total and a["acked_per_s"] >= ACK_TARGET
            and total / committed_seconds >= COMMIT_TARGET,
        }
    finally:
        for proc in list(ctx.processes):
            if proc.name.startswith("mllp-"):
                proc.stop()
                ctx.processes.remove(proc)
        broker.stop()


def print_result(result: dict) -> bool:
    ok = "PASS" if result["pass"] else "FAIL"
    a, b = result["connector_alone"], result["with_pipeline"]
    print(f"  {result['messages']} ADT^A01 over MLLP per run, {result['senders']} senders, one message in flight each;"
          " AA only after Kafka acks=all")
    print(f"  {'':<44}{'acked/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"  {'connector alone (pipeline stopped)':<44}{a['acked_per_s']:>9.1f}{a['p50_ms']:>9}{a['p99_ms']:>9}"
          f"   target ≥ {result['target_acked_per_s']:.0f} {ok}")
    print(f"  {'with mapper + recorder on the same cores':<44}{b['acked_per_s']:>9.1f}{b['p50_ms']:>9}{b['p99_ms']:>9}")
    print(f"  backlog of the first run committed {result['backlog_committed_seconds']} s after the workers started"
          f" ({result['backlog_committed_per_s']} msg/s)")
    print(f"  second run: first send → last commit {result['committed_seconds']} s ({result['committed_per_s']} msg/s)"
          f"   target ≥ {result['target_committed_per_s']:.0f} "
          f"{'PASS' if result['committed_per_s'] >= result['target_committed_per_s'] else 'FAIL'}")
    print(f"  cpu seconds during the first run: {result['cpu_cores_connector_alone']}")
    return result["pass"]
