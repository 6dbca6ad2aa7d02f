"""The hazard log (docs/safety/hazard-log.yaml): read it, check it, judge a test run against it,
and render it as the Markdown table people read (docs/safety/hazard-log.md).

Why this lives with the tests: the log is only worth something while every test it names exists
and passes, so the test suite is what keeps it true (tests/safety/plugin.py runs the check at the
end of `make test`). Rendering is here too, so the YAML and its table never disagree.

    .venv/bin/python -m tests.safety.hazard_log            # rewrite docs/safety/hazard-log.md
    .venv/bin/python -m tests.safety.hazard_log --check    # exit 1 if the log is invalid or the table is stale
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
LOG_PATH = ROOT / "docs" / "safety" / "hazard-log.yaml"
TABLE_PATH = ROOT / "docs" / "safety" / "hazard-log.md"
SCHEMA_PATH = Path(__file__).with_name("hazard-log.schema.json")

SEVERITIES = ("minor", "significant", "considerable", "major", "catastrophic")
LIKELIHOODS = ("very low", "low", "medium", "high", "very high")
# DCB0129's clinical risk matrix: MATRIX[likelihood][severity index] is the risk, 1 to 5.
MATRIX = {
    "very high": (3, 4, 4, 5, 5),
    "high": (2, 3, 3, 4, 5),
    "medium": (2, 2, 3, 3, 4),
    "low": (1, 2, 2, 3, 4),
    "very low": (1, 1, 2, 2, 3),
}
# What each risk level asks for (DCB0129's acceptability scale, in short).
ACCEPTABILITY = {
    1: "acceptable; no further action",
    2: "acceptable where further reduction is impractical or costs more than it gains",
    3: "undesirable; reduce it unless that is impractical",
    4: "unacceptable; the hazard must be removed or controlled",
    5: "unacceptable",
}
# Residual risk at which a hazard must stay open with a planned mitigation naming its issue.
UNACCEPTABLE = 4


def risk(severity: str, likelihood: str) -> int:
    """The DCB0129 matrix lookup (not a product of scores)."""
    return MATRIX[likelihood][SEVERITIES.index(severity)]


@dataclass(frozen=True, slots=True)
class NamedTest:
    hazard: str  # "HAZ-001 (title)"
    test_id: str


class HazardLog:
    """The parsed log and the problems found while reading it (empty when it is sound)."""

    def __init__(self, data: Any, problems: list[str]) -> None:
        self.data = data
        self.problems = problems

    @property
    def hazards(self) -> list[dict[str, Any]]:
        if not self.problems and isinstance(self.data, dict):
            return self.data["hazards"]
        return []

    def named_tests(self) -> list[NamedTest]:
        return [NamedTest(_label(h), test) for h in self.hazards
                for m in h["mitigations"] for test in m["tests"]]


def load(path: Path | str = LOG_PATH) -> HazardLog:
    """Read and check a hazard log; a log that cannot be read is a log with problems."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return HazardLog(None, [f"the hazard log {path} cannot be read: {exc.strerror}"])
    except yaml.YAMLError as exc:
        return HazardLog(None, [f"the hazard log {path} is not valid YAML: {exc}"])
    return HazardLog(data, check(data))


