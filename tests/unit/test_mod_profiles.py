"""The profiles added for the MOD handover (ipc-referral, ipc-handover-task,
ipc-service-condition, the ipc-transition codes): their examples are valid, apply by scope without
a claim, and each mutation is refused naming the element at fault."""
from __future__ import annotations

import copy

import pytest

from hub.fhir.validation import profiles_for, validate
from tests.validation_cases import example

SD = "https://ipc-hub.example.org/fhir/StructureDefinition/"


@pytest.mark.parametrize("name", ["ServiceRequest-veteran-referral", "Task-veteran-handover",
                                  "Condition-veteran-spinal-injury"])
def test_examples_are_valid(name):
    assert validate(example(name)) == []


def test_profiles_are_listed_for_their_types():
    assert SD + "ipc-referral" in profiles_for("ServiceRequest")
    assert SD + "ipc-handover-task" in profiles_for("Task")
    assert SD + "ipc-service-condition" in profiles_for("Condition")


def _drop(path: str):
    def mutate(resource: dict) -> None:
        *parents, last = path.split(".")
        node = resource
        for part in parents:
            node = node[part]
        del node[last]
    return mutate


def _set(path: str, value):
    def mutate(resource: dict) -> None:
        *parents, last = path.split(".")
        node = resource
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return mutate


@pytest.mark.parametrize(("name", "mutate", "element"), [
    ("Task-veteran-handover", _drop("restriction.period"), "Task.restriction.period"),
    ("Task-veteran-handover", _drop("executionPeriod"), "Task.executionPeriod"),
    ("Task-veteran-handover", _drop("for"), "Task.for"),
    ("Task-veteran-handover", _drop("lastModified"), "Task.lastModified"),
    ("Task-veteran-handover", _set("intent", "plan"), "Task.intent"),
    ("ServiceRequest-veteran-referral", _drop("requester"), "ServiceRequest.requester"),
    ("ServiceRequest-veteran-referral", _drop("authoredOn"), "ServiceRequest.authoredOn"),
    ("ServiceRequest-veteran-referral", _set("intent", "proposal"), "ServiceRequest.intent"),
    ("Condition-veteran-spinal-injury", _set("code", {"text": "spinal injury"}), "Condition.code.coding"),
])
def test_mutations_are_refused_at_their_element(name, mutate, element):
    resource = copy.deepcopy(example(name))
    mutate(resource)
    errors = [i for i in validate(resource) if i.severity == "error"]
    assert errors, name
    assert any(element in i.diagnostics for i in errors), [i.diagnostics for i in errors]


def test_profiles_apply_by_scope_without_a_claim():
    task = copy.deepcopy(example("Task-veteran-handover"))
    del task["meta"]
    del task["restriction"]
    assert any("ipc-handover-task" in i.diagnostics for i in validate(task))
