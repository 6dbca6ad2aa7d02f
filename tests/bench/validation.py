"""Bench section `validation`: IPC profile checks beside the structural check alone, on the same
resources (the guide's examples), in the same run. Target: profile checks cost at most 50% on top
of structural validation. Runs in-process; needs no hub.

    python -m tests.bench.validation
"""
from __future__ import annotations

import time
from typing import Any

from hub.fhir import jsontext
from hub.fhir.resources import _model
from hub.fhir.validation import check_profiles, validator
from tests.validation_cases import example_paths

TARGET = 0.50


def _resources() -> list[dict[str, Any]]:
    found = [jsontext.loads(p.read_bytes()) for p in example_paths()]
    return [e["resource"] for b in found if b["resourceType"] == "Bundle" for e in b["entry"]] + \
        [r for r in found if r["resourceType"] != "Bundle"]


def _time_per_resource(fn, resources, seconds: float) -> float:
    for r in resources:
        fn(r)
    rounds, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for r in resources:
            fn(r)
        rounds += 1
    return (time.perf_counter() - started) / (rounds * len(resources))


def run(ctx: Any = None, args: Any = None) -> dict:
    resources = _resources()
    validator()
    seconds = 1.0 if getattr(ctx, "quick", False) else 3.0
    structural = _time_per_resource(lambda r: _model(r["resourceType"]).model_validate(r), resources, seconds)
    profile = _time_per_resource(check_profiles, resources, seconds)
    return {"resources": len(resources), "structural_us": structural * 1e6, "profile_us": profile * 1e6,
            "ratio": profile / structural, "target": TARGET}


def print_result(result: dict) -> bool:
    ok = result["ratio"] <= TARGET
    print(f"  {result['resources']} resources: structural {result['structural_us']:.1f} µs, "
          f"profile checks {result['profile_us']:.1f} µs each")
    print(f"  profile / structural = {result['ratio']:.2f}  (target ≤ {TARGET})  {'PASS' if ok else 'FAIL'}")
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if print_result(run()) else 1)