def check(data: Any) -> list[str]:
    """Every problem with the log's content: its shape (the JSON Schema), then the rules a
    schema cannot say. Each problem names the hazard it is in."""
    validator = Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    shape = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if shape:
        return [f"{_where(data, list(e.absolute_path))}: {e.message}" for e in shape]
    problems: list[str] = []
    seen: set[str] = set()
    for hazard in data["hazards"]:
        label = _label(hazard)
        if hazard["id"] in seen:
            problems.append(f"{label}: the id {hazard['id']} is used twice")
        seen.add(hazard["id"])
        for name in ("initial", "residual"):
            assessed = hazard[name]
            expected = risk(assessed["severity"], assessed["likelihood"])
            if assessed["risk"] != expected:
                problems.append(f"{label}: {name} risk is {assessed['risk']} but the DCB0129 matrix gives "
                                f"{expected} for {assessed['severity']} × {assessed['likelihood']}")
        if hazard["residual"]["risk"] > hazard["initial"]["risk"]:
            problems.append(f"{label}: residual risk is higher than the initial risk")
        planned = [m for m in hazard["mitigations"] if m["kind"] == "planned"]
        if hazard["residual"]["risk"] >= UNACCEPTABLE and (hazard["status"] != "open" or not planned):
            problems.append(f"{label}: residual risk {hazard['residual']['risk']} is unacceptable, so the hazard "
                            "must stay open with a planned mitigation naming the issue that reduces it")
        if hazard["status"] == "closed" and planned:
            problems.append(f"{label}: a closed hazard still lists planned mitigations")
        for number, mitigation in enumerate(hazard["mitigations"], 1):
            problems += _mitigation_problems(f"{label} mitigation {number}", mitigation)
    return problems


def _mitigation_problems(where: str, mitigation: dict[str, Any]) -> list[str]:
    problems = []
    tests, reason = mitigation["tests"], mitigation.get("no_test_reason")
    if mitigation["kind"] == "software" and not tests:
        problems.append(f"{where}: a software mitigation must name the tests that prove it")
    if not tests and not reason:
        problems.append(f"{where}: names no test, so it must say why in no_test_reason")
    if tests and reason:
        problems.append(f"{where}: names tests and a no_test_reason; keep one")
    if mitigation["kind"] == "planned" and "issue" not in mitigation:
        problems.append(f"{where}: a planned mitigation must name the issue that builds it")
    return problems


def _label(hazard: Mapping[str, Any]) -> str:
    return f"{hazard.get('id', '?')} ({hazard.get('title', 'untitled')})"


def _where(data: Any, path: list[Any]) -> str:
    """'HAZ-004 (title), mitigations/2/tests/0' for a schema error inside a hazard."""
    if len(path) >= 2 and path[0] == "hazards" and isinstance(data, dict):
        hazard = data["hazards"][path[1]]
        rest = "/".join(str(p) for p in path[2:])
        label = _label(hazard) if isinstance(hazard, dict) else f"hazards/{path[1]}"
        return f"{label}{', ' + rest if rest else ''}"
    return "/".join(str(p) for p in path) or "the hazard log"


# --- judging a test run ---------------------------------------------------------------------


def judge(log: HazardLog, collected: Iterable[str], outcomes: Mapping[str, str], *,
          ran: bool = True) -> list[str]:
    """Why this run does not support the log (empty when it does). `collected`: every node id
    the run collected; `outcomes`: node id → passed, failed or skipped for those that ran. A
    name without parameters (`…::test_x`) stands for every parametrisation of that test. With
    `ran` false (collection only) existence alone is checked."""
    problems = list(log.problems)
    known = set(collected) | set(outcomes)
    for named in log.named_tests():
        matches = sorted(n for n in known if n == named.test_id or n.startswith(named.test_id + "["))
        if not matches:
            problems.append(f"{named.hazard}: {named.test_id} was not collected (no such test, or deselected)")
            continue
        if not ran:
            continue
        for node in matches:
            outcome = outcomes.get(node)
            if outcome == "passed":
                continue
            what = {"failed": "failed", "skipped": "was skipped"}.get(
                outcome or "", "did not run (deselected, or the run stopped early)")
            problems.append(f"{named.hazard}: {node} {what}")
    return problems


# --- the rendered table ---------------------------------------------------------------------


