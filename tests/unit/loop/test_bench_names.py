"""Python puts a script's own folder first on sys.path, so a bench script named like the loop
package (`bench/loop.py`) is what `import loop` finds from bench/: the loop's benchmark is
`bench/closed_loop.py`."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_loop_bench_script_is_not_named_like_the_package() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")}
    assert "closed_loop" in scripts
    assert (ROOT / "loop" / "__init__.py").exists() and "loop" not in scripts
