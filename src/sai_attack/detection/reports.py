"""Tables and files of the detection results: Table 2, per-run details, CSV, JSON.

``detect`` writes ``detection.csv``, ``detection.json`` and ``detection.md``, the last in the
layout of Table 2 of Dong et al. (CVPR 2020): one row per attack (method, superpixel algorithm
and merge beta), one column per delta, detection accuracy in percent. A saved detector applied
with ``detect --apply`` writes ``predictions.csv``, ``detection.md`` and ``detection.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from sai_attack import data
from sai_attack.attacks import METHOD_NAMES
from sai_attack.detection.features import ExtractionStats
from sai_attack.detection.protocol import protocol_text
from sai_attack.detection.runs import ApplyResult, DetectionOptions, RunDetection
from sai_attack.report import csv_text, markdown_table, none_if_nan, number, percent

METHOD_ORDER = tuple(METHOD_NAMES)
"""The order of Table 2's rows: the registry's order of the methods."""

DETECTION_COLUMNS = (
    "run", "method", "delta", "delta_eff", "features", "n_train", "n_test", "accuracy", "std",
    "p_fa", "p_md", "label", "merge_beta", "superpixel", "color", "classifier", "splits",
)  # fmt: skip
"""The columns of ``detection.csv``."""

PREDICTION_COLUMNS = ("folder", "image", "kind", "score", "predicted")
"""The columns of ``predictions.csv``."""

CLASSIFIER_TEXT = {"fld": "FLD ensemble (Kodovsky et al. 2012)", "logreg": "logistic regression"}


def _pct(rate: float) -> str:
    return percent(rate, 2, unknown="n/a")


def _delta(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def detection_row(r: RunDetection) -> dict:
    """The ``detection.csv`` row of one run."""
    res = r.result
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
    }


def detection_record(r: RunDetection) -> dict:
    """The JSON-ready record of one run, with per-split details."""
    return {
        "run": r.run.name,
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
        "features": r.extraction.describe(),
        "seconds_train": round(r.seconds_train, 3),
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
    if math.isnan(r.result.std):  # a single split has no spread
        return _pct(r.result.accuracy)
    return f"{_pct(r.result.accuracy)} ± {_pct(r.result.std)}"


def table2_markdown(results: Sequence[RunDetection]) -> str:
    """Detection accuracy (%) with methods as rows and delta as columns (paper Table 2)."""
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
    """One line per run: pairs, delta_eff, accuracy, std, P_FA, P_MD."""
    head = ["run", "attack", "δ", "δ_eff", "pairs (train/test)", "accuracy %", "std %",
            "P_FA %", "P_MD %"]  # fmt: skip
    body = [
        [r.run.name, r.label, _delta(r.run.delta), number(r.run.mean_delta_eff, 3),
         f"{r.result.n_train}/{r.result.n_test}", _pct(r.result.accuracy), _pct(r.result.std),
         _pct(r.result.p_fa), _pct(r.result.p_md)]
        for r in results
    ]  # fmt: skip
    return "\n".join(markdown_table(head, body)) + "\n"


def detection_report(
    results: Sequence[RunDetection],
    options: DetectionOptions,
    skipped: Sequence[tuple[str, str]] = (),
) -> str:
    """The full Markdown report: Table 2 analogue, per-run details and the protocol."""
    s = options.settings
    parts = [
        "# Steganalysis-based detection (Dong et al. 2020, Table 2 layout)\n",
        f"Detection accuracy (%) = 1 - P_E, mean ± std over {options.splits} split(s); "
        f"features: {s.features.upper()} ({s.color}, {s.dim}-D), classifier: "
        f"{CLASSIFIER_TEXT.get(options.classifier, options.classifier)}. Lower is better for the "
        "attack.\n",
        table2_markdown(results),
        "## Runs\n",
        details_markdown(results),
        "## Protocol\n",
        protocol_text(options.splits, options.train_fraction) + "\n",
    ]
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
) -> dict[str, Path]:
    """Write ``detection.csv``, ``detection.md`` and ``detection.json`` into ``out``.

    Returns:
        The paths written, by kind (``csv``, ``md``, ``json``).
    """
    total = ExtractionStats()
    for r in results:
        total.add(r.extraction)
    record = {
        "protocol": protocol_text(options.splits, options.train_fraction),
        "settings": {
            **options.settings.describe(),
            "classifier": options.classifier,
            "splits": options.splits,
            "train_fraction": options.train_fraction,
            "seed": options.seed,
            "workers": options.workers,
            "cache_dir": None if options.cache_dir is None else str(options.cache_dir),
        },
        "runs": [detection_record(r) for r in results],
        "skipped": [{"run": n, "reason": why} for n, why in skipped],
        "feature_extraction": total.describe(),
        "versions": versions or {},
    }
    csv = csv_text(DETECTION_COLUMNS, [detection_row(r) for r in results])
    return _write_outputs(
        out, "detection.csv", csv, detection_report(results, options, skipped), record
    )


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
