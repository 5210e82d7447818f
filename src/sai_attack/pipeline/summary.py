"""The content of ``summary.json``: the run record, the protocol, counts, rates and timing.

Besides the success rate over the images the model classified correctly (the paper's), it holds
the rate over every attacked image (TransferAttack and the NIPS 2017 competition papers), the
mean and median of each distortion metric of ``results.csv``, and the SHA-256 of the file the
model's weights came from, so that numbers can be compared with other papers and other runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from sai_attack.attacks import Attack
from sai_attack.models.zoo import weights_file
from sai_attack.report import none_if_nan
from sai_attack.runs import PROTOCOL_TEXT
from sai_attack.runtime import file_sha256, library_versions

logger = logging.getLogger(__name__)

EPSILON_TEXT = {
    "l2": "L2: delta * sqrt(N), N = C*H*W at the attack resolution, 0-255 units",
    "linf": "L-infinity: delta per pixel value, 0-255 units (delta 8 = 8/255)",
}
"""What the budget eps is, per norm, as written into ``summary.json``."""

BUDGET_TEXT = {
    "l2": PROTOCOL_TEXT,
    "linf": {
        "within": "perturbation clipped into the L-infinity box |r| <= eps",
        "exact": "every perturbed value (superpixel or pixel) at +-eps (the L-infinity "
        "bound), reduced only by clipping",
    },
}
"""What each budget protocol means, per norm."""

METRIC_COLUMNS = ("delta_eff", "l2", "linf", "psnr", "ssim", "ciede2000", "ciede2000_p95")
"""The ``results.csv`` columns summarised by mean and median."""


def successes_over_all(rows: list[dict[str, str]]) -> tuple[int, int]:
    """Successes and attacked images by the all-images convention (TransferAttack, NIPS 2017).

    An image counts as fooled when the prediction on its saved adversarial image is not its
    label (the clean prediction without labels), or is the target of a targeted run, whether or
    not the model classified the clean image correctly.

    Returns:
        ``(successes, attacked)`` over the ``ok`` rows.
    """
    fooled = 0
    for r in rows:
        if r.get("target"):
            fooled += r["adv_pred"] == r["target"]
        else:
            fooled += r["adv_pred"] != (r["label"] or r["clean_pred"])
    return fooled, len(rows)


def metric_statistics(rows: list[dict[str, str]]) -> dict[str, dict[str, float | int | None]]:
    """Mean, median and count of each of :data:`METRIC_COLUMNS` over ``rows``.

    Empty cells (rows of folders written before a column existed) are left out, and so are
    infinite PSNRs (unchanged images), which would make the mean infinite; ``n`` says how many
    images each statistic is over.
    """
    stats: dict[str, dict[str, float | int | None]] = {}
    for column in METRIC_COLUMNS:
        values = np.array([float(r[column]) for r in rows if r.get(column)], np.float64)
        values = values[np.isfinite(values)]
        stats[column] = {
            "mean": round(float(values.mean()), 6) if values.size else None,
            "median": round(float(np.median(values)), 6) if values.size else None,
            "n": int(values.size),
        }
    return stats


def min_delta_statistics(rows: list[dict[str, str]], search: dict) -> dict[str, Any]:
    """The ``min_delta`` search's settings and its median over the correctly classified images.

    Like the paper's success rate, the median is over the images the model classified
    correctly (all images without labels) whose ``min_delta`` was found; ``not_found`` counts
    those that resisted even the largest delta.
    """
    correct = [r for r in rows if r["label"] in ("", r["clean_pred"])]
    found = [float(r["min_delta"]) for r in correct if r.get("min_delta")]
    return {
        **search,
        "resolution": (search["high"] - search["low"]) / 2 ** search["steps"],
        "images": len(correct),
        "found": len(found),
        "not_found": len(correct) - len(found),
        "median": round(float(np.median(found)), 6) if found else None,
        "text": "per image: results.csv min_delta, the smallest delta whose saved 8-bit image "
        "fooled the model, by bisection between low and high (steps after trying both); the "
        "median is over the correctly classified images where one was found",
    }


def fallback_text(loss: str) -> str:
    """What the run's fallback attack did, for the protocol of ``summary.json``."""
    if loss == "none":
        return "none"
    return (
        f"images the attack did not fool on their saved 8-bit files (still predicted as the "
        f"attacked class, or not as their target) were attacked again with loss {loss} and "
        f"budget within; results.csv fallback = 1 where that re-attack succeeded and its image "
        f"was saved"
    )


