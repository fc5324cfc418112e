"""Python puts a script's own folder first on sys.path, so a bench script named like a package
would be what `import outreach` finds for every bench script (and every import of the wiring)
that runs with bench/ first on the path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_a_python_started_in_bench_imports_the_outreach_package() -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import outreach.rules, outreach; print(outreach.__file__)"],
        cwd=BENCH, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr[-2000:]
    assert Path(found.stdout.strip()).parent.name == "outreach"
