"""Tables and figures of a reproduction, and how they are written (CSV, Markdown, PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.report import csv_text, figure_png, markdown_table, new_figure, number

Lines = dict[str, tuple[list[float], list[float]]]
"""Plotted lines by legend label: (x values, rates in [0, 1])."""

Panel = tuple[str, str, Lines]
"""One plot panel: (title, x label, lines)."""


def num(value: float | None, digits: int = 2) -> str:
    """A number of a report table: two digits unless told, empty when unknown."""
    return number(value, digits)


def mean_known(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else math.nan


@dataclass
class Table:
    """One table of the report. Cells are strings, written identically to every format.

    Attributes:
        key: File stem under ``tables/``.
        title: Heading.
        caption: What is measured and how (protocol, models, image counts).
        columns: Column headers.
        rows: Cell strings.
        notes: Further remarks shown under the table.
    """

    key: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        """Append a row (cells are converted with ``str``)."""
        if len(cells) != len(self.columns):
            raise ValueError(
                f"table {self.key}: row has {len(cells)} cells, not {len(self.columns)}"
            )
        self.rows.append(["" if c is None else str(c) for c in cells])

    def csv(self) -> str:
        """CSV text."""
        return csv_text(self.columns, self.rows)

    def markdown(self) -> str:
        """A Markdown section: title, caption, table, notes."""
        lines = [f"### {self.title}", "", self.caption, ""]
        lines += markdown_table(self.columns, self.rows)
        lines += [""] + [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        return "\n".join(lines)

    def write(self, folder: Path) -> None:
        """Write ``<key>.csv`` and ``<key>.md`` into ``folder``."""
        data.atomic_write_text(folder / f"{self.key}.csv", self.csv())
        data.atomic_write_text(folder / f"{self.key}.md", self.markdown() + "\n")


@dataclass
class Figure:
    """One figure of the report: a PNG file under ``figures/``."""

    key: str
    title: str
    caption: str
    path: Path


def plot_rates(path: Path, panels: Sequence[Panel], ylabel: str = "success rate (%)") -> None:
    """Draw rate curves side by side (one panel each) into the PNG ``path``.

    Superpixel methods (labels with ``SA``) are solid lines, the baselines dashed.
    """
    figure = new_figure(4.2 * len(panels), 3.4, dpi=110)
    axes = figure.subplots(1, len(panels), squeeze=False)
    for ax, (title, xlabel, lines) in zip(axes[0], panels, strict=True):
        for label, (xs, ys) in lines.items():
            style = "-" if "SA" in label else "--"
            ax.plot(xs, [100 * y for y in ys], style, marker="o", markersize=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    data.atomic_write_bytes(path, figure_png(figure))


@dataclass
class Finding:
    """One line of the summary: does the superpixel method still win at matched norm?

    Attributes:
        measurement: What is compared (e.g. "JPEG q = 55, delta = 4").
        higher_is_better: Success rates: higher wins for the attack; detection: lower wins.
        paper: (superpixel method, baseline) values under the paper protocol, percent.
        matched: (superpixel method, baseline with ``--budget exact``) values, percent.
        delta_eff: (superpixel method, baseline paper, baseline matched) mean delta_eff.
    """

    measurement: str
    higher_is_better: bool
    paper: tuple[float, float]
    matched: tuple[float, float] | None
    delta_eff: tuple[float, float, float | None]

    @staticmethod
    def _verdict(ours: float, base: float, higher: bool) -> str:
        if any(math.isnan(v) for v in (ours, base)):
            return "n/a"
        diff = (ours - base) if higher else (base - ours)
        if abs(diff) < 1.0:
            return "tie"
        return "wins" if diff > 0 else "loses"

    @property
    def verdict_paper(self) -> str:
        """``wins``, ``loses`` or ``tie`` (within 1 point) under the paper protocol."""
        return self._verdict(*self.paper, self.higher_is_better)

    @property
    def verdict_matched(self) -> str:
        """The same at matched norm (``n/a`` when not measured)."""
        if self.matched is None:
            return "n/a"
        return self._verdict(*self.matched, self.higher_is_better)
