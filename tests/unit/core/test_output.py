"""CLI tables: cells are printed whole, a cell's lines go under each other, and with the
output's width the last column wraps to fit it (never narrower than MIN_WRAP)."""

from __future__ import annotations

import pytest

from refloop.output import MIN_WRAP, output_width, print_table

LONG = "the payer answered with errors instead of a decision: " + "error 57; " * 12


def test_a_table_without_a_width_prints_every_cell_whole(
        capsys: pytest.CaptureFixture[str]) -> None:
    print_table(["id", "problem"], [["a1", LONG], ["b2", "two\nlines"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == f"a1  {LONG}".rstrip()
    assert lines[3:] == ["b2  two", "    lines"]


@pytest.mark.parametrize("width", [60, 20])
def test_the_last_column_wraps_to_the_width(capsys: pytest.CaptureFixture[str],
                                            width: int) -> None:
    print_table(["id", "problem"], [["a1", LONG], ["b2", "short"]], width=width)
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= max(width, 4 + MIN_WRAP) for line in lines)
    assert " ".join(line[4:] for line in lines[2:-1]) == LONG.strip()
    assert lines[-1] == "b2  short"


def test_the_width_is_the_terminals_or_columns(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "132")
    assert output_width() == 132
    monkeypatch.delenv("COLUMNS")
    assert output_width() is None  # pytest captures stdout: not a terminal
