"""``sai-attack demo``: I-FGM and SAI-FGM side by side on the bundled sample images.

The table gives each method's success rate, perturbation size and perceptual distortion (mean
SSIM and CIEDE2000 of the saved images, :mod:`sai_attack.metrics`).

:func:`compare` attacks the samples, writes the runs, ``summary.md`` and the comparison figure,
and returns a :class:`DemoResult`; the command line prints its :attr:`~DemoResult.text`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from sai_attack import data, options
from sai_attack.attacks import ATTACKS
from sai_attack.models import DEFAULT_MODEL, load_model
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.report import figure_png, number
from sai_attack.runs import Run, read_run
from sai_attack.runtime import EXIT_OK, resolve_device
from sai_attack.visualize import ComparisonRow, comparison_figure, imagenet_classes

logger = logging.getLogger(__name__)

DEMO_METHODS = ("ifgm", "sai-fgm")
FIGURE_ROWS = 6
DEMO_METRICS = (("ssim", 4), ("ciede2000", 3), ("ciede2000_p95", 3))
"""The perceptual metrics the table shows (mean over the images), with their digits."""


def samples_dir() -> Path:
    """The folder of bundled sample images (with ``labels.csv`` and ``ATTRIBUTION.md``)."""
    return Path(str(files("sai_attack") / "samples"))


@dataclass(frozen=True)
class DemoResult:
    """What a demo measured and wrote.

    Attributes:
        table: The Markdown table of the methods (also written to ``summary.md``).
        figure: The comparison figure.
        out: The output folder (one run folder per method).
        seconds: Wall time of the whole demo.
        exit_code: The command's exit code.
    """

    table: str
    figure: Path
    out: Path
    seconds: float
    exit_code: int = EXIT_OK

    @property
    def text(self) -> str:
        """The report for the terminal: the table, then where the figure and images are."""
        return (
            f"{self.table}\n\nfigure: {self.figure}\nadversarial images: {self.out}/<method>/"
            f"images/ ({self.seconds:.0f} s in all)"
        )


def compare(
    out: Path,
    device: str = options.default("device"),
    delta: float = options.default("delta"),
) -> DemoResult:
    """Attack the samples with each of :data:`DEMO_METHODS` and draw the comparison figure.

    Args:
        out: The output folder.
        device: Where the model runs.
        delta: The perturbation scale.

    Returns:
        The :class:`DemoResult`.
    """
    started = time.perf_counter()
    model = load_model(DEFAULT_MODEL).to(resolve_device(device))
    lines = [
        f"sai-attack demo: {DEFAULT_MODEL}, delta = {delta:g}, bundled samples "
        f"({samples_dir() / 'ATTRIBUTION.md'})",
        "",
        "| method | success | mean delta_eff | mean SSIM | mean CIEDE2000 | CIEDE2000 p95 "
        "| budget | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in DEMO_METHODS:
        config = AttackConfig(method=method, delta=delta)
        run_options = RunOptions(device=device, workers=0, save_templates=True, progress=False)
        summary = AttackRun(samples_dir(), out / method, config, run_options, model=model).run()
        run = read_run(out / method)
        ssim, ciede, ciede_p95 = (number(_mean(run, name), digits) for name, digits in DEMO_METRICS)
        lines.append(
            f"| {method} | {100 * summary.success_rate:.1f}% "
            f"({summary.successes}/{summary.correct}) | {summary.mean_delta_eff:.3f} | "
            f"{ssim} | {ciede} | {ciede_p95} | {run.record.get('budget')} | "
            f"{summary.seconds:.1f} |"
        )
    figure = out / "comparison.png"
    data.atomic_write_bytes(figure, figure_png(comparison_figure(_figure_rows(out))))
    table = "\n".join(lines)
    data.atomic_write_text(out / "summary.md", table + "\n")
    return DemoResult(table, figure, out, time.perf_counter() - started)


def _mean(run: Run, metric: str) -> float | None:
    """The mean of a per-image metric of ``run`` (a :class:`~sai_attack.runs.RunItem` field)."""
    values = [getattr(it, metric) for it in run.items if getattr(it, metric) is not None]
    return float(np.mean(values)) if values else None


def _adversarial_predictions(run: Run) -> dict[str, int]:
    """The adversarial prediction of each image."""
    return {it.image: it.adv_pred for it in run.items if it.adv_pred is not None}


def _figure_rows(out: Path) -> list[ComparisonRow]:
    """The first :data:`FIGURE_ROWS` samples: clean, each method's image, the template."""
    classes = imagenet_classes()
    runs = {m: read_run(out / m) for m in DEMO_METHODS}
    items = {m: {it.image: it for it in run.items} for m, run in runs.items()}
    predictions = {m: _adversarial_predictions(run) for m, run in runs.items()}
    ref = next(runs[m] for m in DEMO_METHODS if ATTACKS[m].uses_superpixels)  # its template
    rows = []
    for item in ref.items[:FIGURE_ROWS]:
        if any(item.image not in items[m] for m in DEMO_METHODS):
            continue
        preds = ", ".join(f"{m}: {classes[predictions[m][item.image]][:14]}" for m in DEMO_METHODS)
        clean_class = item.clean_pred if item.clean_pred is not None else item.reference
        template = np.load(ref.template(item))
        rows.append(
            ComparisonRow(
                title=f"{classes[clean_class][:18]}\n{preds}",
                clean=data.load_image(item.clean),
                adversarial={m: data.load_image(items[m][item.image].adversarial) for m in items},
                superpixels=template["superpixels"],
                mask=template.get("mask"),
            )
        )
    return rows