def render(log: HazardLog) -> str:
    """docs/safety/hazard-log.md from the log: the matrix, a summary row per hazard, then each
    hazard in full."""
    out = [
        "<!-- Generated from hazard-log.yaml by `python -m tests.safety.hazard_log`: edit the YAML, "
        "not this file. -->",
        "# IPC Hub hazard log",
        "",
        "The clinical hazards of IPC Hub under DCB0129, with each hazard's causes, its effect on the",
        "person, its risk before and after the mitigations, and the tests that prove each mitigation the",
        "software provides. `make test` fails if a test named here is missing or does not pass. How to",
        "read and change it: [README.md](README.md); the argument built on it:",
        "[safety-case.md](safety-case.md).",
        "",
        "## Risk matrix (DCB0129)",
        "",
        "| likelihood \\ severity | " + " | ".join(SEVERITIES) + " |",
        "| --- | " + " | ".join("---" for _ in SEVERITIES) + " |",
    ]
    out += [f"| {likelihood} | " + " | ".join(str(r) for r in MATRIX[likelihood]) + " |"
            for likelihood in reversed(LIKELIHOODS)]
    out += ["", "| risk | meaning |", "| --- | --- |"]
    out += [f"| {level} | {meaning} |" for level, meaning in ACCEPTABILITY.items()]
    out += ["", "## Summary", "",
            "| id | hazard | status | initial risk | residual risk | planned in issues |",
            "| --- | --- | --- | --- | --- | --- |"]
    for hazard in log.hazards:
        issues = sorted({m["issue"] for m in hazard["mitigations"] if m["kind"] == "planned"})
        out.append(f"| [{hazard['id']}](#{hazard['id'].lower()}) | {_cell(hazard['title'])} | {hazard['status']} | "
                   f"{_risk(hazard['initial'])} | {_risk(hazard['residual'])} | "
                   f"{', '.join(str(i) for i in issues) or '—'} |")
    for hazard in log.hazards:
        out += ["", f'<a id="{hazard["id"].lower()}"></a>', "", f"## {hazard['id']}: {_text(hazard['title'])}", "",
                f"**Status:** {hazard['status']}. **Initial risk:** {_risk(hazard['initial'])}. "
                f"**Residual risk:** {_risk(hazard['residual'])}.", "", "**Causes**", ""]
        out += [f"- {_text(cause)}" for cause in hazard["causes"]]
        out += ["", f"**Effect on the person:** {_text(hazard['effect'])}", "", "**Mitigations**", ""]
        for number, mitigation in enumerate(hazard["mitigations"], 1):
            out += _render_mitigation(number, mitigation)
        out += ["", f"**Residual risk:** {_risk(hazard['residual'])}: {_text(hazard['residual']['reason'])}"]
    return "\n".join(out) + "\n"


def _render_mitigation(number: int, mitigation: dict[str, Any]) -> list[str]:
    kind = {"software": "Software", "procedural": "Procedural (the deploying organisation)",
            "planned": f"Planned (issue {mitigation.get('issue')})"}[mitigation["kind"]]
    line = f"{number}. *{kind}:* {_text(mitigation['text'])}"
    if mitigation.get("code"):
        line += " Code: " + ", ".join(f"`{c}`" for c in mitigation["code"]) + "."
    lines = [line]
    if mitigation["tests"]:
        lines.append("   Tests:")
        lines += [f"   - `{test}`" for test in mitigation["tests"]]
    else:
        lines.append(f"   No test: {_text(mitigation['no_test_reason'])}")
    return lines


def _risk(assessed: Mapping[str, Any]) -> str:
    return f"{assessed['risk']} ({assessed['severity']} × {assessed['likelihood']})"


def _text(value: str) -> str:
    return " ".join(value.split())


def _cell(value: str) -> str:
    return _text(value).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.safety.hazard_log", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the table is out of date")
    args = parser.parse_args(argv)
    log = load(LOG_PATH)
    if log.problems:
        print("\n".join(log.problems), file=sys.stderr)
        return 1
    text = render(log)
    if args.check:
        current = TABLE_PATH.read_text(encoding="utf-8") if TABLE_PATH.exists() else ""
        if current != text:
            print(f"{TABLE_PATH.relative_to(ROOT)} is out of date: run python -m tests.safety.hazard_log",
                  file=sys.stderr)
            return 1
        return 0
    TABLE_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {TABLE_PATH.relative_to(ROOT)} ({len(log.hazards)} hazards)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
