"""Printing for the CLI: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import click

#: the narrowest a wrapped column is made, however wide the others
MIN_WRAP = 30


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                width: int | None = None) -> None:
    """Aligned columns; a cell's lines go under each other. With `width` (the output's, see
    output_width), the last column's text wraps to fit it; without, cells are whole."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    if width is not None and len(headers) > 1:
        cells = _wrap_last(cells, width)
    split = [[cell.split("\n") for cell in row] for row in cells]
    widths = [max(len(line) for row in split for line in row[i]) for i in range(len(headers))]
    for n, row in enumerate(split):
        for k in range(max(len(lines) for lines in row)):
            click.echo("  ".join((lines[k] if k < len(lines) else "").ljust(widths[i])
                                 for i, lines in enumerate(row)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def output_width() -> int | None:
    """The width of the terminal the output goes to (COLUMNS when set), or None when it has
    none (a pipe, a file): then nothing is wrapped."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() \
            else None
    except (OSError, ValueError):
        return None


def _wrap_last(cells: list[list[str]], width: int) -> list[list[str]]:
    """The last column wrapped to what the others leave of `width` (at least MIN_WRAP)."""
    used = sum(max(len(line) for row in cells for line in row[i].split("\n")) + 2
               for i in range(len(cells[0]) - 1))
    room = max(width - used, MIN_WRAP)
    return [[*row[:-1], "\n".join(line for part in row[-1].split("\n") for line in (
        textwrap.wrap(part, room, break_on_hyphens=False) or [""]))] for row in cells]


def bar(count: int, total: int, width: int = 30) -> str:
    filled = 0 if total == 0 else round(width * count / total)
    return "#" * filled + "." * (width - filled)
