"""The pytest plugin that keeps the hazard log true: with `--hazard-log PATH` (which `make test`
passes), the session fails unless every test the log names was collected and passed in this
same run, and the log itself is sound (tests/safety/hazard_log.py says what sound means).

Without the option nothing is checked, so a developer can run any subset (`pytest tests/unit`).

Under pytest-xdist the check runs on the controller only: the workers collect and run the tests,
the controller hears every worker's collection (`pytest_xdist_node_collection_finished`) and every
test report (`pytest_runtest_logreport`), and judges once the session ends. The verdict is a
failed exit status plus a section in the terminal summary naming each hazard and the test that
is missing or did not pass."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.safety import hazard_log

PLUGIN_NAME = "ipc-hazard-log-check"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("hazard log").addoption(
        "--hazard-log", metavar="PATH", default=None,
        help="fail the run unless every test this hazard log names exists and passes in it "
             "(make test passes docs/safety/hazard-log.yaml)")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("hazard_log")
    if path is None or hasattr(config, "workerinput"):  # xdist workers only run tests
        return
    config.pluginmanager.register(HazardCheck(config.invocation_params.dir / path, config), PLUGIN_NAME)


class HazardCheck:
    def __init__(self, path: Path, config: pytest.Config) -> None:
        self.path = path
        self.config = config
        self.collected: set[str] = set()
        self.outcomes: dict[str, str] = {}
        self.problems: list[str] = []
        self.named = 0

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected.update(item.nodeid for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        self.collected.update(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.outcomes.get(report.nodeid) == "failed":
            return  # a failure in any phase stands
        if report.failed or (report.when == "call" and hasattr(report, "wasxfail")):
            self.outcomes[report.nodeid] = "failed"
        elif report.skipped:
            self.outcomes[report.nodeid] = "skipped"
        elif report.when == "call":
            self.outcomes[report.nodeid] = "passed"

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        log = hazard_log.load(self.path)
        self.named = len(log.named_tests())
        self.problems = hazard_log.judge(log, self.collected, self.outcomes,
                                         ran=not self.config.option.collectonly)
        if self.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:  # noqa: ANN001 - pytest's TerminalReporter
        where = self._shown_path()
        if not self.problems:
            verdict = "exist" if self.config.option.collectonly else "exist and passed"
            terminalreporter.write_line(f"hazard log {where}: all {self.named} named tests {verdict}", green=True)
            return
        terminalreporter.section("hazard log check failed", sep="=", red=True, bold=True)
        terminalreporter.write_line(f"{where}: every test a hazard names must exist and pass in this run, and "
                                    "a mitigation without tests must say why (no_test_reason).")
        for problem in self.problems:
            terminalreporter.write_line(f"  {problem}", red=True)

    def _shown_path(self) -> str:
        try:
            return str(self.path.relative_to(self.config.rootpath))
        except ValueError:
            return str(self.path)
