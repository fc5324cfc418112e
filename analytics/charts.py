"""Chart geometry for the outcomes dashboard, as plain data the SMART app's templates draw as SVG.

Lengths across the page are percentages of the chart's width and lengths down it are pixels, and
no chart is scaled by a viewBox: text keeps its size (13 px) from a 380 px phone to a 1440 px
screen while the bars stretch with the space they have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analytics.metrics import EDGES, Histogram

ROW = 38  # px per horizontal bar row: a label line, then the bar
BAR = 14
COLUMN_CHART_HEIGHT = 120
#: the distribution chart's bins: (label, unit, from hours, to hours); they fall on EDGES. The
#: unit goes on a second line, so eight labels fit side by side on a 380 px screen
DISPLAY_BINS = (("<1", "d", 0, 24), ("1-2", "d", 24, 48), ("2-3", "d", 48, 72),
                ("3-7", "d", 72, 168), ("1-2", "wk", 168, 336), ("2-4", "wk", 336, 672),
                ("4-8", "wk", 672, 1344), ("8+", "wk", 1344, None))


@dataclass(frozen=True)
class BarRow:
    label: str
    text: str
    y: int  # the label's baseline
    bar_y: int
    width: float  # percent of the chart's width
    link: str


@dataclass(frozen=True)
class Column:
    label: str
    unit: str
    count: int
    x: float  # percent
    width: float  # percent
    y: float  # px from the top
    height: float
    percent: str


def bar_rows(items: Sequence[tuple[str, str, float, str]]) -> tuple[list[BarRow], int]:
    """Rows of (label, text, share 0..1 of the longest bar, link); and the chart's height."""
    rows = []
    for index, (label, text, share, link) in enumerate(items):
        top = index * ROW
        rows.append(BarRow(label, text, top + 14, top + 19,
                           round(max(0.0, min(1.0, share)) * 100, 2), link))
    return rows, max(ROW, len(items) * ROW)


def distribution(histogram: Histogram) -> tuple[list[Column], int]:
    """The durations of a histogram in the display bins, as columns; and the chart height."""
    counts = [0] * len(DISPLAY_BINS)
    for index, n in histogram.counts.items():
        low = EDGES[index]
        for position, (_label, _unit, start, end) in enumerate(DISPLAY_BINS):
            if low >= start and (end is None or low < end):
                counts[position] += n
                break
    top = max(counts, default=0) or 1
    total = sum(counts) or 1
    width = 100 / len(DISPLAY_BINS)
    columns = []
    for position, ((label, unit, _start, _end), count) in enumerate(zip(DISPLAY_BINS, counts,
                                                                        strict=True)):
        tall = COLUMN_CHART_HEIGHT * count / top
        columns.append(Column(label, unit, count, round(position * width + 1, 2),
                              round(width - 2, 2), round(18 + COLUMN_CHART_HEIGHT - tall, 1),
                              round(tall, 1), f"{100 * count / total:.0f}%"))
    return columns, COLUMN_CHART_HEIGHT + 54
