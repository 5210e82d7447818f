"""``sai-attack demo``: I-FGM and SAI-FGM side by side on the bundled sample images.

The table gives each method's success rate, perturbation size and perceptual distortion of the
saved images (:data:`PERCEPTUAL_METRICS`: mean delta_eff, SSIM, CIEDE2000 and its 95th
percentile, PSNR; :mod:`sai_attack.metrics`). :func:`perceptual_means` is also what the
reproduction report shows next to its success rates.

:func:`compare` attacks the samples, writes the runs, ``summary.md`` and the comparison figure,
logs each method's row and returns a :class:`DemoResult`; the command line prints its
:attr:`~DemoResult.text`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from sai_attack import data, options
from sai_attack.attacks import ATTACKS
from sai_attack.models import DEFAULT_MODEL, load_model
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.report import figure_png, markdown_table, number
from sai_attack.runs import Run, RunItem, read_run
from sai_attack.runtime import EXIT_OK, resolve_device
from sai_attack.visualize import ComparisonRow, comparison_figure, imagenet_classes

logger = logging.getLogger(__name__)

DEMO_METHODS = ("ifgm", "sai-fgm")
FIGURE_ROWS = 6
PERCEPTUAL_METRICS = (
    ("mean delta_eff", "delta_eff", 3),
    ("mean SSIM", "ssim", 4),
    ("mean CIEDE2000", "ciede2000", 3),
    ("CIEDE2000 p95", "ciede2000_p95", 3),
    ("mean PSNR (dB)", "psnr", 2),
)
"""The distortion metrics of a run's saved images: (table header, name, digits shown).

Means over the images that have the number: ``ssim`` and ``ciede2000`` are missing in folders
written before they existed, and an unchanged image (infinite PSNR) is left out of the PSNR mean,
as ``summary.json`` does. ``ciede2000_p95`` is the mean over images of each image's 95th
percentile.
"""


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
    head = ["method", "success", *(h for h, _, _ in PERCEPTUAL_METRICS), "budget", "seconds"]
    rows = []
    for method in DEMO_METHODS:
        config = AttackConfig(method=method, delta=delta)
        run_options = RunOptions(device=device, workers=0, save_templates=True, progress=False)
        summary = AttackRun(samples_dir(), out / method, config, run_options, model=model).run()
        run = read_run(out / method)
        rows.append(
            [
                method,
                f"{100 * summary.success_rate:.1f}% ({summary.successes}/{summary.correct})",
                *perceptual_cells(run.items),
                str(run.record.get("budget")),
                f"{summary.seconds:.1f}",
            ]
        )
        logger.info("demo: %s", ", ".join(f"{h} {c}" for h, c in zip(head, rows[-1], strict=True)))
    lines = [
        f"sai-attack demo: {DEFAULT_MODEL}, delta = {delta:g}, bundled samples "
        f"({samples_dir() / 'ATTRIBUTION.md'})",
        "",
        *markdown_table(head, rows),
    ]
    figure = out / "comparison.png"
    data.atomic_write_bytes(figure, figure_png(comparison_figure(_figure_rows(out))))
    table = "\n".join(lines)
    data.atomic_write_text(out / "summary.md", table + "\n")
    return DemoResult(table, figure, out, time.perf_counter() - started)


def psnr_of(delta_eff: float) -> float:
    """The PSNR (dB) of an image pair from its delta_eff (the RMS difference in 0-255 units).

    ``delta_eff = sqrt(MSE)``, so ``PSNR = 10 log10(255^2 / MSE) = 20 log10(255 / delta_eff)``,
    the ``psnr`` of ``results.csv`` (:func:`sai_attack.metrics.image_metrics`); infinite for an
    unchanged image.
    """
    return math.inf if delta_eff <= 0 else 20.0 * math.log10(255.0 / delta_eff)


def perceptual_means(items: Sequence[RunItem]) -> dict[str, float | None]:
    """The mean of each of :data:`PERCEPTUAL_METRICS` over a run's images.

    Args:
        items: The images (:class:`~sai_attack.runs.RunItem`).

    Returns:
        The mean by metric name, None when no image has the number.
    """
    means: dict[str, float | None] = {}
    for _, name, _ in PERCEPTUAL_METRICS:
        if name == "psnr":
            values = [psnr_of(it.delta_eff) for it in items if it.delta_eff is not None]
        else:
            values = [getattr(it, name) for it in items if getattr(it, name) is not None]
        values = [v for v in values if math.isfinite(v)]
        means[name] = float(np.mean(values)) if values else None
    return means


def perceptual_cells(items: Sequence[RunItem]) -> list[str]:
    """:func:`perceptual_means` as table cells with :data:`PERCEPTUAL_METRICS`' digits."""
    means = perceptual_means(items)
    return [number(means[name], digits) for _, name, digits in PERCEPTUAL_METRICS]


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
