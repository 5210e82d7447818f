"""The HILL cost of an image and the texture and perturbation statistics of its two regions.

HILL: B. Li, M. Wang, J. Huang and X. Li, "A new cost function for spatial image steganography",
ICIP 2014, computed by conseal on the 8-bit luminance; :mod:`sai_attack.detection.texture` applies
it to the attention foreground and background of a run's images (its docstring has the
definitions).
"""

from __future__ import annotations

import math

import numpy as np

from sai_attack.detection.features import luminance

_RUST_MIN_SIZE = 16


def hill_cost(image: np.ndarray) -> np.ndarray:
    """HILL cost map of an image's luminance (conseal; Rust backend from 16 x 16 pixels up).

    Args:
        image: (H, W, 3) uint8 RGB, or (H, W) uint8 gray.

    Returns:
        (H, W) float32 costs; larger = smoother.
    """
    import conseal as cl

    gray = image if image.ndim == 2 else luminance(image)
    if gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {gray.dtype}")
    gray = np.ascontiguousarray(gray)
    if min(gray.shape) < _RUST_MIN_SIZE:
        # conseal's Rust HILL panics below 9 x 9 (its 15 x 15 filter's mirrored border).
        return np.asarray(cl.hill._costmap.compute_cost(gray), np.float32)
    with cl.tools.BACKEND_RUST:
        return np.asarray(cl.hill._costmap.compute_cost(gray), np.float32)


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
