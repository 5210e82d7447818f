"""The output files of an evaluation: CSV, JSON, Markdown and sweep plots."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.defenses import Defense
from sai_attack.evaluation.compute import Evaluation
from sai_attack.evaluation.protocol import (
    PREDICTION_COLUMNS,
    PROTOCOL,
    RESULT_COLUMNS,
    method_of,
    with_interval,
)
from sai_attack.evaluation.tables import plot_name, results_markdown, run_label, swept
from sai_attack.evaluation.targets import Target
from sai_attack.report import csv_text, figure_png, new_figure, none_if_nan
from sai_attack.runs import Run
from sai_attack.runtime import library_versions


def _csv_value(value: object) -> object:
    # Six significant digits (not report.number's fixed digits): the format evaluation.csv has
    # always had, so that rates stay comparable across versions.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return value


def results_csv(evaluation: Evaluation) -> str:
    """``evaluation.csv``: one tidy row per (run, model, defense)."""
    rows = [
        {k: _csv_value(v) for k, v in with_interval(row).items() if k in RESULT_COLUMNS}
        for row in evaluation.rows
    ]
    return csv_text(RESULT_COLUMNS, rows)


def predictions_csv(evaluation: Evaluation) -> str:
    """``predictions.csv``: one row per (run, image, model, defense)."""
    return csv_text(PREDICTION_COLUMNS, evaluation.predictions)


def describe_run(run: Run) -> dict:
    """A run as ``evaluation.json`` describes it."""
    return {
        "name": run.name,
        "path": str(run.path),
        "method": method_of(run),
        "attack_model": run.model,
        "attack_weights": run.weights,
        "delta": run.delta,
        "mean_delta_eff": none_if_nan(run.mean_delta_eff, 6),
        "targeted": run.targeted,
        "images": len(run.items),
        "skipped_rows": run.skipped,
        "missing_files": len(run.missing),
        "labels": run.label_source,
    }


def _describe_defense(defense: Defense) -> dict:
    return {
        "spec": defense.spec,
        "name": defense.name,
        "parameter": defense.param_name,
        "value": defense.param,
        "description": defense.description,
    }


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def results_json(evaluation: Evaluation) -> str:
    """``evaluation.json``: protocol, runs, models, defenses and the rows."""
    rows = [
        {k: (none_if_nan(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        for row in map(with_interval, evaluation.rows)
    ]
    record = {
        "protocol": PROTOCOL,
        "runs": [describe_run(r) for r in evaluation.runs],
        "models": [t.describe() for t in evaluation.targets],
        "defenses": [_describe_defense(d) for d in evaluation.defenses],
        "seed": evaluation.seed,
        "results": rows,
        "seconds": round(evaluation.seconds, 3),
        "versions": library_versions(),
    }
    return json.dumps(record, indent=2, default=_json_default) + "\n"


def sweep_plot(evaluation: Evaluation, target: Target, sweep: Sequence[Defense]) -> bytes:
    """PNG of success rate against the swept parameter, one line per run (Figures 4-6)."""
    fig = new_figure(6.0, 4.0, 100)
    ax = fig.add_subplot(1, 1, 1)
    xs = [float(d.param) for d in sweep]
    for run in evaluation.runs:
        ys = [100.0 * evaluation.row(run.name, target.name, d.spec)["success_rate"] for d in sweep]
        ax.plot(xs, ys, marker="o", markersize=3, label=run_label(run))
    ax.set_xlabel(f"{sweep[0].name} {sweep[0].param_name}")
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{sweep[0].name} on {target.name}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def write_evaluation(evaluation: Evaluation, out: str | os.PathLike) -> dict[str, Path]:
    """Write every output file into ``out`` (atomically); returns them by kind."""
    folder = Path(out)
    texts = {
        "csv": ("evaluation.csv", results_csv),
        "json": ("evaluation.json", results_json),
        "markdown": ("evaluation.md", results_markdown),
        "predictions": ("predictions.csv", predictions_csv),
    }
    files: dict[str, Path] = {}
    for kind, (name, render) in texts.items():
        files[kind] = folder / name
        data.atomic_write_text(files[kind], render(evaluation))
    for name, sweep in swept(evaluation).items():
        for t in evaluation.targets:
            path = folder / "plots" / plot_name(name, t)
            data.atomic_write_bytes(path, sweep_plot(evaluation, t, sweep))
            files[f"plot:{name}:{t.name}"] = path
    return files
