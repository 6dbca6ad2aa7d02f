"""Bench section `validation`: what the whole check every write passes costs per resource
(hub.fhir.resources.check_structure: the base R4 rules — JSON rules, required bindings, invariants,
narrative — then the structure, then the IPC profiles) beside the structural check alone (the
fhir.resources model), on the same resources in the same run. Target: the whole check costs at
most 50% more than the structure alone. Runs in-process; needs no hub.

    python -m tests.bench.validation

Two corpora: the IPC guide's examples (every one in scope of an IPC profile) and the UK Core
examples (read from ../shared at bench time; those the hub accepts). Each resource is timed by
each measure in turns, 20 times (5 with --quick), in CPU time of this thread, and the fastest of
each is kept: a busy neighbour on the shared machine only ever slows a timing, so the fastest is
the cost itself. The figures are means over the resources; `extra` is the whole check's time over
the structure's, less one.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.resources import _model, check_structure, examine
from hub.fhir.validation import check_profiles, core, core_rules, validator
from hub.fhir.xml import xml_to_json
from hub.runtime.process import settle_heap
from tests.shared_data import UKCORE_EXAMPLES
from tests.validation_cases import example_paths

TARGET = 0.50


def _guide() -> list[dict[str, Any]]:
    found = [jsontext.loads(p.read_bytes()) for p in example_paths()]
    return [e["resource"] for b in found if b["resourceType"] == "Bundle" for e in b["entry"]] + \
        [r for r in found if r["resourceType"] != "Bundle"]


def _ukcore() -> list[dict[str, Any]]:
    out = []
    for path in sorted(UKCORE_EXAMPLES.glob("*.xml")):
        try:
            resource = xml_to_json(path.read_bytes())
        except FhirError:
            continue
        if examine(resource)[1] is None:
            out.append(resource)
    return out


def _structure(resource: dict[str, Any]) -> None:
    _model(resource["resourceType"]).model_validate(resource)


MEASURES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "structure": _structure, "whole": check_structure, "base": core.check, "profiles": check_profiles,
}


def measure(resources: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Per resource, the fastest of `repeats` timings of each measure (taken in turns, so a busy
    moment of the machine falls on all of them); the figures are the means over the resources."""
    best: dict[str, list[float]] = {name: [] for name in MEASURES}
    for resource in resources:
        check_structure(resource)          # compiled and warm first
        fastest = dict.fromkeys(MEASURES, float("inf"))
        for _ in range(repeats):
            for name, fn in MEASURES.items():
                started = time.thread_time()
                fn(resource)
                fastest[name] = min(fastest[name], time.thread_time() - started)
        for name, seconds in fastest.items():
            best[name].append(seconds)
    total = {name: sum(values) for name, values in best.items()}
    ratios = sorted(w / s - 1 for w, s in zip(best["whole"], best["structure"]))
    return {
        "resources": len(resources),
        **{f"{name}_us": seconds / len(resources) * 1e6 for name, seconds in total.items()},
        "extra": total["whole"] / total["structure"] - 1,
        "worst_resource_extra": ratios[-1],
        "median_resource_extra": statistics.median(ratios),
    }


def run(ctx: Any = None, args: Any = None) -> dict:
    repeats = 5 if getattr(ctx, "quick", False) else 20
    corpora = {"guide": _guide(), "ukcore": _ukcore()}
    validator()
    core_rules.rules()
    settle_heap()                          # as `ipc-hub api` and the workers run
    results = {name: measure(resources, repeats) for name, resources in corpora.items()}
    weight = {name: figures["resources"] for name, figures in results.items()}
    count = sum(weight.values())
    results["all"] = {"resources": count, **{
        key: sum(results[n][key] * weight[n] for n in weight) / count
        for key in ("structure_us", "whole_us", "base_us", "profiles_us")}}
    results["all"]["extra"] = results["all"]["whole_us"] / results["all"]["structure_us"] - 1
    return {"corpora": results, "target": TARGET, "repeats": repeats}


def print_result(result: dict) -> bool:
    ok = True
    print(f"  {'corpus':<8}{'resources':>10}{'structure µs':>14}{'whole µs':>10}{'base µs':>9}{'profiles µs':>13}"
          f"{'extra':>8}  target ≤ {result['target']}")
    for name, figures in result["corpora"].items():
        passed = figures["extra"] <= result["target"]
        ok = ok and passed
        worst = (f"  (per resource: median {figures['median_resource_extra']:.2f}, "
                 f"worst {figures['worst_resource_extra']:.2f})" if "worst_resource_extra" in figures else "")
        print(f"  {name:<8}{figures['resources']:>10}{figures['structure_us']:>14.0f}{figures['whole_us']:>10.0f}"
              f"{figures['base_us']:>9.0f}{figures['profiles_us']:>13.0f}{figures['extra']:>8.2f}"
              f"  {'PASS' if passed else 'FAIL'}{worst}")
    print("  µs per resource (CPU time, the fastest of the repeats for each resource); "
          "extra = whole / structure - 1")
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if print_result(run()) else 1)
