"""Finds the mapping for an envelope's kind without the hub importing `mappings` statically.

Mapping packages are named in HUB_MAPPINGS (module names, imported with importlib) or
advertised through the `ipc_hub.mappings` entry-point group. Each module has a `MAPPINGS` dict:
kind → function(payload: bytes, source: str) → FHIR transaction Bundle (or, for a merge, a
Parameters resource). A `source/kind` key overrides `kind` for one source."""
from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

Mapping = Callable[[bytes, str], dict[str, Any]]


class Registry:
    def __init__(self, modules: Iterable[str]) -> None:
        self._mappings: dict[str, Mapping] = {}
        names = [m.strip() for m in modules if m.strip()]
        names += [ep.value for ep in entry_points(group="ipc_hub.mappings")]
        for name in names:
            module = importlib.import_module(name)
            self._mappings.update(getattr(module, "MAPPINGS", {}))
        log.info("mappings loaded for %d kinds", len(self._mappings))

    def find(self, source: str, kind: str) -> Mapping | None:
        return self._mappings.get(f"{source}/{kind}") or self._mappings.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._mappings)
