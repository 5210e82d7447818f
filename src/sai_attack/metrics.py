"""Per-image distortion metrics, measured on the saved 8-bit images.

Every function takes two (H, W, 3) uint8 RGB images, the clean one first, exactly as the PNGs of
a run folder hold them:

* :func:`image_metrics`: L2 and L-infinity norms (0-255 units), ``delta_eff = L2 / sqrt(N)`` and
  PSNR;
* :func:`ssim`: structural similarity with the window of Wang et al. (2004);
* :func:`ciede2000`: the CIEDE2000 colour difference per pixel, as its mean and 95th percentile.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

SSIM_SIGMA = 1.5
"""Standard deviation of SSIM's Gaussian window (Wang et al. 2004)."""
SSIM_WINDOW = 11
"""Side of the window scikit-image uses for ``sigma`` 1.5 (its ``truncate`` 3.5: radius 5)."""
CIEDE2000_PERCENTILE = 95.0
"""The upper percentile of the per-pixel colour difference that is reported."""


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


def ssim(clean: np.ndarray, adv: np.ndarray) -> float:
    """The mean structural similarity of two RGB uint8 images, 1.0 for identical images.

    scikit-image's ``structural_similarity`` with the parameters of Wang et al. (2004): an 11 x
    11 Gaussian window of sigma 1.5 (``gaussian_weights=True``), population covariances
    (``use_sample_covariance=False``), K1 = 0.01, K2 = 0.03, ``data_range=255``. The SSIM map of
    each colour channel is averaged over the pixels whose window lies inside the image (a
    5-pixel border is left out), and the three channel means are averaged.

    Returns:
        The SSIM in [-1, 1]; NaN when a side of the image is shorter than the window.
    """
    if min(clean.shape[:2]) < SSIM_WINDOW:
        return float("nan")
    return float(
        structural_similarity(
            clean,
            adv,
            channel_axis=-1,
            data_range=255,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )


def ciede2000(clean: np.ndarray, adv: np.ndarray) -> tuple[float, float]:
    """The CIEDE2000 colour difference of two RGB uint8 images: mean and 95th percentile.

    Both images go to CIELAB with scikit-image's ``rgb2lab`` (sRGB, D65 white point, 2-degree
    observer), and ``deltaE_ciede2000`` (kL = kC = kH = 1) gives the difference of each pixel.
    Only the pixels that differ are converted: an unchanged pixel's difference is exactly 0 and
    both functions work pixel by pixel, so the result is that of the whole image, at a fraction
    of the cost for attacks that leave most pixels alone.

    Returns:
        ``(mean, p95)`` over all pixels, in CIEDE2000 units (about 1 is a just noticeable
        difference); ``(0.0, 0.0)`` for identical images.
    """
    changed = np.any(clean != adv, axis=-1)  # (H, W)
    delta = np.zeros(changed.shape, np.float64)
    if changed.any():
        # rgb2lab scales uint8 by 1/255 itself, as it would for the whole image.
        delta[changed] = deltaE_ciede2000(rgb2lab(clean[changed]), rgb2lab(adv[changed]))
    if delta.size == 0:
        return float("nan"), float("nan")
    return float(delta.mean()), float(np.percentile(delta, CIEDE2000_PERCENTILE))


def perceptual_metrics(clean: np.ndarray, adv: np.ndarray) -> dict[str, float]:
    """SSIM and CIEDE2000 (mean, 95th percentile) of two RGB uint8 images, by column name."""
    mean, p95 = ciede2000(clean, adv)
    return {"ssim": ssim(clean, adv), "ciede2000": mean, "ciede2000_p95": p95}
