from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "hl7v2"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()
