"""Python puts a script's own folder first on sys.path, so a bench script named like one of the
project's packages (`bench/outreach.py`, say) is what `import outreach` finds, for that script and
for every import of the wiring it makes: no bench script may share a package's name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))


def test_no_bench_script_is_named_like_a_package() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")}
    assert {"refloop", "referrals", "outreach", "scheduling", "loop", "analytics"} <= set(PACKAGES)
    assert not scripts & set(PACKAGES), sorted(scripts & set(PACKAGES))


def test_a_python_started_in_bench_imports_the_packages() -> None:
    code = f"import importlib; print(*(importlib.import_module(n).__file__ for n in {PACKAGES!r}))"
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "bench",
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    for name, path in zip(PACKAGES, found.stdout.split(), strict=True):
        assert Path(path).parent.name == name, (name, path)
