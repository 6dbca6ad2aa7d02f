"""The hazard log itself: sound, rendered, and consistent with the documents that cite it; and
the rules of the check, one by one, on small logs made here."""
from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import pytest

from tests.safety import hazard_log
from tests.safety.hazard_log import ROOT, HazardLog, check, judge, load, render, risk

SAFETY_CASE = ROOT / "docs" / "safety" / "safety-case.md"
DPIA = ROOT / "docs" / "ig" / "dpia.md"
SAFETY_README = ROOT / "docs" / "safety" / "README.md"
HAZARD_ID = re.compile(r"\bHAZ-\d{3}\b")
# A path in the repository quoted in a document: `hub/…`, `tests/x.py::test_y`, `docker-compose.yml`.
CITED = re.compile(r"`((?:hub|connectors|mappings|profiles|deploy|docs|tests)/[^`\s]*|docker-compose\.yml)`")


def test_the_projects_hazard_log_is_sound():
    log = load()
    assert log.problems == []
    assert len(log.hazards) >= 12  # the minimum list of issue 21
    assert all(named.test_id.startswith("tests/") for named in log.named_tests())


def test_the_rendered_table_is_current():
    assert hazard_log.TABLE_PATH.read_text(encoding="utf-8") == render(load()), \
        "docs/safety/hazard-log.md is out of date: run .venv/bin/python -m tests.safety.hazard_log"


def test_every_code_path_a_mitigation_names_exists():
    missing = [(h["id"], path) for h in load().hazards for m in h["mitigations"]
               for path in m.get("code", []) if not (ROOT / path).exists()]
    assert missing == []


def test_the_documents_cite_only_hazards_that_exist_and_the_case_names_every_unacceptable_one():
    ids = {h["id"] for h in load().hazards}
    for document in (SAFETY_CASE, DPIA, SAFETY_README, ROOT / "README.md"):
        cited = set(HAZARD_ID.findall(document.read_text(encoding="utf-8")))
        assert cited <= ids, f"{document.name} cites {sorted(cited - ids)}"
    unacceptable = {h["id"] for h in load().hazards if h["residual"]["risk"] >= hazard_log.UNACCEPTABLE}
    assert unacceptable <= set(HAZARD_ID.findall(SAFETY_CASE.read_text(encoding="utf-8")))


