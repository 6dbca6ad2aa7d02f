"""The IPC implementation guide as loaded from `profiles/`: StructureDefinitions, CodeSystems,
ValueSets, SearchParameters, Questionnaires and examples, read once per process (the files are data; nothing here writes them)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from hub.fhir.identifiers import CANONICAL_BASE

# ChargeItemDefinition: the activity tariffs shipped as data (profiles/ChargeItemDefinition/, see
# profiles/README.md), served and loaded with the guide; Questionnaire: the outcome measures.
CONFORMANCE_TYPES = ("StructureDefinition", "CodeSystem", "ValueSet", "SearchParameter", "ChargeItemDefinition",
                     "Questionnaire")


def profiles_dir() -> Path:
    """HUB_PROFILES_DIR, else `profiles/` at the repository root (beside `hub/`)."""
    configured = os.environ.get("HUB_PROFILES_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "profiles"


@dataclass(frozen=True)
class Guide:
    structure_definitions: dict[str, dict[str, Any]]   # by canonical url
    code_systems: dict[str, dict[str, Any]]
    value_sets: dict[str, dict[str, Any]]
    # The guide's own search parameters (e.g. CarePlan `coordinator`), searched like R4's.
    search_parameters: dict[str, dict[str, Any]]
    # Definitions loaded as data: the illustrative NHS activity tariffs (ipc-tariff).
    charge_item_definitions: dict[str, dict[str, Any]]
    # The outcome measures (ONS personal wellbeing, goal attainment scaling, the licensed
    # instruments' structure): what an outcome QuestionnaireResponse answers.
    questionnaires: dict[str, dict[str, Any]]

    def conformance_resources(self) -> list[dict[str, Any]]:
        """Everything the hub serves at /fhir/StructureDefinition, /CodeSystem, /ValueSet,
        /SearchParameter and /Questionnaire."""
        return [*self.structure_definitions.values(), *self.code_systems.values(),
                *self.value_sets.values(), *self.search_parameters.values(),
                *self.charge_item_definitions.values(), *self.questionnaires.values()]

    def profiles(self) -> list[dict[str, Any]]:
        """The resource profiles (not the extensions)."""
        return [sd for sd in self.structure_definitions.values() if sd["kind"] == "resource"]


@lru_cache(maxsize=1)
def load_guide() -> Guide:
    return read_guide(profiles_dir())


def read_guide(folder: Path) -> Guide:
    found: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in CONFORMANCE_TYPES}
    for res_type in CONFORMANCE_TYPES:
        for path in sorted((folder / res_type).glob("*.json")):
            resource = json.loads(path.read_text())
            if resource.get("resourceType") != res_type:
                raise ValueError(f"{path} holds a {resource.get('resourceType')}, not a {res_type}")
            if not resource["url"].startswith(CANONICAL_BASE + "/"):
                raise ValueError(f"{path}: url {resource['url']} is not under {CANONICAL_BASE}")
            found[res_type][f"{resource['url']}|{resource.get('version', '')}"
                            if res_type == "ChargeItemDefinition" else resource["url"]] = resource
    return Guide(found["StructureDefinition"], found["CodeSystem"], found["ValueSet"], found["SearchParameter"],
                 found["ChargeItemDefinition"], found["Questionnaire"])


def example_paths(folder: Path | None = None) -> list[Path]:
    return sorted(((folder or profiles_dir()) / "examples").glob("*.json"))
