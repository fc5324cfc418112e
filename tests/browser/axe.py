"""axe-core (npm, installed by `make setup` from package-lock.json) run in the page: WCAG 2 A and
AA rules; the serious and critical violations are what a test refuses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


def axe_source() -> str:
    if not AXE.exists():
        reason = f"axe-core: {AXE} is missing; run 'make setup' (npm ci installs it)"
        if os.environ.get("REFLOOP_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return AXE.read_text(encoding="utf-8")


def serious_violations(driver: Any) -> list[dict[str, Any]]:
    """Run axe on the current page; the serious and critical violations (id, help, targets)."""
    driver.execute_script(axe_source())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a',"
        " 'wcag21aa']}, resultTypes: ['violations']}).then(done, e => done({error: String(e)}));")
    assert "error" not in result, result
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "targets": [n["target"] for n in v["nodes"]]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]