def _tests_defined_in(path: Path) -> set[str]:
    """`test_x` and `TestClass::test_x` for each test function the file defines."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{f.name}" for f in node.body
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def test_every_path_and_test_the_documents_cite_exists():
    """The safety case and the DPIA point at code and tests: each must be there (tests the hazard
    log names are checked harder, by running them)."""
    dangling = []
    for document in (SAFETY_CASE, DPIA, SAFETY_README):
        for cited in CITED.findall(document.read_text(encoding="utf-8")):
            path, _, test = cited.partition("::")
            found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
            if not found:
                dangling.append(f"{document.name}: {cited}")
            elif test and test.split("[")[0] not in _tests_defined_in(found[0]):
                dangling.append(f"{document.name}: {cited} (no such test)")
    assert dangling == []


def test_the_matrix_is_dcb0129s():
    assert risk("catastrophic", "very high") == 5 and risk("minor", "very low") == 1
    assert risk("major", "high") == 4 and risk("major", "medium") == 3 and risk("considerable", "low") == 2
    assert risk("catastrophic", "very low") == 3 and risk("minor", "very high") == 3
    for likelihood in hazard_log.LIKELIHOODS:  # never lower for a worse outcome or a likelier one
        row = [risk(s, likelihood) for s in hazard_log.SEVERITIES]
        assert row == sorted(row)
    for severity in hazard_log.SEVERITIES:
        column = [risk(severity, likelihood) for likelihood in hazard_log.LIKELIHOODS]
        assert column == sorted(column)


# --- the rules, on a small log ----------------------------------------------------------------

GOOD = {"hazards": [{
    "id": "HAZ-900", "title": "A test hazard", "status": "open",
    "causes": ["a cause"], "effect": "an effect on the person",
    "initial": {"severity": "major", "likelihood": "high", "risk": 4},
    "mitigations": [
        {"kind": "software", "text": "built and tested", "tests": ["tests/unit/test_x.py::test_y"]},
        {"kind": "planned", "issue": 99, "text": "to build", "tests": [], "no_test_reason": "not built yet"},
    ],
    "residual": {"severity": "major", "likelihood": "medium", "risk": 3, "reason": "because"},
}]}


def changed(edit) -> dict:
    data = copy.deepcopy(GOOD)
    edit(data["hazards"][0])
    return data


def test_a_sound_small_log_has_no_problems():
    assert check(GOOD) == []


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda h: h["mitigations"][1].pop("no_test_reason"), "HAZ-900 (A test hazard) mitigation 2: names no test, so it must say why"),
    (lambda h: h["mitigations"][0].update(tests=[]), "mitigation 1: a software mitigation must name the tests"),
    (lambda h: h["mitigations"][1].pop("issue"), "mitigation 2: a planned mitigation must name the issue"),
    (lambda h: h["mitigations"][0].update(no_test_reason="also"), "names tests and a no_test_reason"),
    (lambda h: h["initial"].update(risk=3), "initial risk is 3 but the DCB0129 matrix gives 4 for major × high"),
    (lambda h: h["residual"].update(likelihood="very high", risk=5), "residual risk is higher than the initial risk"),
    (lambda h: h.update(mitigations=h["mitigations"][:1], residual={**h["residual"], "likelihood": "high", "risk": 4}),
     "residual risk 4 is unacceptable, so the hazard must stay open with a planned mitigation"),
    (lambda h: h.update(status="closed"), "a closed hazard still lists planned mitigations"),
    (lambda h: h["residual"].pop("reason"), "HAZ-900 (A test hazard), residual: 'reason' is a required property"),
    (lambda h: h["mitigations"][0].update(tests=["test_x"]), "HAZ-900 (A test hazard), mitigations/0/tests/0:"),
    (lambda h: h["initial"].update(severity="bad"), "HAZ-900 (A test hazard), initial/severity: 'bad' is not one of"),
], ids=["no-reason", "software-untested", "planned-without-issue", "tests-and-reason", "wrong-risk",
        "residual-above-initial", "unacceptable-without-plan", "closed-with-plans", "residual-without-reason",
        "not-a-node-id", "unknown-severity"])
def test_each_rule_names_the_hazard(edit, expected):
    problems = check(changed(edit))
    assert any(expected in p for p in problems), problems


def test_an_id_used_twice_is_a_problem():
    data = copy.deepcopy(GOOD)
    data["hazards"].append(copy.deepcopy(GOOD["hazards"][0]))
    assert check(data) == ["HAZ-900 (A test hazard): the id HAZ-900 is used twice"]


def test_a_log_that_cannot_be_read_is_a_problem(tmp_path: Path):
    assert "cannot be read" in load(tmp_path / "absent.yaml").problems[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text("hazards: [\n", encoding="utf-8")
    assert "is not valid YAML" in load(broken).problems[0]


# --- judging a run ------------------------------------------------------------------------------


def small_log(*tests: str) -> HazardLog:
    data = changed(lambda h: h["mitigations"][0].update(tests=list(tests)))
    return HazardLog(data, check(data))


def test_a_run_where_every_named_test_passed_supports_the_log():
    log = small_log("tests/a.py::test_one", "tests/a.py::test_param")
    collected = ["tests/a.py::test_one", "tests/a.py::test_param[x]", "tests/a.py::test_param[y]", "tests/a.py::test_other"]
    outcomes = {node: "passed" for node in collected[:3]} | {"tests/a.py::test_other": "failed"}
    assert judge(log, collected, outcomes) == []


def test_each_way_a_named_test_can_let_the_log_down_is_named():
    log = small_log("tests/a.py::test_gone", "tests/a.py::test_red", "tests/a.py::test_skip",
                    "tests/a.py::test_param", "tests/a.py::test_deselected")
    collected = ["tests/a.py::test_red", "tests/a.py::test_skip", "tests/a.py::test_param[x]",
                 "tests/a.py::test_param[y]", "tests/a.py::test_deselected"]
    outcomes = {"tests/a.py::test_red": "failed", "tests/a.py::test_skip": "skipped",
                "tests/a.py::test_param[x]": "passed", "tests/a.py::test_param[y]": "failed"}
    assert judge(log, collected, outcomes) == [
        "HAZ-900 (A test hazard): tests/a.py::test_gone was not collected (no such test, or deselected)",
        "HAZ-900 (A test hazard): tests/a.py::test_red failed",
        "HAZ-900 (A test hazard): tests/a.py::test_skip was skipped",
        "HAZ-900 (A test hazard): tests/a.py::test_param[y] failed",
        "HAZ-900 (A test hazard): tests/a.py::test_deselected did not run (deselected, or the run stopped early)",
    ]


def test_collection_alone_checks_only_that_the_named_tests_exist():
    log = small_log("tests/a.py::test_one", "tests/a.py::test_gone")
    assert judge(log, ["tests/a.py::test_one"], {}, ran=False) == [
        "HAZ-900 (A test hazard): tests/a.py::test_gone was not collected (no such test, or deselected)"]


def test_a_name_is_a_test_or_its_parametrisations_never_a_prefix_of_another_test():
    log = small_log("tests/a.py::test_one")
    assert judge(log, ["tests/a.py::test_one_more"], {"tests/a.py::test_one_more": "passed"}) == [
        "HAZ-900 (A test hazard): tests/a.py::test_one was not collected (no such test, or deselected)"]


def test_problems_with_the_log_itself_fail_the_run_too():
    data = changed(lambda h: h["mitigations"][1].pop("no_test_reason"))
    log = HazardLog(data, check(data))
    assert judge(log, ["tests/unit/test_x.py::test_y"], {"tests/unit/test_x.py::test_y": "passed"}) == [
        "HAZ-900 (A test hazard) mitigation 2: names no test, so it must say why in no_test_reason"]
