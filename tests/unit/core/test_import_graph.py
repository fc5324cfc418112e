"""Imports flow one way: no circle among our modules, and the dependency rules of
docs/architecture.md (the core imports no adapter and no `refloop`; adapters import the core and
the shared FHIR client only, never each other or `refloop`; the shared FHIR client imports only
the core's errors). Every import counts, also one inside a function or under TYPE_CHECKING: a
circle there is still a circle to the reader."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("refloop", "referrals", "subscriptions", "pas_client", "hl7_bridge", "smart_app",
            "capability", "outreach", "scheduling", "loop", "analytics", "access", "fhir_http")
#: libraries every adapter may import besides the core
LIBRARIES = ("fhir_http",)
ADAPTERS = tuple(p for p in PACKAGES if p not in ("refloop", "referrals", *LIBRARIES))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def first_party_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The first-party modules `name` imports (the longest known prefix of each target)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for target in targets:
        parts = target.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in known:
                if candidate != name:
                    found.add(candidate)
                break
    return found


@cache
def import_graph() -> dict[str, set[str]]:
    modules = first_party_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_import_the_core_only(adapter: str) -> None:
    graph = import_graph()
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items()
                   if name.split(".")[0] == adapter for target in targets
                   if target.split(".")[0] not in (adapter, "referrals", *LIBRARIES))
    assert not wrong, "; ".join(wrong)


def test_the_shared_fhir_client_imports_only_the_core_errors() -> None:
    graph = import_graph()
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items()
                   if name.split(".")[0] == "fhir_http" for target in targets
                   if target.split(".")[0] != "fhir_http" and target != "referrals.errors")
    assert not wrong, "; ".join(wrong)
    assert "referrals.errors" in graph["fhir_http.client"]  # the package is seen at all


def test_the_core_imports_no_adapter() -> None:
    graph = import_graph()
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items()
                   if name.split(".")[0] == "referrals" for target in targets
                   if target.split(".")[0] != "referrals")
    assert not wrong, "; ".join(wrong)


def test_the_checker_sees_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
