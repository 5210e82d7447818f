"""Tables and figures of a reproduction, and how they are written (CSV, Markdown, PNG)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.demo import PERCEPTUAL_METRICS, perceptual_means
from sai_attack.report import (
    csv_text,
    discordant,
    figure_png,
    markdown_table,
    mcnemar_exact,
    mean_interval,
    new_figure,
    number,
    rate_interval,
    wilson_interval,
)
from sai_attack.runs import RunItem

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


ALPHA = 0.05
"""Significance level of the summary's paired test: p >= ALPHA is a tie."""


@dataclass(frozen=True)
class Measure:
    """One number of the summary: a rate in [0, 1], its 95% interval, and its per-image outcomes.

    Attributes:
        value: The success rate or detection accuracy (NaN when not measured).
        low: Lower end of its 95% interval (NaN when unknown).
        high: Upper end.
        outcomes: Success rates: success per counted image (the images whose clean version the
            model classifies correctly), keyed by image, for the paired test; ``None`` for
            detection accuracies, which pair no images across runs.
    """

    value: float
    low: float = math.nan
    high: float = math.nan
    outcomes: Mapping[str, bool] | None = None

    @classmethod
    def of_splits(cls, accuracies: Sequence[float]) -> Measure:
        """A detection accuracy: the mean over splits with its t interval."""
        if not accuracies:
            return cls(math.nan)
        low, high = mean_interval(accuracies, bounds=(0.0, 1.0))
        return cls(float(np.mean(accuracies)), low, high)

    @classmethod
    def pooled(cls, measures: Sequence[Measure]) -> Measure:
        """The mean of several models' rates; interval and outcomes over their pooled images.

        The value stays the mean of the rates (as the tables show it); the Wilson interval and
        the paired test use every (model, image) pair of the models at once.
        """
        if len(measures) == 1:
            return measures[0]
        value = mean_known([m.value for m in measures])
        if any(m.outcomes is None for m in measures):
            return cls(value)
        outcomes = {f"{i}:{k}": v for i, m in enumerate(measures) for k, v in m.outcomes.items()}
        return cls(value, *wilson_interval(sum(outcomes.values()), len(outcomes)), outcomes)

    def cell(self) -> str:
        """``81.0 [72.2, 87.5]`` (percent), ``n/a`` when not measured."""
        return rate_interval(self.value, self.low, self.high)


def outcome_marks(
    predictions: Sequence[dict], run_keys: dict[str, str], model_specs: dict[str, str]
) -> tuple[dict[str, list[str]], dict[tuple[str, str, str], str]]:
    """Per-image outcomes of ``predictions.csv`` rows, compact enough for a JSON cache.

    Returns:
        The images of every run key, in order, and per (run key, model, defense spec) one
        character per image of that order: ``1`` success, ``0`` failure, ``-`` not counted
        (the model misclassifies the defended clean image).
    """
    order: dict[str, dict[str, int]] = {}
    marks: dict[tuple[str, str, str], dict[int, str]] = {}
    for p in predictions:
        run = run_keys[p["run"]]
        images = order.setdefault(run, {})
        index = images.setdefault(p["image"], len(images))
        mark = str(int(p["success"])) if p["clean_correct"] else "-"
        marks.setdefault((run, model_specs[p["model"]], p["defense"]), {})[index] = mark
    strings = {
        key: "".join(m.get(i, "-") for i in range(len(order[key[0]]))) for key, m in marks.items()
    }
    return {run: list(images) for run, images in order.items()}, strings


def marked_outcomes(images: Sequence[str], marks: str) -> dict[str, bool]:
    """The success of every counted image, from the marks of :func:`outcome_marks`."""
    return {image: m == "1" for image, m in zip(images, marks, strict=True) if m != "-"}


def compare(ours: Measure, base: Measure, higher_is_better: bool) -> tuple[str, str]:
    """``(verdict, test)``: does ``ours`` win, lose or tie against ``base``, and how it was decided.

    Success rates pair the images both runs count: the exact McNemar test on the discordant
    images decides (p < :data:`ALPHA`), so a gap that a few images explain is a tie. Detection
    accuracies pair no images across runs; there the verdict is a tie while their 95% split
    intervals overlap.
    """
    if math.isnan(ours.value) or math.isnan(base.value):
        return "n/a", ""
    if ours.outcomes is not None and base.outcomes is not None:
        common = sorted(ours.outcomes.keys() & base.outcomes.keys())
        b, c = discordant([ours.outcomes[k] for k in common], [base.outcomes[k] for k in common])
        p = mcnemar_exact(b, c)
        shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
        test = f"McNemar {shown}, {b} vs {c} discordant of {len(common)} images"
        tie, better = p >= ALPHA, (b > c) == higher_is_better
    else:
        if any(math.isnan(v) for v in (ours.low, ours.high, base.low, base.high)):
            return "n/a", "no interval (one split)"
        tie = ours.low <= base.high and base.low <= ours.high
        test = "95% split intervals " + ("overlap" if tie else "apart")
        better = (ours.value > base.value) == higher_is_better
    if tie:
        return "tie", test
    return ("wins" if better else "loses"), test


@dataclass
class Finding:
    """One line of the summary: does the superpixel method still win at matched norm?

    Attributes:
        measurement: What is compared (e.g. "JPEG q = 55, delta = 4").
        higher_is_better: Success rates: higher wins for the attack; detection: lower wins.
        paper: (superpixel method, baseline) under the paper protocol.
        matched: (superpixel method, baseline with ``--budget exact``).
        delta_eff: (superpixel method, baseline paper, baseline matched) mean delta_eff.
    """

    measurement: str
    higher_is_better: bool
    paper: tuple[Measure, Measure]
    matched: tuple[Measure, Measure] | None
    delta_eff: tuple[float, float, float | None]

    @property
    def paper_comparison(self) -> tuple[str, str]:
        """:func:`compare` under the paper protocol."""
        return compare(*self.paper, self.higher_is_better)

    @property
    def matched_comparison(self) -> tuple[str, str]:
        """:func:`compare` at matched norm (``n/a`` when not measured)."""
        if self.matched is None:
            return "n/a", ""
        return compare(*self.matched, self.higher_is_better)

    @property
    def verdict_paper(self) -> str:
        """``wins``, ``loses`` or ``tie`` (:func:`compare`) under the paper protocol."""
        return self.paper_comparison[0]

    @property
    def verdict_matched(self) -> str:
        """The same at matched norm (``n/a`` when not measured)."""
        return self.matched_comparison[0]


DISTORTION_METRICS = tuple(m for m in PERCEPTUAL_METRICS if m[1] != "delta_eff")
"""The perceptual metrics a per-method row shows beside its delta_eff column."""

DISTORTION_COLUMNS = [header for header, _, _ in DISTORTION_METRICS]
"""Their column headers."""

DISTORTION_TEXT = (
    "SSIM (11x11 Gaussian window, mean of R, G, B), CIEDE2000 (CIELAB colour difference, mean "
    "per image; p95: its 95th percentile per image; about 1 is just noticeable) and PSNR of the "
    "saved 8-bit clean/adversarial pairs, means over the attacked images"
)
"""How captions describe :data:`DISTORTION_COLUMNS`."""


def distortion_cells(items: Sequence[RunItem]) -> list[str]:
    """The :data:`DISTORTION_COLUMNS` cells of a run's images (empty where unknown)."""
    means = perceptual_means(items)
    return [number(means[name], digits) for _, name, digits in DISTORTION_METRICS]
