"""A real Tansu broker per test session, and helpers to feed envelopes and run workers as
real processes (`ipc-hub worker ...`) against it and the session's PostgreSQL."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from hub.bus.envelope import Envelope
from hub.bus.kafka import BusSettings, Publisher
from hub.bus.topics import Topics, ensure_topics
from hub.runtime.embedded import EmbeddedKafka
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    admin_token,
    fhir,
    fhir_as,
    free_port,
    hub_api,
    hub_url,
    recorder,
    signing_key_file,
    signing_keys,
    token_for,
)

IPC_HUB = str(Path(sys.executable).with_name("ipc-hub"))
NHS = "https://fhir.nhs.uk/Id/nhs-number"
LOCAL = "https://ipc-hub.example.org/fhir/CodeSystem/partner-local-codes"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> str:
    broker = EmbeddedKafka(free_port(), tmp_path_factory.mktemp("tansu"))
    bootstrap = broker.start()
    yield bootstrap
    broker.stop()


def fresh_bus(kafka: str) -> BusSettings:
    """Settings with a topic prefix of its own (topics created), so tests sharing the broker never meet."""
    settings = BusSettings(bootstrap=kafka, topic_prefix=f"t{uuid.uuid4().hex[:10]}", partitions=4,
                           session_timeout_ms=2000, heartbeat_interval_ms=500, retry_max_delay_s=0.5)
    ensure_topics(kafka, Topics(settings.topic_prefix), settings.partitions)
    return settings


@pytest.fixture()
def bus(kafka: str) -> BusSettings:
    return fresh_bus(kafka)


def worker_env(bus: BusSettings, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k == "HUB_ID_KEY_FILE"}
    env.update(HUB_KAFKA_BOOTSTRAP=bus.bootstrap, HUB_DATABASE_URL=database_url,
               HUB_TOPIC_PREFIX=bus.topic_prefix, HUB_TOPIC_PARTITIONS=str(bus.partitions),
               HUB_KAFKA_SESSION_TIMEOUT_MS="2000", HUB_KAFKA_HEARTBEAT_INTERVAL_MS="500",
               HUB_RETRY_MAX_DELAY_S="0.5", HUB_LOG_LEVEL="info", HUB_LOG_FORMAT="console",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]), **extra)
    return env


class Workers:
    """Worker processes started by a test, all stopped (and reaped) at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, env: dict[str, str]) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}-{len(self.procs)}.log", "w")
        proc = subprocess.Popen([IPC_HUB, "worker", name], env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture()
def workers(tmp_path: Path):
    running = Workers(tmp_path)
    yield running
    running.stop_all()


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it is truthy or the deadline passes (no sleeping as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def person_bundle(person: int, item: int, *, nhs: str, family: str = "Jones", given: str = "Sam",
                  birth_date: str = "1980-01-01", postcode: str = "NG1 1AA") -> bytes:
    """A partner's collection Bundle: the person and one observation about them."""
    import json

    patient = {"resourceType": "Patient", "id": f"p{person}", "identifier": [{"system": NHS, "value": nhs}],
               "name": [{"family": family, "given": [given]}], "gender": "female",
               "birthDate": birth_date, "address": [{"postalCode": postcode}]}
    if not nhs:
        del patient["identifier"]            # FHIR JSON has no empty arrays
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"Patient/p{person}", "resource": patient},
        {"fullUrl": f"Observation/o{person}-{item}", "resource": {
            "resourceType": "Observation", "id": f"o{person}-{item}", "status": "final",
            "code": {"coding": [{"system": LOCAL, "code": "WT"}]},
            "subject": {"reference": f"Patient/p{person}"},
            "valueQuantity": {"value": 70 + item % 10, "unit": "kg"}}},
    ]}).encode()


def send(bus: BusSettings, envelopes: list[Envelope]) -> None:
    publisher = Publisher(bus, "test-feed")
    topic = Topics(bus.topic_prefix).inbound
    for e in envelopes:
        publisher.send(topic, e.key(), e.payload, e.headers())
    publisher.flush()
    publisher.close()


def count(database_url: str, sql: str, *args) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, args or None).fetchone()[0]


def committed_everything(bus, group: str, topic: str) -> bool:
    """The group's committed offsets add up to every record in the topic."""
    from confluent_kafka import Consumer, TopicPartition

    from hub.bus.replay import read_topic

    total = len(list(read_topic(bus, topic, timeout=5)))
    probe = Consumer({"bootstrap.servers": bus.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = probe.committed([TopicPartition(topic, p) for p in range(bus.partitions)], timeout=10)
        committed = [max(tp.offset, 0) for tp in found]
    finally:
        probe.close()
    return sum(committed) == total
