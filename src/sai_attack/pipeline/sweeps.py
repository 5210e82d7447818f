"""A delta sweep: one ordinary run per delta, sharing everything that does not depend on delta.

:func:`sweep` runs :class:`~sai_attack.pipeline.run.AttackRun` once per delta into
``OUT/delta-<d>/`` (see :mod:`sai_attack.runs.sweep`), on one loaded model and one template
cache: the first run computes each image's template, clean prediction and attention map, the
others read them back. Each run is the very run a separate ``attack --delta d`` makes (its
PNGs are byte-identical), resumes the same way, and is read by ``evaluate`` and ``detect`` as
any other. Without ``cache_dir`` the cache lives in a temporary folder for the sweep's duration.
At the end ``sweep.csv`` and ``sweep.png`` summarise the runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sai_attack import options
from sai_attack.attacks import ATTACKS
from sai_attack.models import ImageClassifier, load_model
from sai_attack.pipeline.config import RunOptions
from sai_attack.pipeline.run import AttackRun, RunSummary
from sai_attack.report import figure_png, new_figure, none_if_nan, number
from sai_attack.runs import SweepLayout, write_sweep
from sai_attack.runs.sweep import delta_text
from sai_attack.runtime import EXIT_OK

logger = logging.getLogger(__name__)


def check_deltas(deltas: Sequence[float]) -> list[float]:
    """The deltas of a sweep, each checked as ``delta``; at least one, none twice.

    Raises:
        ValueError: No delta, a bad one, or one given twice.
    """
    checked = [options.check("delta", d) for d in deltas]
    if not checked:
        raise ValueError("delta: a sweep needs at least one value")
    seen: set[float] = set()
    for d in checked:
        if d in seen:
            raise ValueError(f"delta {delta_text(d)} is given twice")
        seen.add(d)
    return checked


@dataclass
class SweepSummary:
    """What a sweep did: the summary of each delta's run and the rows of ``sweep.csv``."""

    out: Path
    runs: dict[float, RunSummary] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The largest exit code of the runs (3 when some run skipped inputs)."""
        return max((s.exit_code for s in self.runs.values()), default=EXIT_OK)

    @property
    def rank(self) -> int:
        """The rank of this process (0 outside torchrun)."""
        return next(iter(self.runs.values())).rank if self.runs else 0


@contextlib.contextmanager
def _cache_folder(cache_dir: str | None) -> Iterator[str]:
    if cache_dir is not None:
        yield cache_dir
        return
    with tempfile.TemporaryDirectory(prefix="sai-attack-sweep-cache-") as tmp:
        logger.info("sweep: templates, predictions and attention maps are cached in %s for "
                    "this sweep only (set cache_dir to keep them)", tmp)  # fmt: skip
        yield tmp


def sweep_row(config: Any, delta: float, summary: RunSummary, run: str) -> dict[str, Any]:
    """The ``sweep.csv`` row of one run of a sweep."""
    templates = (summary.cache or {}).get("templates", {}) if config.uses_superpixels else {}
    return {
        "method": config.method,
        "delta": delta_text(delta),
        "norm": config.norm,
        "budget": config.budget,
        "run": run,
        "images": summary.total,
        "ok": summary.attacked,
        "correct": summary.correct,
        "successes": summary.successes,
        "success_rate": number(summary.success_rate, 6),
        "successes_all": summary.successes_all,
        "success_rate_all": number(summary.success_rate_all, 6),
        "mean_delta_eff": number(summary.mean_delta_eff, 6),
        "seconds": number(summary.seconds, 3),
        "seconds_superpixels": number(summary.timings.get("superpixels"), 3),
        "templates_computed": templates.get("computed"),
        "templates_reused": templates.get("reused"),
    }


def sweep_figure(rows: Sequence[dict[str, Any]]) -> bytes:
    """``sweep.png``: success rate against delta and against mean delta_eff, a line per method."""
    figure = new_figure(10.0, 4.0, 100)
    by_delta, by_eff = figure.subplots(1, 2)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: float(r["delta"]))
        label = ATTACKS[method].title if method in ATTACKS else method
        rate = [100 * (none_if_nan(_float(r["success_rate"])) or 0.0) for r in mine]
        by_delta.plot([float(r["delta"]) for r in mine], rate, marker="o", label=label)
        by_eff.plot([_float(r["mean_delta_eff"]) for r in mine], rate, marker="o", label=label)
    for ax, xlabel in ((by_delta, "delta (0-255 units)"), (by_eff, "mean delta_eff")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("success rate (%, correctly classified images)")
        ax.set_ylim(-2, 102)  # room for the markers at 0 and 100%
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    return figure_png(figure)


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def sweep(
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    config: Any,
    deltas: Sequence[float],
    options: RunOptions | None = None,
    model: ImageClassifier | None = None,
) -> SweepSummary:
    """Attack ``input_path`` at every delta of ``deltas``: one run folder per delta under ``out``.

    Args:
        input_path: An image, or a folder of images (optionally with ``labels.csv``).
        out: The sweep folder (``out/delta-<d>/``, ``sweep.csv``, ``sweep.png``).
        config: The attack parameters; its ``delta`` is replaced by each of ``deltas``.
        deltas: The deltas, in the order they are run.
        options: Execution options; ``cache_dir`` keeps the cache beyond the sweep.
        model: An already loaded model to use instead of ``config.model``.

    Returns:
        The :class:`SweepSummary`.
    """
    deltas = check_deltas(deltas)
    options = options or RunOptions()
    layout = SweepLayout(Path(out))
    result = SweepSummary(out=layout.folder)
    model = model or load_model(config.model, config.weights)
    with _cache_folder(options.cache_dir) as cache_dir:
        shared = replace(options, cache_dir=cache_dir)
        for delta in deltas:
            folder = layout.run(delta)
            logger.info("sweep: delta %s -> %s", delta_text(delta), folder)
            run = AttackRun(input_path, folder, replace(config, delta=delta), shared, model=model)
            summary = run.run()
            result.runs[delta] = summary
            result.rows.append(sweep_row(run.config, delta, summary, folder.name))
    if result.rank == 0:
        write_sweep(layout.folder, result.rows, sweep_figure(result.rows))
    return result
