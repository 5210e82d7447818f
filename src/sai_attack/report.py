"""Shared helpers for what the library reports: numbers, tables and plots.

Every number written into a CSV, Markdown table or report goes through :func:`number` or
:func:`percent`; every Markdown table through :func:`markdown_table`, every CSV through
:func:`csv_text`; every plot is a :class:`matplotlib.figure.Figure` made by :func:`new_figure`
and rendered by :func:`figure_png`. No helper touches matplotlib's global state (no
``matplotlib.use``, no ``pyplot``), so the library never changes the backend of a program
that imports it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _unknown(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: float | None, digits: int = 4, unknown: str = "") -> str:
    """A number with fixed digits; ``unknown`` for None/NaN, ``inf`` for infinities."""
    if _unknown(value):
        return unknown
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def percent(rate: float | None, digits: int = 1, unknown: str = "") -> str:
    """A rate in [0, 1] as a percentage without the sign (``0.5`` -> ``50.0``)."""
    return unknown if _unknown(rate) else f"{100 * rate:.{digits}f}"


def none_if_nan(value: float | None, digits: int | None = None) -> float | None:
    """None for None/NaN (JSON has no NaN), else the value, rounded to ``digits`` if given."""
    if _unknown(value):
        return None
    return value if digits is None else round(value, digits)


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table as lines; ``|`` and line breaks in cells are escaped."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any] | Sequence[Any]]) -> str:
    """CSV text with a header; rows are mappings (missing keys empty) or sequences."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        if isinstance(row, Mapping):
            writer.writerow(["" if row.get(k) is None else row.get(k) for k in columns])
        else:
            writer.writerow(row)
    return buf.getvalue()


def new_figure(width: float = 6.0, height: float = 4.0, dpi: int = 100) -> Figure:
    """A figure detached from pyplot (safe in threads and in programs with their own backend)."""
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure) -> bytes:
    """Render a figure of :func:`new_figure` to PNG bytes."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    return buf.getvalue()