def weights_record(model: str, weights: str | None) -> dict[str, str | None]:
    """The file a model's weights came from and its SHA-256 (None when not known)."""
    path = weights_file(model, weights)
    if path is None:
        return {"file": None, "sha256": None}
    try:
        digest = file_sha256(Path(path))
    except OSError as exc:  # the run has already loaded them: say so, do not fail the run
        logger.warning("cannot hash the weights file %s: %s", path, exc)
        digest = None
    return {"file": str(path), "sha256": digest}


def summary_record(
    summary: Any,
    record: dict,
    attack: Attack,
    rows: list[dict[str, str]],
    has_labels: bool,
    device: str,
    attention: str | None,
) -> dict:
    """``summary.json`` of a finished run.

    Args:
        summary: The :class:`~sai_attack.pipeline.run.RunSummary`.
        record: The ``run.json`` record (method, model, parameters).
        attack: The attack that ran.
        rows: The rows with status ok in ``results.csv``.
        has_labels: Whether a labels CSV gave the classes.
        device: Where the attack ran.
        attention: The attention method that ran (``auto`` resolved), None without attention.
    """
    n_done = summary.processed
    extra: dict[str, Any] = {}
    if record.get("min_delta"):
        extra["min_delta"] = min_delta_statistics(rows, record["min_delta"])
    return {
        **record,
        **extra,
        "protocol": {
            "norm": attack.norm,
            "budget": attack.budget,
            "budget_text": BUDGET_TEXT[attack.norm][attack.budget],
            "epsilon": EPSILON_TEXT[attack.norm],
            "image_size": record["parameters"]["image_size"],
            "success": "measured on the saved 8-bit PNG; success_rate: over images the model "
            "classified correctly before the attack; success_rate_all: over all attacked images "
            "(prediction not the label, or the target), as TransferAttack and the NIPS 2017 "
            "competition count",
            "ssim": "scikit-image structural_similarity on the saved 8-bit RGB pair: 11x11 "
            "Gaussian window, sigma 1.5, population covariance, K1 0.01, K2 0.03, data_range "
            "255 (Wang et al. 2004), mean of the three channels",
            "ciede2000": "skimage deltaE_ciede2000 of rgb2lab (sRGB, D65) per pixel; ciede2000: "
            "its mean per image, ciede2000_p95: its 95th percentile per image",
            "labels": "labels CSV" if has_labels else "clean prediction used as label",
            "attention": attention or "none",
            "transforms": attack.transforms.text(),
            "fallback": fallback_text(record["parameters"].get("fallback_loss", "none")),
        },
        "counts": {
            "inputs": summary.total,
            "processed_now": summary.processed,
            "reused": summary.reused,
            "ok": len(rows),
            "skipped": summary.skipped,
            "correct": summary.correct,
            "successes": summary.successes,
            "successes_all": summary.successes_all,
            "fallback": sum(r.get("fallback") == "1" for r in rows),
        },
        "success_rate": none_if_nan(summary.success_rate, 6),
        "success_rate_all": none_if_nan(summary.success_rate_all, 6),
        "mean_delta_eff": none_if_nan(summary.mean_delta_eff, 6),
        "metrics": metric_statistics(rows),
        "model_weights": weights_record(record["model"], record["parameters"].get("weights")),
        "seconds": round(summary.seconds, 3),
        "images_per_s": round(n_done / summary.seconds, 4) if summary.seconds and n_done else None,
        "timings": {k: round(v, 3) for k, v in summary.timings.items()},
        "cache": summary.cache,
        "device": device,
        "versions": library_versions(),
    }
