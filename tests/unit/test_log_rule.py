"""The personal-data rule of the hub's logs (hub/runtime/logs.py), through the real logging
setup into a real JSON-lines file: what a person could be recognised by never reaches a line,
in whatever case it is written, while the hub's own words, numbers and ids do."""
from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from hub.runtime import logs

PERSONAL = [
    "smith",  # a surname in lower case: no pattern tells it from a word
    "alex smith",
    "Alex Smith",
    "9990000018",  # an NHS number from the test range
    "999 000 0018",
    "alex.smith@example.org",
    "1985-03-14",
    "LS1 1AA",
    "/srv/hub/la-drop/alex-smith-care-needs.csv",
    {"family": "smith"},
    ["smith", 3],
]


@pytest.fixture()
def log_file(tmp_path: Path):
    path = tmp_path / "hub.jsonl"
    logs.configure_logging("info", "json", console_level="critical", file=path)
    logs.allow_terms(["ipc.inbound"])
    yield path
    for handler in list(logging.getLogger().handlers):
        handler.close()
        logging.getLogger().removeHandler(handler)


def _lines(path: Path) -> list[dict]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def _text(path: Path) -> str:
    """Everything the lines say but their timestamps (whose digits could be anything)."""
    return "\n".join(json.dumps({k: v for k, v in line.items() if k != "timestamp"}) for line in _lines(path))


@pytest.mark.parametrize("value", PERSONAL, ids=[str(v) for v in PERSONAL])
def test_a_value_that_could_name_a_person_is_withheld_from_the_arguments(log_file, value):
    logging.getLogger("hub.test").warning("the mapper refused %s", value)
    (line,) = _lines(log_file)
    assert line["event"] == "the mapper refused %s"
    assert line["args"] == [logs.WITHHELD]
    assert "smith" not in _text(log_file).lower() and "999" not in _text(log_file)


def test_the_hubs_own_words_numbers_and_exception_names_are_kept(log_file):
    logging.getLogger("hub.test").warning("%s: %d records on %s refused (%s, %s) after %.1f s at %s", "recorder",
                                          12, "ipc.inbound", "OperationalError", KeyError("smith"), 1.5,
                                          "not-found")
    (line,) = _lines(log_file)
    assert line["args"] == ["recorder", 12, "ipc.inbound", "OperationalError", "KeyError", 1.5, "not-found"]
    assert "smith" not in _text(log_file)


def test_only_fields_that_cannot_carry_personal_data_are_kept(log_file):
    envelope = str(uuid.uuid4())
    logging.getLogger("hub.test").info("dead-lettered", extra={
        "envelope_id": envelope, "partition": 3, "family": "smith", "nhs_number": "9990000018",
        "reason": "smith", "request_id": "smith"})
    (line,) = _lines(log_file)
    assert line["envelope_id"] == envelope and line["partition"] == 3
    assert "family" not in line and "nhs_number" not in line
    assert line["reason"] == logs.WITHHELD and line["request_id"] == logs.WITHHELD
    assert set(line) <= logs.FIELDS


def test_an_exception_is_its_type_and_places_never_its_text(log_file):
    try:
        raise ValueError("alex smith, 9990000018")
    except ValueError:
        logging.getLogger("hub.test").exception("mapping failed")
    (line,) = _lines(log_file)
    assert line["exception"]["type"] == "ValueError"
    assert line["exception"]["at"] and all("test_log_rule.py" in place for place in line["exception"]["at"])
    assert "smith" not in _text(log_file) and "999" not in _text(log_file)


def test_request_and_client_ids_reach_every_line_logged_inside_a_request(log_file):
    request = str(uuid.uuid4())
    with logs.bound(request_id=request):
        logs.bind(client_id="demo-nhs-trust")
        logging.getLogger("hub.test").warning("throttled")
    logging.getLogger("hub.test").warning("after the request")
    inside, after = _lines(log_file)
    assert inside["request_id"] == request and inside["client_id"] == "demo-nhs-trust"
    assert "request_id" not in after and "client_id" not in after


def test_a_third_partys_formatted_message_is_screened_the_same_way(log_file):
    # A library's own logger (not uvicorn's: a server started by another test may have stopped
    # its records from reaching the root logger; the hub starts uvicorn with log_config=None).
    logging.getLogger("somelibrary.protocol").warning("Invalid request from %s: %s", "smith", "9990000018")
    (line,) = _lines(log_file)
    assert line["args"] == [logs.WITHHELD, logs.WITHHELD]
    assert line["logger"] == "somelibrary.protocol"


def test_fields_a_record_has_of_its_own_are_not_taken_for_the_callers(log_file):
    logging.getLogger("hub.test").info("%s holds partitions: %s", "recorder", (1, 3))
    (line,) = _lines(log_file)
    assert line["args"] == ["recorder", "1,3"]
    assert "process" not in line  # LogRecord.process is the pid, not a field the caller set



def test_a_supervised_process_is_named_in_the_supervisors_lines(log_file, tmp_path):
    """The supervisor's lines name the child they are about (`connector-statements did not stop
    in 30 s; killed`): a child's name is the code's own word, registered as a term of the rule
    when the child is made, while the rule still withholds everything else."""
    import subprocess
    import sys

    from hub.runtime.supervisor import Child

    name = "connector-statements"
    assert logs.safe_value(name) == logs.WITHHELD        # not one of the rule's words by itself …
    ready = tmp_path / "ready"
    stubborn = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "pathlib.Path(sys.argv[1]).write_text('up'); time.sleep(120)")
    child = Child(name, [sys.executable, "-c", stubborn, str(ready)], {}, tmp_path / "child.log")
    assert logs.safe_value(name) == name                  # … but a term once a child has it
    child.start()
    process = child.process
    try:
        for _ in range(1200):    # until it ignores SIGTERM (it says so in a file) or exits
            if ready.exists():
                break
            try:
                process.wait(0.05)
                break
            except subprocess.TimeoutExpired:
                continue
        assert ready.exists() and process.poll() is None
        child.stop(timeout_s=0.2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    (line,) = [line for line in _lines(log_file) if line["event"] == "%s did not stop in %.0f s; killed"]
    assert line["args"] == [name, 0.2]
    with pytest.raises(ValueError):
        Child("Alex Smith", ["true"], {}, tmp_path / "x.log")
    assert logs.safe_value("Alex Smith") == logs.WITHHELD
