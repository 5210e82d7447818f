"""``sai-attack demo``: I-FGM and SAI-FGM side by side on the bundled sample images."""

from __future__ import annotations

import csv
import json
import logging
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.models import DEFAULT_MODEL, load_model
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.runs import read_results
from sai_attack.runtime import resolve_device
from sai_attack.visualize import ComparisonRow, comparison_figure, imagenet_classes

logger = logging.getLogger(__name__)

DEMO_METHODS = ("ifgm", "sai-fgm")
FIGURE_ROWS = 6


def samples_dir() -> Path:
    """The folder of bundled sample images (with ``labels.csv`` and ``ATTRIBUTION.md``)."""
    return Path(str(files("sai_attack") / "samples"))


def run_demo(out: Path, device: str = "cpu", delta: float = 4.0) -> int:
    """Attack the samples with each of :data:`DEMO_METHODS`, print a table, draw the figure.

    Returns:
        The exit code (0).
    """
    started = time.perf_counter()
    model = load_model(DEFAULT_MODEL).to(resolve_device(device))
    lines = [
        f"sai-attack demo: {DEFAULT_MODEL}, delta = {delta:g}, bundled samples "
        f"({samples_dir() / 'ATTRIBUTION.md'})",
        "",
        "| method | success | mean delta_eff | budget | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method in DEMO_METHODS:
        config = AttackConfig(method=method, delta=delta)
        options = RunOptions(device=device, workers=0, save_templates=True, progress=False)
        run = AttackRun(samples_dir(), out / method, config, options, model=model)
        summary = run.run()
        record = json.loads((out / method / "summary.json").read_text())
        lines.append(
            f"| {method} | {100 * summary.success_rate:.1f}% "
            f"({summary.successes}/{summary.correct}) | {summary.mean_delta_eff:.3f} | "
            f"{record['protocol']['budget']} | {summary.seconds:.1f} |"
        )
    figure = out / "comparison.png"
    _figure(out, figure)
    table = "\n".join(lines)
    data.atomic_write_text(out / "summary.md", table + "\n")
    print(table)
    print(
        f"\nfigure: {figure}\nadversarial images: {out}/<method>/images/ "
        f"({time.perf_counter() - started:.0f} s in all)"
    )
    return 0


def _figure(out: Path, path: Path) -> None:
    classes = imagenet_classes()
    ref = out / DEMO_METHODS[-1]
    results = {
        m: {r["image"]: r for r in read_results(out / m / "results.csv")} for m in DEMO_METHODS
    }
    rows = []
    for name, r in list(results[DEMO_METHODS[-1]].items())[:FIGURE_ROWS]:
        if r["status"] != "ok":
            continue
        stem = Path(r["output"]).stem
        clean = data.load_image(ref / "clean" / f"{stem}.png")
        adversarial = {m: data.load_image(out / m / "images" / f"{stem}.png") for m in DEMO_METHODS}
        preds = ", ".join(
            f"{m}: {classes[int(results[m][name]['adv_pred'])][:14]}" for m in DEMO_METHODS
        )
        template = np.load(ref / "templates" / f"{stem}.npz")
        rows.append(
            ComparisonRow(
                title=f"{classes[int(r['clean_pred'])][:18]}\n{preds}",
                clean=clean,
                adversarial=adversarial,
                superpixels=template["superpixels"],
                mask=template.get("mask"),
            )
        )
    comparison_figure(rows, path)


def sample_labels() -> dict[str, int]:
    """Labels of the bundled samples."""
    with (samples_dir() / "labels.csv").open(newline="") as f:
        return {r["image"]: int(r["label"]) for r in csv.DictReader(f)}
