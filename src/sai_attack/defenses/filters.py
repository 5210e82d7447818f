"""Resampling, pooling and median filtering: the defenses that keep gradients.

Resizing and pooling are the paper's own defenses (Dong et al., CVPR 2020, Sec. 4.2, Fig. 4 and
Table 3); median smoothing comes from feature squeezing (Xu et al., NDSS 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from sai_attack.defenses.base import Defense, _check_images, _check_odd_kernel, _is_real


def resize(images: torch.Tensor, gamma: float, antialias: bool = False) -> torch.Tensor:
    """Downscale to (H/gamma, W/gamma) and upscale back to (H, W), bilinear both ways.

    The paper's resizing defense (Dong et al., CVPR 2020, Sec. 4.2, Fig. 4). Sizes are rounded to
    the nearest pixel (at least 1). Without ``antialias`` the downscaling samples the image like
    ``cv2.resize(INTER_LINEAR)`` or ``tf.image.resize``; differentiable.

    Args:
        images: (B, 3, H, W) in [0, 1].
        gamma: Resize factor >= 1; 1 leaves the image unchanged.
        antialias: Low-pass filter before downscaling (like Pillow's bilinear resize).

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    _check_images(images)
    h, w = images.shape[-2:]
    small = (max(1, math.floor(h / gamma + 0.5)), max(1, math.floor(w / gamma + 0.5)))
    if small == (h, w):
        return images.clone()
    down = F.interpolate(
        images, size=small, mode="bilinear", align_corners=False, antialias=antialias
    )
    up = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)
    return up.clamp(0.0, 1.0)


def avgpool(images: torch.Tensor, k: int) -> torch.Tensor:
    """Average over the k x k neighbourhood of every pixel (stride 1, same size).

    The paper's pooling defense (Dong et al., CVPR 2020, Table 3). Windows that reach over the
    border average only the pixels inside the image (TensorFlow's ``SAME`` padding), so a constant
    image stays constant. Differentiable.
    """
    _check_images(images)
    k = _check_odd_kernel("avgpool", k)
    if k == 1:
        return images.clone()
    return F.avg_pool2d(images, k, stride=1, padding=k // 2, count_include_pad=False)


def maxpool(images: torch.Tensor, k: int) -> torch.Tensor:
    """Maximum over the k x k neighbourhood of every pixel (stride 1, same size).

    The paper's pooling defense (Dong et al., CVPR 2020, Table 3); the border is ignored (padding
    with -inf). A grey-level dilation: it brightens the image. Differentiable almost everywhere.
    """
    _check_images(images)
    k = _check_odd_kernel("maxpool", k)
    if k == 1:
        return images.clone()
    return F.max_pool2d(images, k, stride=1, padding=k // 2)


def median(images: torch.Tensor, k: int) -> torch.Tensor:
    """Median over the k x k neighbourhood of every pixel, per channel (stride 1, same size).

    Median smoothing from feature squeezing (Xu et al., "Feature Squeezing: Detecting Adversarial
    Examples in Deep Neural Networks", NDSS 2018). The border is extended by repeating the edge
    pixels (scipy's default ``reflect`` mirrors instead, so border pixels may differ).
    """
    _check_images(images)
    k = _check_odd_kernel("median", k)
    if k == 1:
        return images.clone()
    r = k // 2
    b, c, h, w = images.shape
    padded = F.pad(images, (r, r, r, r), mode="replicate")
    out = torch.empty_like(images)
    # One image at a time: the unfolded tensor is k*k times the image.
    for i in range(b):
        patches = F.unfold(padded[i : i + 1], kernel_size=k)  # (1, 3*k*k, H*W)
        patches = patches.view(c, k * k, h * w)
        out[i] = patches.median(dim=1).values.view(c, h, w)
    return out


class Resize(Defense):
    """Downscale by ``gamma`` and upscale back, bilinear (see :func:`resize`).

    Paper: Dong et al., CVPR 2020, Sec. 4.2 and Fig. 4 (gamma 1.0-3.0 in steps of 0.1).
    Limitations: the paper does not say which library or interpolation details it used; this is
    PyTorch's bilinear interpolation without antialiasing, sizes rounded to the nearest pixel.

    Args:
        gamma: Resize factor, a number in [1, 100].
        antialias: Low-pass filter before downscaling.
    """

    name = "resize"
    param_name = "gamma"
    differentiable = True
    gradient = "true"
    description = "downscale by gamma and upscale back (bilinear)"
    example = "resize:2"

    def __init__(self, gamma: float, antialias: bool = False) -> None:
        if not (_is_real(gamma) and 1 <= gamma <= 100):
            raise ValueError(f"resize factor gamma must be a number in [1, 100], got {gamma}")
        self.gamma = float(gamma)
        self.antialias = bool(antialias)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Resize down and up."""
        return resize(images, self.gamma, self.antialias)


class _WindowDefense(Defense):
    """A filter over the k x k window of every pixel: the odd size ``k`` and the function.

    Subclasses set :attr:`window_filter`, the module function they wrap (``avgpool``, ...).
    """

    param_name = "k"
    param_type = int
    differentiable = True
    gradient = "true"
    window_filter: ClassVar[Callable[[torch.Tensor, int], torch.Tensor]]

    def __init__(self, k: int) -> None:
        self.k = _check_odd_kernel(self.name, k)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Filter every k x k window."""
        return self.window_filter(images, self.k)


class AvgPool(_WindowDefense):
    """Stride-1 k x k average pooling, same size (see :func:`avgpool`).

    Paper: Dong et al., CVPR 2020, Table 3 (k = 3, 5, 7). Limitations: odd k only (even kernels
    have no centred same-size window); borders average the pixels inside the image only.

    Args:
        k: Kernel size, an odd integer >= 1 (1 leaves the image unchanged).
    """

    name = "avgpool"
    description = "k x k average pooling, stride 1"
    example = "avgpool:3"
    window_filter = staticmethod(avgpool)


class MaxPool(_WindowDefense):
    """Stride-1 k x k max pooling, same size (see :func:`maxpool`).

    Paper: Dong et al., CVPR 2020, Table 3 (k = 3, 5, 7). Limitations: odd k only; it brightens
    every image (a dilation), so clean accuracy drops quickly with k.

    Args:
        k: Kernel size, an odd integer >= 1; bright details grow by k // 2 pixels.
    """

    name = "maxpool"
    description = "k x k max pooling, stride 1"
    example = "maxpool:3"
    window_filter = staticmethod(maxpool)


class Median(_WindowDefense):
    """k x k median smoothing per channel (see :func:`median`).

    Paper: Xu et al., "Feature Squeezing", NDSS 2018. Limitations: odd k only (feature
    squeezing's 2x2 window is not available); borders repeat the edge pixels.

    Args:
        k: Kernel size, an odd integer >= 1; lines at most k // 2 pixels wide are removed.
    """

    name = "median"
    description = "k x k median smoothing"
    example = "median:3"
    window_filter = staticmethod(median)
