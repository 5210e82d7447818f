"""Tables and figures of a reproduction, and how they are written (CSV, Markdown, PNG)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from sai_attack import data


def pct(rate: float | None, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage string; empty when unknown."""
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return ""
    return f"{100 * rate:.{digits}f}"


def num(value: float | None, digits: int = 2) -> str:
    """A number with fixed digits; empty when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


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
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        w.writerows(self.rows)
        return buf.getvalue()

    def markdown(self) -> str:
        """A Markdown section: title, caption, table, notes."""

        def esc(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"### {self.title}", "", self.caption, ""]
        lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        lines.append("|" + " --- |" * len(self.columns))
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
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
