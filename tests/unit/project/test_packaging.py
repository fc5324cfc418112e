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
