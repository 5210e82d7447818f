"""Per-image distortion metrics, measured on the saved 8-bit images."""

from __future__ import annotations

import math

import numpy as np


def image_metrics(clean: np.ndarray, adv: np.ndarray) -> dict[str, float]:
    """L2 (0-255 units), delta_eff = L2 / sqrt(N), Linf and PSNR between two uint8 images."""
    diff = adv.astype(np.float64) - clean.astype(np.float64)
    l2 = float(np.sqrt(np.sum(diff * diff)))
    mse = float(np.mean(diff * diff))
    return {
        "l2": l2,
        "delta_eff": l2 / math.sqrt(diff.size),
        "linf": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "psnr": float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse),
    }
