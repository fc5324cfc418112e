"""Every relative link in README.md and docs/ resolves inside the repository (a file, and the
heading when the link names one), and no page points outside it: a reader of the project has no
`../shared`, no research notes, only what the repository holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
#: mentions of documents that are not part of the repository
OUTSIDE = re.compile(r"\.\./shared|(?<![\w/])reference/\w+\.md|(?<![\w/])landscape\.md|"
                     r"(?<![\w/])DESIGN\.md")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    inside_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside_code = not inside_code
        elif not inside_code and line.startswith("#"):
            base = slug(line.lstrip("#"))
            name, n = base, 1
            while name in found:
                name, n = f"{base}-{n}", n + 1
            found.add(name)
    return found


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [target for target in LINK.findall(text)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
            broken.append(f"{target}: no such file in the repository")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: {resolved.name} has no heading #{fragment}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_points_outside_the_repository(page: Path) -> None:
    lines = [f"line {n}: {line.strip()[:90]}"
             for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
             if OUTSIDE.search(line)]
    assert not lines, f"{page.name} mentions documents outside the repository: {lines}"


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A title\nSee [x](missing.md), [y](page.md#a-title), [z](#nope), "
                    "[w](https://example.org) and `../shared/DESIGN.md`.\n", encoding="utf-8")
    assert relative_links(page) == ["missing.md", "page.md#a-title", "#nope"]
    assert anchors(page) == {"a-title"}
    assert OUTSIDE.search(page.read_text(encoding="utf-8"))
