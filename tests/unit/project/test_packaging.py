"""pyproject.toml as setuptools reads it: no deprecated forms (each printed a warning on every
install), the licence as an SPDX expression with its file."""

from __future__ import annotations

import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import apply_configuration, read_configuration
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parents[3]


def test_pyproject_reads_without_deprecation_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_configuration(Distribution(), ROOT / "pyproject.toml")
    config = read_configuration(ROOT / "pyproject.toml", expand=False)
    deprecated = [str(w.message).splitlines()[0] for w in caught
                  if "deprecat" in f"{w.category.__name__} {w.message}".lower()]
    assert not deprecated, deprecated
    assert config["project"]["license"] == "Apache-2.0"
    assert all((ROOT / name).is_file() for name in config["project"]["license-files"])


def test_the_core_is_type_checked_in_strict_mode() -> None:
    """The flags of mypy's --strict, per module, for referrals/ (mypy runs in CI and locally)."""
    config = read_configuration(ROOT / "pyproject.toml", expand=False)
    overrides = config["tool"]["mypy"]["overrides"]
    core = next(o for o in overrides if "referrals.*" in o["module"])
    strict = {"disallow_any_generics", "disallow_subclassing_any", "disallow_untyped_calls",
              "disallow_incomplete_defs", "disallow_untyped_decorators", "warn_return_any",
              "no_implicit_reexport", "strict_equality", "extra_checks"}
    assert {flag for flag in strict if core.get(flag) is True} == strict
    assert config["tool"]["mypy"]["disallow_untyped_defs"] is True
