"""Build and load the package data: the PAS StructureDefinitions (snapshots), ValueSets and
CodeSystems of each supported IG version, reduced to what the pre-flight check reads.

Run `python -m pas_client.profile_data SRC_DIR VERSION` to rebuild one version's file from the
unmodified files of the published IG package (see pas_client/profiles/PROVENANCE.md).
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
VERSIONS = ("2.0.1", "2.2.1")

#: element keys the check uses; narrative and documentation keys are dropped
ELEMENT_KEYS = ("id", "path", "sliceName", "min", "max", "type", "binding", "constraint",
                "slicing", "mustSupport", "contentReference", "isModifier")
CONSTRAINT_KEYS = ("key", "severity", "human", "expression", "source")


def reduce_element(element: dict[str, Any]) -> dict[str, Any]:
    kept = {k: element[k] for k in ELEMENT_KEYS if k in element}
    kept.update({k: v for k, v in element.items() if k.startswith(("fixed", "pattern"))})
    if "constraint" in kept:
        kept["constraint"] = [{k: c[k] for k in CONSTRAINT_KEYS if k in c}
                              for c in kept["constraint"] if c.get("expression")]
    if "binding" in kept:
        kept["binding"] = {k: kept["binding"][k] for k in ("strength", "valueSet")
                           if k in kept["binding"]}
    return kept


def reduce_structure(sd: dict[str, Any]) -> dict[str, Any]:
    return {"url": sd["url"], "name": sd.get("name"), "type": sd["type"], "kind": sd.get("kind"),
            "baseDefinition": sd.get("baseDefinition"),
            "elements": [reduce_element(e) for e in sd.get("snapshot", {}).get("element", [])]}


def reduce_value_set(vs: dict[str, Any]) -> dict[str, Any]:
    return {"url": vs["url"], "compose": vs.get("compose", {}),
            "expansion": {"contains": vs.get("expansion", {}).get("contains", [])}}


def reduce_code_system(cs: dict[str, Any]) -> dict[str, Any]:
    return {"url": cs["url"], "content": cs.get("content"),
            "codes": sorted(_codes(cs.get("concept", [])))}


def _codes(concepts: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for concept in concepts:
        found.add(concept["code"])
        found |= _codes(concept.get("concept", []))
    return found


def build_package_data(source: Path, version: str) -> dict[str, Any]:
    data: dict[str, Any] = {"version": version, "structures": [], "valueSets": [],
                            "codeSystems": []}
    for path in sorted(source.glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        kind = resource.get("resourceType")
        if kind == "StructureDefinition":
            data["structures"].append(reduce_structure(resource))
        elif kind == "ValueSet":
            data["valueSets"].append(reduce_value_set(resource))
        elif kind == "CodeSystem":
            data["codeSystems"].append(reduce_code_system(resource))
    return data


@cache
def load_package_data(version: str) -> dict[str, Any]:
    if version not in VERSIONS:
        raise ValueError(f"PAS version {version!r} is not supported; use one of "
                         f"{', '.join(VERSIONS)}")
    path = PROFILES_DIR / f"pas-{version}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def main(argv: list[str]) -> int:
    source, version = Path(argv[0]), argv[1]
    data = build_package_data(source, version)
    out = PROFILES_DIR / f"pas-{version}.json"
    out.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True), encoding="utf-8")
    print(f"{out}: {len(data['structures'])} StructureDefinitions, "
          f"{len(data['valueSets'])} ValueSets, {len(data['codeSystems'])} CodeSystems")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
