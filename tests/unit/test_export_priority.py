"""An export runner's thread is scheduled below the rest of its process (HUB_EXPORT_NICENESS):
in the API's own process the event loop serving reads keeps its priority (make bench, section
cohorts, measures what an export costs those reads)."""
from __future__ import annotations

import os
import threading
import time

from hub.exports.runner import ExportRunner


def _priority(native_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, native_id)


def test_the_runner_thread_runs_at_a_lower_priority_and_its_process_does_not(tmp_path):
    before = _priority(threading.get_native_id())
    # No database answers here: the runner waits the outage out, at its own lower priority.
    runner = ExportRunner("postgresql://127.0.0.1:9/none?connect_timeout=1", tmp_path, niceness=3)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), name="test-exporter")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while thread.native_id is None or _priority(thread.native_id) != min(19, before + 3):
            assert time.monotonic() < deadline, "the runner's thread never lowered its priority"
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    assert _priority(threading.get_native_id()) == before  # the calling thread (the API's loop) is untouched
