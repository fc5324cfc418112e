"""Build and load the definitions the pre-flight check compiles: the PAS StructureDefinitions,
every base FHIR R4 datatype and resource definition they reach, the extensions and profiles of
their dependencies, and the value sets of their required bindings, expanded here once.

    python -m pas_client.profile_data --sources DIR

reads the package tarballs in DIR (the ones npm serves are fetched with `npm pack` when
missing), checks each one's sha256 and writes `pas_client/profiles/*.json.gz`. Which package
gives what, and what could not be had, is in pas_client/profiles/PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pas_client.terminology_build import ValueSetIndex, compile_value_set

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
VERSIONS = ("2.0.1", "2.2.1")
BASE = "http://hl7.org/fhir/StructureDefinition/"
FHIRPATH_TYPES = "http://hl7.org/fhirpath/System."


@dataclass(frozen=True)
class Source:
    name: str
    version: str
    sha256: str
    npm: bool  # served by the npm registry (fetched when missing)

    @property
    def file(self) -> str:
        return f"{self.name}-{self.version}.tgz"


CORE = Source("hl7.fhir.r4.examples", "4.0.1",
              "dce87f1b5b9341867033f7d1f544fa1b5232503f6d62813887ac6b8a8b6cb682", True)
TERMINOLOGY = Source("hl7.terminology.r4", "7.0.1",
                     "170c546f761fb51b3355788ca500206f6b772b21c57348c29205de85a6612baa", True)
EXTENSIONS = Source("hl7.fhir.uv.extensions.r4", "5.3.0-ballot-tc1",
                    "54f70616bbd444ba0259d5fc5a5c978d463971865f23dcef3103081f529ad213", True)
PAS = {"2.0.1": Source("hl7.fhir.us.davinci-pas", "2.0.1",
                       "1ba4159f2a1ea000dfb1685601bfc902c603a1c59ce2127118ee0a7aec694218", False),
       "2.2.1": Source("hl7.fhir.us.davinci-pas", "2.2.1",
                       "da2aac8e480ce66fe27812af18e3c9bc190b08a33d5d7e1c850caf9097fb210e", False)}
US_CORE = {
    "3.1.1": Source("hl7.fhir.us.core", "3.1.1",
                    "ff0fcb892952090d61f8f1604a9d70081136f14b53ba370f1f102e4143ada152", False),
    "6.1.0": Source("hl7.fhir.us.core", "6.1.0",
                    "4c4e7fbb07ef2fdb35bdfc3f5d09a417ee0d8644ea17cb3692ca6d03c4358b1d", False),
    "7.0.0": Source("hl7.fhir.us.core", "7.0.0",
                    "9729f05d9518fc66a114dadb0d47e6b868d5c04093edc9645d2025447e79d0fc", False)}
CRD = Source("hl7.fhir.us.davinci-crd", "2.0.1",
             "fa7811919b19ca34ef7483f03a7ea26100a6044db87ae9a0606d2e414f56ff93", False)
#: the packages behind each PAS version, most specific first (the first that defines a URL wins)
STACKS = {"2.0.1": [PAS["2.0.1"], US_CORE["3.1.1"], CRD, TERMINOLOGY, EXTENSIONS, CORE],
          "2.2.1": [PAS["2.2.1"], US_CORE["7.0.0"], US_CORE["6.1.0"], US_CORE["3.1.1"],
                    TERMINOLOGY, EXTENSIONS, CORE]}
#: PAS dependencies that no registry reachable from here serves (see PROVENANCE.md)
UNAVAILABLE = {
    "2.0.1": ["hl7.terminology.r4#5.3.0 (7.0.1 used)", "hl7.fhir.uv.extensions.r4#1.0.0 "
              "(5.3.0-ballot-tc1 used)", "hl7.fhir.us.davinci-crd#2.0.0 (2.0.1 used)",
              "hl7.fhir.uv.subscriptions-backport.r4#1.1.0"],
    "2.2.1": ["hl7.terminology.r4#7.1.0 (7.0.1 used)", "hl7.fhir.uv.extensions.r4#5.2.0 "
              "(5.3.0-ballot-tc1 used)", "hl7.fhir.us.davinci-crd#2.2.1",
              "hl7.fhir.us.davinci-hrex#1.2.0", "hl7.fhir.us.davinci-cdex#2.1.0",
              "hl7.fhir.uv.sdc#4.0.0", "hl7.fhir.uv.subscriptions-backport.r4#1.1.0",
              "hl7.fhir.uv.tools.r4#1.1.2", "hl7.fhir.uv.xver-r5.r4#0.1.0"]}
#: resources a PAS exchange carries besides those the profiles reference
ALWAYS = ("Bundle", "Parameters", "OperationOutcome", "Binary", "Basic", "Provenance",
          "SubscriptionStatus", "QuestionnaireResponse", "Questionnaire", "Observation",
          "Condition", "Procedure", "CareTeam", "HealthcareService", "RelatedPerson",
          "Device", "Medication", "Appointment")

ELEMENT_KEYS = ("id", "path", "sliceName", "min", "max", "type", "binding", "constraint",
                "slicing", "mustSupport", "contentReference", "isModifier", "maxLength")
CONSTRAINT_KEYS = ("key", "severity", "human", "expression", "source")
CONFORMANCE = ("StructureDefinition", "ValueSet", "CodeSystem")


# --- reading the packages ---------------------------------------------------------------------
def read_package(path: Path) -> dict[str, dict[str, Any]]:
    """Conformance resources of one npm-format package tarball, by canonical URL."""
    found: dict[str, dict[str, Any]] = {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            name = member.name
            if not member.isfile() or not name.endswith(".json") or name.count("/") != 1:
                continue
            if not name.split("/", 1)[1].startswith(CONFORMANCE):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            try:
                resource = json.loads(handle.read())
            except ValueError:
                continue
            if resource.get("resourceType") in CONFORMANCE and resource.get("url"):
                found.setdefault(resource["url"], resource)
    return found


def fetch(source: Source, sources: Path) -> Path:
    path = sources / source.file
    if not path.exists() and source.npm:
        print(f"npm pack {source.name}@{source.version} ...", file=sys.stderr)
        subprocess.run(["npm", "pack", f"{source.name}@{source.version}", "--silent",
                        "--pack-destination", str(sources)], check=True)
    if not path.exists():
        raise SystemExit(f"{path} is missing; see pas_client/profiles/PROVENANCE.md for where "
                         f"{source.name}#{source.version} comes from")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if source.sha256 and digest != source.sha256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {source.sha256}")
    return path


# --- reducing --------------------------------------------------------------------------------
def strip_version(url: str) -> str:
    return url.split("|", 1)[0]


def reduce_element(element: dict[str, Any]) -> dict[str, Any]:
    kept = {k: element[k] for k in ELEMENT_KEYS if k in element}
    kept.update({k: v for k, v in element.items() if k.startswith(("fixed", "pattern"))})
    if element.get("base", {}).get("max") not in (None, kept.get("max")):
        kept["baseMax"] = element["base"]["max"]
    if "type" in kept:
        kept["type"] = [{k: t[k] for k in ("code", "profile", "targetProfile") if k in t}
                        for t in kept["type"]]
    if "constraint" in kept:
        kept["constraint"] = [{k: c[k] for k in CONSTRAINT_KEYS if k in c}
                              for c in kept["constraint"] if c.get("expression")]
    if "binding" in kept:
        kept["binding"] = {k: kept["binding"][k] for k in ("strength", "valueSet")
                           if k in kept["binding"]}
    return kept


def reduce_structure(sd: dict[str, Any]) -> dict[str, Any]:
    return {"url": sd["url"], "type": sd["type"], "kind": sd.get("kind"),
            "derivation": sd.get("derivation"), "abstract": sd.get("abstract", False),
            "version": sd.get("version"),
            "elements": [reduce_element(e) for e in sd.get("snapshot", {}).get("element", [])]}


# --- what the PAS profiles reach ----------------------------------------------------------------
@dataclass
class Stack:
    """The packages behind one PAS version, looked up most specific first."""

    packages: list[tuple[Source, dict[str, dict[str, Any]]]]

    def get(self, url: str) -> tuple[Source, dict[str, Any]] | None:
        bare = strip_version(url)
        for source, resources in self.packages:
            if bare in resources:
                return source, resources[bare]
        return None

    def all_structures(self) -> dict[str, str]:
        types: dict[str, str] = {}
        for _, resources in reversed(self.packages):
            types.update({u: r["type"] for u, r in resources.items()
                          if r["resourceType"] == "StructureDefinition"})
        return types


def reachable(stack: Stack) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """StructureDefinitions the check needs and the required-binding value sets they use."""
    pas = stack.packages[0][1]
    todo = [u for u, r in pas.items() if r["resourceType"] == "StructureDefinition"]
    todo += [BASE + name for name in ALWAYS]
    structures: dict[str, dict[str, Any]] = {}
    value_sets: set[str] = set()
    while todo:
        url = strip_version(todo.pop())
        if url in structures:
            continue
        found = stack.get(url)
        if found is None or found[1]["resourceType"] != "StructureDefinition":
            continue
        source, sd = found
        if not sd.get("snapshot"):
            continue
        structures[url] = reduce_structure(sd)
        structures[url]["package"] = f"{source.name}#{source.version}"
        for element in sd["snapshot"]["element"]:
            for type_ in element.get("type", []):
                code = type_["code"]
                if not code.startswith(FHIRPATH_TYPES):
                    todo.append(code if code.startswith("http") else BASE + code)
                todo.extend(type_.get("profile", []))
                for target in type_.get("targetProfile", []):
                    target_found = stack.get(target)
                    if target_found is not None:
                        todo.append(BASE + target_found[1]["type"])
                        if target_found[0] is stack.packages[0][0]:
                            todo.append(target)
            binding = element.get("binding", {})
            if binding.get("strength") == "required" and binding.get("valueSet"):
                value_sets.add(strip_version(binding["valueSet"]))
    return structures, value_sets


def build(version: str, sources: Path) -> dict[str, Any]:
    stack = Stack([(s, read_package(fetch(s, sources))) for s in STACKS[version]])
    structures, bound = reachable(stack)
    index = ValueSetIndex(stack.get)
    value_sets = {url: compile_value_set(url, index) for url in sorted(bound)}
    core = stack.packages[-1][1]
    resource_types = sorted(r["type"] for r in core.values()
                            if r["resourceType"] == "StructureDefinition"
                            and r.get("kind") == "resource" and r.get("derivation") ==
                            "specialization" and not r.get("abstract"))
    return {"version": version,
            "packages": [f"{s.name}#{s.version}" for s in STACKS[version]],
            "unavailable": UNAVAILABLE[version],
            "structures": dict(sorted(structures.items())),
            "valueSets": value_sets,
            "profileTypes": dict(sorted(stack.all_structures().items())),
            "resourceTypes": resource_types}


def write(data: dict[str, Any], path: Path) -> None:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
    with path.open("wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0,
                                               filename="") as archive:
        archive.write(raw)


@cache
def load_package_data(version: str) -> dict[str, Any]:
    if version not in VERSIONS:
        raise ValueError(f"PAS version {version!r} is not supported; use one of "
                         f"{', '.join(VERSIONS)}")
    path = PROFILES_DIR / f"pas-{version}.json.gz"
    data: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return data


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pas_client.profile_data")
    parser.add_argument("--sources", type=Path, required=True,
                        help="folder holding the package tarballs (npm ones are fetched)")
    parser.add_argument("--version", choices=VERSIONS, action="append")
    args = parser.parse_args(argv)
    args.sources.mkdir(parents=True, exist_ok=True)
    for version in args.version or VERSIONS:
        data = build(version, args.sources)
        out = PROFILES_DIR / f"pas-{version}.json.gz"
        write(data, out)
        print(f"{out.name}: {len(data['structures'])} StructureDefinitions, "
              f"{len(data['valueSets'])} value sets, {out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
