"""Issue 19's first case: 300 HL7 v2 ADT messages, each acknowledged AA, then Ctrl-C (or kill -9
of the whole process tree, broker and PostgreSQL included) and a restart: every acknowledged
message is in the record exactly once, and a resend of an unrecorded message is recorded."""
from __future__ import annotations

import signal

import pytest

from tests.durability.hub_process import adt_a28, database, kill_tree, recorded, send_hl7
from tests.integration.conftest import free_port
from tests.integration.test_cli import RunningHub
from tests.pipeline.conftest import wait_for

pytestmark = pytest.mark.integration

COUNT = 300


def _start(data_dir, ports) -> RunningHub:
    return RunningHub(data_dir, ports[0], ports[1], ports[2])


@pytest.mark.parametrize("stop", ["ctrl-c", "kill-9"])
def test_every_acknowledged_message_is_recorded_once_across_a_stop_and_restart(tmp_path, stop):
    data_dir = tmp_path / "hub-data"
    ports = (free_port(), free_port(), free_port())
    hub = _start(data_dir, ports)
    prefix = f"D{stop[0].upper()}"
    messages = [adt_a28(f"{prefix}{i}", f"{prefix}{i:04d}") for i in range(COUNT)]
    try:
        codes = send_hl7(hub.mllp_port, messages)
        assert codes == ["AA"] * COUNT
    finally:
        if stop == "ctrl-c":
            code = hub.stop(signal.SIGINT)
        else:
            kill_tree(hub.process.pid, data_dir)
            code = hub.process.wait(30)
    output = "".join(hub.output)
    if stop == "ctrl-c":
        assert code == 0
        assert "ERROR" not in output, output  # a normal Ctrl-C is quiet
    again = _start(data_dir, ports)
    try:
        url = database(data_dir)
        wait_for(lambda: recorded(url, prefix)[0] == COUNT, 120, f"all {COUNT} acknowledged messages recorded",
                 interval=0.5)
        patients, people, highest = recorded(url, prefix)
        assert (patients, people, highest) == (COUNT, COUNT, 1)  # one Patient each, no second version
        # A resend is acknowledged and changes nothing that is already recorded.
        assert send_hl7(again.mllp_port, messages[:10], connections=2) == ["AA"] * 10
        assert recorded(url, prefix) == (COUNT, COUNT, 1)
    finally:
        assert again.stop(signal.SIGINT) == 0
    assert "ERROR" not in "".join(again.output)
