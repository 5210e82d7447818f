"""The HILL cost of an image and the texture and perturbation statistics of its two regions.

HILL: B. Li, M. Wang, J. Huang and X. Li, "A new cost function for spatial image steganography",
ICIP 2014, computed by conseal on the 8-bit luminance (:func:`sai_attack.texture_cost.hill_cost`,
which the stego-aware attack reads too); :mod:`sai_attack.detection.texture` applies it to the
attention foreground and background of a run's images (its docstring has the definitions).
"""

from __future__ import annotations

import math

import numpy as np

from sai_attack.texture_cost import hill_cost

__all__ = ["hill_cost", "region_stats"]


def region_stats(
    clean: np.ndarray, adversarial: np.ndarray, foreground: np.ndarray
) -> dict[str, float]:
    """HILL cost and perturbation statistics of one image, split by a foreground mask.

    Args:
        clean: (H, W, 3) uint8 clean image.
        adversarial: (H, W, 3) uint8 adversarial image.
        foreground: (H, W) bool mask.

    Returns:
        ``fg_fraction``, ``hill_fg``, ``hill_bg`` (NaN for an empty region), ``sq_fg``,
        ``sq_bg`` (summed squared perturbation), ``rms_fg``, ``rms_bg`` (0-255 units).
    """
    if clean.shape != adversarial.shape or clean.shape[:2] != foreground.shape:
        raise ValueError(
            f"shapes differ: clean {clean.shape}, adversarial {adversarial.shape}, "
            f"foreground {foreground.shape}"
        )
    fg = foreground.astype(bool)
    bg = ~fg
    cost = hill_cost(clean).astype(np.float64)
    diff = adversarial.astype(np.float64) - clean.astype(np.float64)
    energy = np.sum(diff * diff, axis=2)  # (H, W), summed over channels
    n_fg, n_bg = int(fg.sum()), int(bg.sum())
    sq_fg, sq_bg = float(energy[fg].sum()), float(energy[bg].sum())
    return {
        "fg_fraction": n_fg / fg.size,
        "hill_fg": float(cost[fg].mean()) if n_fg else math.nan,
        "hill_bg": float(cost[bg].mean()) if n_bg else math.nan,
        "sq_fg": sq_fg,
        "sq_bg": sq_bg,
        "rms_fg": math.sqrt(sq_fg / (3 * n_fg)) if n_fg else math.nan,
        "rms_bg": math.sqrt(sq_bg / (3 * n_bg)) if n_bg else math.nan,
    }
