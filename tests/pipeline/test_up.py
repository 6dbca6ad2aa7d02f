"""`ipc-hub up` carries a feed end to end on the embedded default: envelope into its broker,
resource out of its FHIR API, counters on its /metrics; SIGTERM still leaves nothing behind."""
from __future__ import annotations

import httpx
import pytest

from connectors.hl7v2 import frame
from hub.bus.envelope import Envelope
from hub.bus.kafka import BusSettings
from tests.integration.conftest import free_port
from tests.integration.test_cli import RunningHub, _processes_mentioning
from tests.integration.test_hl7v2_mllp import adt, msa
from tests.pipeline.conftest import person_bundle, send, wait_for
from tests.pipeline.test_hl7v2_pipeline import exchange
from tests.pipeline.test_pipeline import nhs_for

pytestmark = pytest.mark.integration


def test_up_runs_the_workers(tmp_path):
    http_port, kafka_port = free_port(), free_port()
    hub = RunningHub(tmp_path / "hub-data", http_port, kafka_port)
    try:
        auth = hub.bearer()
        bus = BusSettings(bootstrap=f"127.0.0.1:{kafka_port}")
        send(bus, [Envelope(source="gp-up", kind="fhir-bundle", person_key="p1",
                            payload=person_bundle(1, 0, nhs=nhs_for(1)))])
        found = wait_for(lambda: httpx.get(f"{hub.base}/fhir/Observation", params={"code": "27113001"},
                                           headers=auth)
                         .json().get("total"), 60, "the observation through the API")
        assert found == 1
        provenance = httpx.get(f"{hub.base}/fhir/Provenance", headers=auth).json()
        assert provenance["total"] == 1
        # The MLLP listener is part of `up`: an ADT message is acknowledged and reaches the API.
        ack = exchange(hub.mllp_port, [frame(adt("A28", "UP1", "M900^^^RXX01^MR"))])[0]
        assert msa(ack)[1:3] == ["AA", "UP1"]
        patients = wait_for(lambda: httpx.get(f"{hub.base}/fhir/Patient", params={"identifier": "M900"},
                                              headers=auth)
                            .json().get("total"), 60, "the HL7 v2 patient through the API")
        assert patients == 1
        metrics = httpx.get(f"{hub.base}/metrics").text
        assert 'ipc_messages_in_total{topic="ipc.inbound",worker="mapper"} 2.0' in metrics
        assert 'ipc_messages_in_total{topic="ipc.bundles",worker="recorder"} 2.0' in metrics
    finally:
        assert hub.stop() == 0
    assert _processes_mentioning(f"127.0.0.1:{kafka_port}") == []
