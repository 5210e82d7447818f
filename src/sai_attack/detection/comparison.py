"""Feature sets side by side, ROC curves and the cross-attack matrix, as tables and files.

:mod:`~sai_attack.detection.reports` puts these into ``detection.md`` and writes, next to it,
``roc.png`` (the averaged ROC curve of every run, one panel per feature set) and, with two or
more runs, ``cross_attack.csv`` and ``cross_attack.png`` (:mod:`~sai_attack.detection.cross`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from sai_attack import data
from sai_attack.detection.cross import CrossCell, cross_csv, cross_markdown
from sai_attack.detection.feature_sets import FeatureSettings
from sai_attack.detection.figures import cross_png, roc_png
from sai_attack.detection.results import FPR_TARGET
from sai_attack.detection.runs import RunDetection, run_label
from sai_attack.report import markdown_table, number, percent
from sai_attack.runs import Run

TPR_HEADER = f"TPR@{100 * FPR_TARGET:g}%FPR"
"""How tables name the true-positive rate at the target false-positive rate."""


def title(settings: FeatureSettings) -> str:
    """``SPAM-686 (rgb, 2058-D)``: a feature set as tables and plots name it."""
    return f"{settings.feature_set.title} ({settings.color}, {settings.dim}-D)"


def _grouped(items: Sequence, key: Callable) -> list[tuple]:
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.items())


def by_features(
    results: Sequence[RunDetection],
) -> list[tuple[FeatureSettings, list[RunDetection]]]:
    """The results grouped by feature set, in the order the sets first appear."""
    return _grouped(results, lambda r: r.settings)


def run_names(runs: Sequence[Run]) -> Callable[[Run], str]:
    """A labelling of runs for matrix and comparison tables: ``I-FGM δ=4``, unique.

    Two runs that would get one label are told apart by their folder names.
    """
    base = {id(r): f"{run_label(r)} δ={'?' if r.delta is None else f'{r.delta:g}'}" for r in runs}
    counts: dict[str, int] = {}
    for name in base.values():
        counts[name] = counts.get(name, 0) + 1

    def label(run: Run) -> str:
        name = base.get(id(run), run_label(run))
        return f"{name} [{run.name}]" if counts.get(name, 0) > 1 else name

    return label


def _runs(results: Sequence[RunDetection]) -> list[Run]:
    return list({id(r.run): r.run for r in results}.values())


def comparison_markdown(results: Sequence[RunDetection]) -> str:
    """One row per run, per feature set: accuracy %, AUC and TPR@5%FPR % (means over splits)."""
    groups = by_features(results)
    runs = _runs(results)
    label = run_names(runs)
    cells = {(id(r.run), r.settings): r.result for r in results}
    head = ["run"] + [
        f"{s.feature_set.title}: {h}" for s, _ in groups for h in ("acc. %", "AUC", TPR_HEADER)
    ]
    body = []
    for run in runs:
        line = [label(run)]
        for settings, _ in groups:
            res = cells.get((id(run), settings))
            line += (
                ["", "", ""]
                if res is None
                else [percent(res.accuracy, 2), number(res.auc, 3), percent(res.tpr_at_fpr, 1)]
            )
        body.append(line)
    return "\n".join(markdown_table(head, body)) + "\n"


def comparison_sections(results: Sequence[RunDetection], cross: Sequence[CrossCell]) -> list[str]:
    """The Markdown sections of ``detection.md`` that compare feature sets and attacks."""
    label = run_names(_runs(results))
    parts = [
        "## Feature sets side by side\n",
        f"Accuracy, AUC (area under the ROC curve) and {TPR_HEADER} (adversarial images flagged "
        f"when at most {100 * FPR_TARGET:g}% of the clean ones are), means over splits. ROC "
        "curves (averaged over splits): roc.png.\n",
        comparison_markdown(results),
    ]
    if cross:
        parts += [
            "## Cross-attack matrix\n",
            "Detector trained on the row's run, tested on the column's run (the same image "
            "split: trained on the row run's training images, tested on the column run's test "
            "images). Cells: accuracy % / AUC, means over splits. Also cross_attack.csv and "
            "cross_attack.png.\n",
        ]
        for settings, cells in by_settings(cross):
            parts += [f"### {title(settings)}\n", cross_markdown(cells, label)]
    return parts


def by_settings(cells: Sequence[CrossCell]) -> list[tuple[FeatureSettings, list[CrossCell]]]:
    """The cross-attack cells grouped by feature set, in order."""
    return _grouped(cells, lambda c: c.settings)


def write_comparison_outputs(
    out: str | os.PathLike, results: Sequence[RunDetection], cross: Sequence[CrossCell]
) -> dict[str, Path]:
    """Write ``roc.png`` and, for a non-empty matrix, ``cross_attack.csv`` / ``.png``.

    Returns:
        The paths written, by kind (``roc``, ``cross_csv``, ``cross_png``).
    """
    out = Path(out)
    label = run_names(_runs(results))
    paths: dict[str, Path] = {}
    if results:
        panels = [
            (title(s), [(label(r.run), r.result) for r in rs]) for s, rs in by_features(results)
        ]
        paths["roc"] = out / "roc.png"
        data.atomic_write_bytes(paths["roc"], roc_png(panels))
    if cross:
        paths["cross_csv"] = out / "cross_attack.csv"
        data.atomic_write_text(paths["cross_csv"], cross_csv(cross, label))
        paths["cross_png"] = out / "cross_attack.png"
        panels = [(title(s), cells) for s, cells in by_settings(cross)]
        data.atomic_write_bytes(paths["cross_png"], cross_png(panels, label))
    return paths
