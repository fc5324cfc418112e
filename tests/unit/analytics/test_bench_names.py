"""Python puts a script's own folder first on sys.path: a bench script named like the analytics
package would be what `import analytics` (and so the wiring) finds for every bench script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_a_python_started_in_bench_imports_the_analytics_package() -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import analytics.facts, analytics; print(analytics.__file__)"],
        cwd=BENCH, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr[-2000:]
    assert Path(found.stdout.strip()).parent.name == "analytics"
