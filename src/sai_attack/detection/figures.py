"""The detection plots: ROC curves and the cross-attack heat map (PNG bytes, no pyplot).

Both are drawn on :func:`sai_attack.report.new_figure` figures, one panel per feature set, and
rendered by :func:`sai_attack.report.figure_png`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sai_attack.detection.cross import CrossCell, matrix
from sai_attack.detection.results import FPR_TARGET, DetectionResult
from sai_attack.report import figure_png, new_figure
from sai_attack.runs import Run

Curve = tuple[str, DetectionResult]
"""A legend label and the result whose averaged ROC curve is drawn."""


def _panels(count: int, height: float = 4.2) -> tuple:
    width = 4.6 * count + 0.6
    figure = new_figure(width, height, dpi=110)
    axes = figure.subplots(1, count, squeeze=False)[0]
    return figure, axes


def roc_png(panels: Sequence[tuple[str, Sequence[Curve]]]) -> bytes:
    """ROC curves (mean over splits), one panel per feature set.

    Args:
        panels: ``(title, curves)`` per feature set; a curve's legend gives its mean AUC.

    Returns:
        The PNG bytes.
    """
    figure, axes = _panels(max(1, len(panels)))
    for ax, (title, curves) in zip(axes, panels, strict=False):
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance (AUC 0.5)")
        for label, result in curves:
            fpr, tpr = result.mean_roc()
            ax.plot(fpr, tpr, lw=1.6, label=f"{label} (AUC {result.auc:.3f})")
        ax.axvline(FPR_TARGET, color="0.5", lw=0.8, ls=":")
        ax.set(
            xlim=(0, 1), ylim=(0, 1.01), title=title, xlabel="false-positive rate (clean flagged)"
        )
        ax.set_ylabel("true-positive rate (adversarial flagged)")
        ax.legend(loc="lower right", fontsize=7)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure_png(figure)


def cross_png(
    panels: Sequence[tuple[str, Sequence[CrossCell]]], label: Callable[[Run], str]
) -> bytes:
    """Heat maps of the cross-attack accuracy (%), one panel per feature set.

    Rows: the run the detector was trained on; columns: the run it was tested on. Each cell shows
    the accuracy and, below, the AUC; 50% (chance) is white.

    Returns:
        The PNG bytes.
    """
    size = max((len(matrix(cells)[0]) for _, cells in panels), default=1)
    figure, axes = _panels(max(1, len(panels)), height=1.2 + 0.9 * size)
    for ax, (title, cells) in zip(axes, panels, strict=False):
        runs, by_name = matrix(cells)
        values = np.full((len(runs), len(runs)), np.nan)
        for i, a in enumerate(runs):
            for j, b in enumerate(runs):
                res = by_name[(id(a), id(b))].result
                if res is not None:
                    values[i, j] = 100 * res.accuracy
                    dark = abs(values[i, j] - 50) > 30  # white text on the saturated ends
                    ax.text(
                        j, i, f"{values[i, j]:.1f}\nAUC {res.auc:.2f}", ha="center",
                        va="center", fontsize=7, color="white" if dark else "black",
                    )  # fmt: skip
        image = ax.imshow(values, cmap="RdBu_r", vmin=0, vmax=100)
        names = [label(r) for r in runs]
        ax.set_xticks(range(len(runs)), names, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(runs)), names, fontsize=7)
        ax.set(title=title, xlabel="tested on", ylabel="trained on")
        figure.colorbar(image, ax=ax, fraction=0.046, label="detection accuracy %")
    figure.tight_layout()
    return figure_png(figure)
