"""Tables and files of the detection results: Table 2, per-run details, CSV, JSON, plots.

``detect`` writes ``detection.csv``, ``detection.json`` and ``detection.md``, the last in the
layout of Table 2 of Dong et al. (CVPR 2020): one row per attack (method, superpixel algorithm
and merge beta), one column per delta, detection accuracy in percent with its 95% interval over
the splits (:func:`accuracy_interval`). A saved detector applied
with ``detect --apply`` writes ``predictions.csv``, ``detection.md`` and ``detection.json``.

With several feature sets, ``detection.md`` has one Table 2 per set and a side-by-side table
(accuracy, AUC, TPR@5%FPR); ``detection.csv`` has one row per run and feature set. ``roc.png``
(ROC curves) and, for two or more runs, ``cross_attack.csv`` / ``cross_attack.png`` (the
cross-attack matrix) are written next to them (:mod:`~sai_attack.detection.comparison`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from sai_attack import data
from sai_attack.attacks import METHOD_NAMES
from sai_attack.detection.apply import ApplyResult
from sai_attack.detection.comparison import (
    by_features,
    comparison_sections,
    title,
    write_comparison_outputs,
)
from sai_attack.detection.cross import CrossCell, cross_record
from sai_attack.detection.features import ExtractionStats
from sai_attack.detection.protocol import protocol_text
from sai_attack.detection.runs import DetectionOptions, RunDetection
from sai_attack.report import (
    csv_text,
    interval_text,
    markdown_table,
    mean_interval,
    none_if_nan,
    number,
    percent,
)

METHOD_ORDER = tuple(METHOD_NAMES)
"""The order of Table 2's rows: the registry's order of the methods."""

DETECTION_COLUMNS = (
    "run", "method", "delta", "delta_eff", "features", "n_train", "n_test", "accuracy", "std",
    "p_fa", "p_md", "label", "merge_beta", "superpixel", "color", "classifier", "splits",
    "ci_low", "ci_high", "auc", "auc_std", "tpr_at_fpr",
)  # fmt: skip
"""The columns of ``detection.csv``."""

PREDICTION_COLUMNS = ("folder", "image", "kind", "score", "predicted")
"""The columns of ``predictions.csv``."""

CLASSIFIER_TEXT = {"fld": "FLD ensemble (Kodovsky et al. 2012)", "logreg": "logistic regression"}


def _pct(rate: float) -> str:
    return percent(rate, 2, unknown="n/a")


def _delta(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


INTERVAL_TEXT = (
    "[low, high]: 95% interval of the mean accuracy over the k splits, mean ± t_{0.975, k-1} · "
    "sd / sqrt(k), clipped to [0, 100] (n/a for one split); the splits reuse the same images, so "
    "it measures the split-to-split spread on this data, not the spread over new images"
)
"""How reports explain :func:`accuracy_interval`."""


def accuracy_interval(r: RunDetection) -> tuple[float, float]:
    """The 95% t interval of the detection accuracy over the run's splits (NaN for one split)."""
    return mean_interval([s.accuracy for s in r.result.splits], bounds=(0.0, 1.0))


def detection_row(r: RunDetection) -> dict:
    """The ``detection.csv`` row of one run (``ci_low``, ``ci_high``: :func:`accuracy_interval`)."""
    res = r.result
    low, high = accuracy_interval(r)
    return {
        "run": r.run.name,
        "method": r.run.method,
        "delta": _delta(r.run.delta),
        "delta_eff": number(r.run.mean_delta_eff),
        "features": r.settings.features,
        "n_train": res.n_train,
        "n_test": res.n_test,
        "accuracy": number(res.accuracy),
        "std": number(res.std),
        "p_fa": number(res.p_fa),
        "p_md": number(res.p_md),
        "label": r.label,
        "merge_beta": _delta(r.merge_beta),
        "superpixel": r.superpixel or "",
        "color": r.settings.color,
        "classifier": res.classifier,
        "splits": len(res.splits),
        "ci_low": number(low),
        "ci_high": number(high),
        "auc": number(res.auc),
        "auc_std": number(res.auc_std),
        "tpr_at_fpr": number(res.tpr_at_fpr),
    }


def detection_record(r: RunDetection) -> dict:
    """The JSON-ready record of one run, with per-split details."""
    return {
        "run": r.run.name,
        "feature_set": r.settings.features,
        "path": str(r.run.path),
        "method": r.run.method,
        "label": r.label,
        "delta": r.run.delta,
        "merge_beta": r.merge_beta,
        "superpixel": r.superpixel,
        "model": r.run.model,
        "pairs": len(r.run),
        "delta_eff": none_if_nan(r.run.mean_delta_eff),
        "detection": r.result.describe(),
        "accuracy_interval": _interval_record(r),
        "features": r.extraction.describe(),
        "seconds_train": round(r.seconds_train, 3),
    }


