"""The HILL texture cost of an image, per pixel and per superpixel: where steganalysis looks least.

HILL (B. Li, M. Wang, J. Huang and X. Li, "A new cost function for spatial image steganography",
ICIP 2014) assigns every pixel the cost of changing it: small in textured regions, whose noise
hides a change from residual-based steganalysis such as SPAM, large in smooth ones. It is computed
by conseal on the 8-bit luminance. This module sits below the attacks so that the superpixel space
can weight its noise by it (``texture_weight``, stego-aware SAI); the detection analyses read the
same :func:`hill_cost` through :mod:`sai_attack.detection.hill`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sai_attack import superpixels as sp

_RUST_MIN_SIZE = 16
_SMALLEST_COST = 1e-12  # HILL costs are positive; the floor only guards the logarithm


def hill_cost(image: np.ndarray) -> np.ndarray:
    """HILL cost map of an image's luminance (conseal; Rust backend from 16 x 16 pixels up).

    Args:
        image: (H, W, 3) uint8 RGB, or (H, W) uint8 gray. RGB goes to the luminance as Pillow's
            ``convert("L")`` does (ITU-R 601-2, as the detection features).

    Returns:
        (H, W) float32 costs; larger = smoother.
    """
    import conseal as cl

    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise ValueError(
            f"expected an (H, W, 3) or (H, W) uint8 image, got {image.dtype} {image.shape}"
        )
    gray = image if image.ndim == 2 else np.asarray(Image.fromarray(image, "RGB").convert("L"))
    gray = np.ascontiguousarray(gray)
    if min(gray.shape) < _RUST_MIN_SIZE:
        # conseal's Rust HILL panics below 9 x 9 (its 15 x 15 filter's mirrored border).
        return np.asarray(cl.hill._costmap.compute_cost(gray), np.float32)
    with cl.tools.BACKEND_RUST:
        return np.asarray(cl.hill._costmap.compute_cost(gray), np.float32)


def superpixel_log_costs(images: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """The log of each superpixel's HILL cost: the mean log cost of its pixels.

    The geometric mean is used because HILL costs span eight orders of magnitude (flat regions
    saturate near 8e6, edges go below 0.1): an arithmetic mean would let one flat pixel decide.

    Args:
        images: (B, 3, H, W) in [0, 1]; rounded to 8 bits, as the saved images are.
        templates: (B, H, W) int64 superpixel labels.

    Returns:
        (B, K) float64 on the images' device, K the largest label + 1 of the batch; slots an
        image's template does not use hold 0.
    """
    if (
        images.ndim != 4
        or images.shape[1] != 3
        or templates.shape
        != (
            images.shape[0],
            *images.shape[-2:],
        )
    ):
        raise ValueError(
            f"images must be (B, 3, H, W) and templates (B, H, W), got {tuple(images.shape)} "
            f"and {tuple(templates.shape)}"
        )
    pixels = torch.round(images.detach().clamp(0, 1) * 255).to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    costs = np.stack([hill_cost(p) for p in pixels]).astype(np.float64)  # (B, H, W)
    logs = torch.from_numpy(np.log(np.maximum(costs, _SMALLEST_COST)))[:, None]  # (B, 1, H, W)
    labels = templates.detach().cpu()
    k = int(labels.max()) + 1
    return sp.reduce(logs, labels, k, "mean")[:, 0].to(images.device)  # (B, K)


def texture_weights(images: torch.Tensor, templates: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-superpixel weights ``(c_k / c_min)^-W`` from the HILL costs ``c_k``, in (0, 1].

    The most textured superpixel of every image (the smallest cost) keeps weight 1; smoother ones
    get less, the more so the larger ``weight``. ``weight = 0`` gives 1 everywhere.

    Args:
        images: (B, 3, H, W) in [0, 1].
        templates: (B, H, W) int64 labels.
        weight: The exponent W >= 0.

    Returns:
        (B, 1, K) in the images' dtype and device; 0 in slots an image's template does not use.
    """
    if not weight >= 0:
        raise ValueError(f"texture_weight must be >= 0, got {weight}")
    logs = superpixel_log_costs(images, templates)  # (B, K)
    counts = templates.flatten(1).amax(dim=1).to(logs.device) + 1  # (B,)
    used = torch.arange(logs.shape[1], device=logs.device)[None] < counts[:, None]  # (B, K)
    lowest = logs.masked_fill(~used, float("inf")).amin(dim=1, keepdim=True)  # (B, 1)
    weights = torch.exp(-weight * (logs - lowest)).masked_fill(~used, 0.0)
    return weights[:, None].to(images.dtype)
