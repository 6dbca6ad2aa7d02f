"""The CI check end to end: pytest run in a subprocess on a tiny project of its own, with the
plugin and a hazard log passed by option, as `make test` runs it — with pytest-xdist (the
controller hears the workers' collections and reports) and without."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.safety.hazard_log import ROOT

PROJECT_TESTS = '''
import pytest

def test_ok():
    assert 1 + 1 == 2

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n in (1, 2)

def test_unrelated():
    assert "a" < "b"
'''

HAZARD = '''
hazards:
  - id: HAZ-901
    title: A hazard of the tiny project
    status: open
    causes: [a cause]
    effect: an effect on the person
    initial: {{severity: major, likelihood: medium, risk: 3}}
    mitigations:
      - kind: software
        text: a mitigation with tests
        tests: {tests}
      - kind: procedural
        text: a mitigation without tests
        tests: []
{reason}
    residual: {{severity: major, likelihood: low, risk: 3, reason: because}}
'''
REASON = "        no_test_reason: the deploying organisation does it"

XDIST = ["-p", "xdist.plugin", "-n", "2"]
ONE_PROCESS: list[str] = []


def make_project(tmp_path: Path, tests: list[str], *, reason: str = REASON) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "test_demo.py").write_text(PROJECT_TESTS, encoding="utf-8")
    (tmp_path / "hazards.yaml").write_text(HAZARD.format(tests=tests, reason=reason), encoding="utf-8")
    return tmp_path


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on the project with the hub's plugin, in a clean environment (no PYTEST_* of ours).
    Plugins installed in the environment are not auto-loaded (schemathesis alone costs seconds a
    run): the hub's plugin and xdist, when wanted, are named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # Its own --basetemp: a pytest session re-hardens the shared /tmp/pytest-of-<user> to 0700,
    # which would lock the embedded PostgreSQL of concurrent tests out of their folders.
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.safety.plugin", "-p", "no:cacheprovider",
                           f"--basetemp={project / '.basetemp'}", "-q", *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("mode", [XDIST, ONE_PROCESS], ids=["xdist", "one-process"])
def test_a_hazard_naming_a_missing_test_fails_a_run_whose_tests_all_pass(tmp_path, mode):
    project = make_project(tmp_path, ["test_demo.py::test_ok", "test_demo.py::test_missing"])
    result = run_pytest(project, *mode, "--hazard-log", "hazards.yaml")
    assert "4 passed" in result.stdout
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hazard log check failed" in result.stdout
    assert ("HAZ-901 (A hazard of the tiny project): test_demo.py::test_missing was not collected"
            in result.stdout)
    assert "test_demo.py::test_ok" not in result.stdout  # it was collected and passed (on a worker too)


def test_a_run_where_every_named_test_passed_succeeds(tmp_path):
    project = make_project(tmp_path, ["test_demo.py::test_ok", "test_demo.py::test_param"])
    result = run_pytest(project, *XDIST, "--hazard-log", "hazards.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hazard log hazards.yaml: all 2 named tests exist and passed" in result.stdout


def test_a_named_test_that_fails_or_is_deselected_is_named(tmp_path):
    project = make_project(tmp_path, ["test_demo.py::test_ok", "test_demo.py::test_param"])
    (project / "test_demo.py").write_text(PROJECT_TESTS.replace("assert n in (1, 2)", "assert n == 1"),
                                          encoding="utf-8")
    result = run_pytest(project, "--hazard-log", "hazards.yaml", "-k", "not test_ok")
    assert result.returncode == 1
    assert "HAZ-901 (A hazard of the tiny project): test_demo.py::test_param[2] failed" in result.stdout
    assert "HAZ-901 (A hazard of the tiny project): test_demo.py::test_ok was not collected" in result.stdout
    assert "test_param[1]" not in result.stdout.split("hazard log check failed")[1]


def test_without_the_option_a_subset_runs_unchecked(tmp_path):
    project = make_project(tmp_path, ["test_demo.py::test_missing"], reason="")
    result = run_pytest(project, "test_demo.py::test_ok")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hazard log" not in result.stdout


def test_a_mitigation_without_tests_or_a_reason_fails_the_run(tmp_path):
    project = make_project(tmp_path, ["test_demo.py::test_ok"], reason="")
    result = run_pytest(project, "--hazard-log", "hazards.yaml")
    assert "4 passed" in result.stdout
    assert result.returncode == 1
    assert ("HAZ-901 (A hazard of the tiny project) mitigation 2: names no test, so it must say why in "
            "no_test_reason") in result.stdout