def _interval_record(r: RunDetection) -> dict:
    low, high = accuracy_interval(r)
    return {
        "confidence": 0.95,
        "method": "t interval of the mean over splits",
        "low": none_if_nan(low),
        "high": none_if_nan(high),
    }


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _row_labels(results: Sequence[RunDetection]) -> list[str]:
    """Table 2 row labels, made unique with the run name where two runs would share a cell."""
    labels = [r.label for r in results]
    cells: dict[tuple[str, float | None], int] = {}
    for label, r in zip(labels, results, strict=True):
        cells[(label, r.run.delta)] = cells.get((label, r.run.delta), 0) + 1
    return [
        f"{label} [{r.run.name}]" if cells[(label, r.run.delta)] > 1 else label
        for label, r in zip(labels, results, strict=True)
    ]


def _order(item: tuple[str, RunDetection]) -> tuple:
    """Table 2's row order: method (registry order), superpixel algorithm, beta, label."""
    label, r = item
    m = r.run.method
    rank = METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER)
    beta = -1.0 if r.merge_beta is None else r.merge_beta
    return (rank, r.superpixel or "", beta, label)


def _accuracy_cell(r: RunDetection | None) -> str:
    if r is None:
        return ""
    interval = interval_text(*accuracy_interval(r), digits=2)
    if math.isnan(r.result.std):  # a single split has no spread
        return f"{_pct(r.result.accuracy)} {interval}"
    return f"{_pct(r.result.accuracy)} ± {_pct(r.result.std)} {interval}"


def table2_markdown(results: Sequence[RunDetection]) -> str:
    """Detection accuracy (%) with methods as rows and delta as columns (paper Table 2).

    Cells: mean ± std over splits, then the 95% interval of the mean (:data:`INTERVAL_TEXT`).
    """
    if not results:
        return "(no runs)\n"
    labels = _row_labels(results)
    deltas = sorted({r.run.delta for r in results if r.run.delta is not None})
    has_unknown = any(r.run.delta is None for r in results)
    columns: list[float | None] = [*deltas, *([None] if has_unknown else [])]
    rows: dict[str, dict[float | None, RunDetection]] = {}
    for label, r in sorted(zip(labels, results, strict=True), key=_order):
        rows.setdefault(label, {})[r.run.delta] = r
    head = ["Generation method", *[("δ = ?" if d is None else f"δ = {d:g}") for d in columns]]
    body = [
        [label, *[_accuracy_cell(cells.get(d)) for d in columns]] for label, cells in rows.items()
    ]
    return "\n".join(markdown_table(head, body)) + "\n"


def details_markdown(results: Sequence[RunDetection]) -> str:
    """One line per run: pairs, delta_eff, accuracy, its 95% interval, std, P_FA, P_MD, AUC, TPR."""
    head = ["run", "attack", "δ", "δ_eff", "pairs (train/test)", "accuracy %", "95% interval %",
            "std %", "P_FA %", "P_MD %", "AUC", "TPR@5%FPR %"]  # fmt: skip
    body = [
        [r.run.name, r.label, _delta(r.run.delta), number(r.run.mean_delta_eff, 3),
         f"{r.result.n_train}/{r.result.n_test}", _pct(r.result.accuracy),
         interval_text(*accuracy_interval(r), digits=2), _pct(r.result.std),
         _pct(r.result.p_fa), _pct(r.result.p_md), number(r.result.auc, 3),
         percent(r.result.tpr_at_fpr, 1)]
        for r in results
    ]  # fmt: skip
    return "\n".join(markdown_table(head, body)) + "\n"


def detection_report(
    results: Sequence[RunDetection],
    options: DetectionOptions,
    skipped: Sequence[tuple[str, str]] = (),
    cross: Sequence[CrossCell] = (),
) -> str:
    """The full Markdown report of ``detect``.

    Table 2 analogue and per-run details for each feature set, the feature sets side by side,
    the cross-attack matrix (when given) and the protocol.
    """
    names = ", ".join(title(s) for s in options.feature_settings)
    parts = [
        "# Steganalysis-based detection (Dong et al. 2020, Table 2 layout)\n",
        f"Detection accuracy (%) = 1 - P_E, mean ± std over {options.splits} split(s) "
        f"[95% interval of the mean]; features: {names}; classifier: "
        f"{CLASSIFIER_TEXT.get(options.classifier, options.classifier)}. Lower is better for the "
        "attack.\n",
    ]
    several = len(options.feature_settings) > 1
    for settings, group in by_features(results) or [(options.settings, [])]:
        if several:
            parts.append(f"## {title(settings)}\n")
        parts += [table2_markdown(group), "### Runs\n" if several else "## Runs\n"]
        parts.append(details_markdown(group))
    parts.append(f"{INTERVAL_TEXT}.\n")
    if results:
        parts += comparison_sections(results, cross)
    parts += ["## Protocol\n", protocol_text(options.splits, options.train_fraction) + "\n"]
    if skipped:
        parts.append("## Skipped\n")
        parts.append("\n".join(f"- {name}: {reason}" for name, reason in skipped) + "\n")
    return "\n".join(parts)


def apply_report(model_path: str, info: dict, results: Sequence[ApplyResult]) -> str:
    """Markdown summary of :func:`~sai_attack.detection.runs.apply_detector`."""
    trained = info.get("run", "?")
    head = ["folder", "kind", "images", "flagged %", "accuracy %", "P_FA %", "P_MD %"]
    body = [
        [r.folder, "run" if r.is_run else "images", len(r.rows), _pct(r.flagged),
         *([_pct(r.accuracy), _pct(r.p_fa), _pct(r.p_md)] if r.is_run else ["", "", ""])]
        for r in results
    ]  # fmt: skip
    lines = [
        "# Saved detector applied\n",
        f"Detector {model_path} (trained on run {trained}, {info.get('pairs', '?')} pairs).\n",
        *markdown_table(head, body),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _write_outputs(
    out: str | os.PathLike, csv_name: str, csv: str, markdown: str, record: dict
) -> dict[str, Path]:
    """Write ``out/<csv_name>``, ``out/detection.md`` and ``out/detection.json``."""
    out = Path(out)
    paths = {"csv": out / csv_name, "md": out / "detection.md", "json": out / "detection.json"}
    data.atomic_write_text(paths["csv"], csv)
    data.atomic_write_text(paths["md"], markdown)
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    data.atomic_write_text(paths["json"], text)
    return paths


def write_detection_outputs(
    out: str | os.PathLike,
    results: Sequence[RunDetection],
    options: DetectionOptions,
    skipped: Sequence[tuple[str, str]] = (),
    versions: dict | None = None,
    cross: Sequence[CrossCell] = (),
) -> dict[str, Path]:
    """Write ``detection.csv``, ``detection.md``, ``detection.json`` and the plots into ``out``.

    Args:
        out: The output folder.
        results: One per run and feature set.
        options: The settings.
        skipped: ``(run, reason)`` of the runs left out.
        versions: Library versions to record.
        cross: The cross-attack cells (:func:`~sai_attack.detection.runs.run_detection`).

    Returns:
        The paths written, by kind (``csv``, ``md``, ``json``, ``roc``; ``cross_csv`` and
        ``cross_png`` with a matrix).
    """
    total = ExtractionStats()
    for r in results:
        total.add(r.extraction)
    record = {
        "protocol": protocol_text(options.splits, options.train_fraction),
        "settings": {
            **options.settings.describe(),
            "feature_sets": [s.describe() for s in options.feature_settings],
            "classifier": options.classifier,
            "splits": options.splits,
            "train_fraction": options.train_fraction,
            "seed": options.seed,
            "workers": options.workers,
            "cache_dir": None if options.cache_dir is None else str(options.cache_dir),
        },
        "runs": [detection_record(r) for r in results],
        "cross_attack": cross_record(cross),
        "skipped": [{"run": n, "reason": why} for n, why in skipped],
        "feature_extraction": total.describe(),
        "versions": versions or {},
    }
    csv = csv_text(DETECTION_COLUMNS, [detection_row(r) for r in results])
    markdown = detection_report(results, options, skipped, cross)
    paths = _write_outputs(out, "detection.csv", csv, markdown, record)
    return {**paths, **write_comparison_outputs(out, results, cross)}


def write_apply_outputs(
    out: str | os.PathLike, model_path: str, info: dict, results: Sequence[ApplyResult]
) -> dict[str, Path]:
    """Write ``predictions.csv``, ``detection.md`` and ``detection.json`` for an applied detector.

    Returns:
        The paths written, by kind (``csv``, ``md``, ``json``).
    """
    record = {
        "model": model_path,
        "model_info": info,
        "folders": [
            {
                "folder": str(r.folder),
                "is_run": r.is_run,
                "images": len(r.rows),
                "flagged": none_if_nan(r.flagged),
                "accuracy": none_if_nan(r.accuracy) if r.is_run else None,
                "p_fa": none_if_nan(r.p_fa),
                "p_md": none_if_nan(r.p_md),
            }
            for r in results
        ],
    }
    csv = csv_text(PREDICTION_COLUMNS, [row for r in results for row in r.rows])
    return _write_outputs(
        out, "predictions.csv", csv, apply_report(model_path, info, results), record
    )
