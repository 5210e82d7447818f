"""Image-processing defenses: transformations applied to images before the classifier.

Every defense is a plain function on (B, 3, H, W) tensors in [0, 1] (``resize``, ``jpeg``, ...)
with a matching parameterised object (:class:`Resize`, :class:`JPEG`, ...) whose constructor checks
its parameter. The objects are what the command line builds from ``name:param`` specs through
:data:`DEFENSES` and :func:`parse_defenses`, which also expands sweeps (``resize:1.0..3.0:0.1``)
and lists (``avgpool:3,5,7``).

Defenses work in pixel space, before any model normalisation: the classifiers in
:mod:`sai_attack.models` normalise internally, so a defense only maps [0, 1] images to [0, 1]
images of the same size. Section 4.2 of Dong et al. (CVPR 2020) evaluates its attacks against
these transformations ("gray-box": the attacker does not know about the defense).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger(__name__)

MAX_SWEEP_VALUES = 1000
CPU_TVM_CHUNK = 2**18  # tensor elements per TVM solver call on the CPU


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected (B, 3, H, W) images, got shape {shape}")


def _is_int(value: float | int) -> bool:
    return isinstance(value, (int, np.integer)) or (
        isinstance(value, float) and math.isfinite(value) and value == int(value)
    )


def _check_odd_kernel(name: str, k: float | int) -> int:
    if isinstance(k, bool) or not _is_int(k) or int(k) < 1 or int(k) % 2 == 0:
        raise ValueError(f"{name} kernel size k must be an odd integer >= 1, got {k}")
    return int(k)


# --------------------------------------------------------------------------------------------
# The defenses as functions
# --------------------------------------------------------------------------------------------


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


def jpeg(images: torch.Tensor, quality: int, subsampling: int | None = None) -> torch.Tensor:
    """Real JPEG compression: encode and decode every image with Pillow (libjpeg-turbo).

    Dziugaite et al., "A study of the effect of JPG compression on adversarial images" (arXiv
    2016), the paper's reference [7] and Fig. 5(a); also Guo et al. (ICLR 2018). Images are
    rounded to 8 bits first. Not differentiable.

    Args:
        images: (B, 3, H, W) in [0, 1].
        quality: JPEG quality factor 1..100.
        subsampling: Pillow's chroma subsampling (0: 4:4:4, 1: 4:2:2, 2: 4:2:0); ``None`` is
            Pillow's default, 4:2:0.

    Returns:
        (B, 3, H, W) decoded images in [0, 1] (multiples of 1/255).
    """
    _check_images(images)
    arrays = (
        torch.round(images.detach().clamp(0, 1) * 255.0).to(torch.uint8).permute(0, 2, 3, 1)
    ).cpu()
    options: dict = {"format": "JPEG", "quality": int(quality)}
    if subsampling is not None:
        options["subsampling"] = int(subsampling)
    decoded = []
    for a in arrays.numpy():
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, **options)
        buf.seek(0)
        with Image.open(buf) as im:
            decoded.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float().div(255.0)
    return out.to(images.device, images.dtype)


# -- DNN-oriented JPEG (Feature Distillation) --------------------------------------------------

DNN_JPEG_BASE_TABLE = np.full((8, 8), 30, dtype=np.int64)
DNN_JPEG_BASE_TABLE[:4, :4] = 25
DNN_JPEG_BASE_TABLE.setflags(write=False)
"""Feature Distillation's quantisation table: step 25 for the 4x4 low frequencies, 30 elsewhere."""

# JFIF (full-range BT.601) colour conversion, as in JPEG files.
_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCBCR_TO_RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def dnn_jpeg_table(quality: int) -> np.ndarray:
    """The (8, 8) quantisation table of DNN-oriented JPEG at ``quality``.

    Feature Distillation's table (:data:`DNN_JPEG_BASE_TABLE`) is scaled exactly like the IJG
    libjpeg scales its standard tables: ``s = 5000 / q`` below 50, ``200 - 2q`` from 50 on, entries
    ``(t * s + 50) // 100`` clipped to 1..255 (integer arithmetic). Quality 50 gives the published
    table, 100 an all-ones table (almost lossless).

    Args:
        quality: 1..100.

    Returns:
        (8, 8) int64 array.
    """
    q = int(quality)
    if not 1 <= q <= 100:
        raise ValueError(f"dnn-jpeg quality q must be an integer in 1..100, got {quality}")
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((DNN_JPEG_BASE_TABLE * scale + 50) // 100, 1, 255)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    """The orthonormal DCT-II matrix C, so that coefficients = C @ block @ C.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return torch.from_numpy(c)


def dnn_jpeg(images: torch.Tensor, quality: int, colorspace: str = "ycbcr") -> torch.Tensor:
    """DNN-oriented JPEG compression (Feature Distillation).

    Liu et al., "Feature Distillation: DNN-Oriented JPEG Compression Against Adversarial
    Examples" (CVPR 2019); the paper's Fig. 5(b). Every channel is cut into 8x8 blocks (the image
    is padded to multiples of 8 by repeating its last row/column, and cropped back), each block is
    level-shifted by -128, transformed with the orthonormal 2-D DCT, quantised with
    :func:`dnn_jpeg_table` (``round(c / t) * t``), transformed back and rounded to 8 bits. There is
    no entropy coding (it is lossless) and no chroma subsampling. Every image of the batch is
    processed (skipping the first image of each batch is a known bug of the public code).

    Args:
        images: (B, 3, H, W) in [0, 1].
        quality: 1..100; 50 is the published table.
        colorspace: ``ycbcr`` (JFIF conversion in floating point, like a JPEG codec) or ``rgb``.

    Returns:
        (B, 3, H, W) in [0, 1] (multiples of 1/255).
    """
    _check_images(images)
    if colorspace not in ("ycbcr", "rgb"):
        raise ValueError(f"dnn-jpeg colorspace must be 'ycbcr' or 'rgb', got {colorspace!r}")
    table = torch.from_numpy(dnn_jpeg_table(quality).astype(np.float64)).to(images.device)
    x = torch.round(images.detach().to(torch.float64).clamp(0, 1) * 255.0)  # (B, 3, H, W)
    if colorspace == "ycbcr":
        m = torch.from_numpy(_RGB_TO_YCBCR).to(x.device)
        x = torch.einsum("ij,bjhw->bihw", m, x)
        x[:, 1:] += 128.0
    b, c, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    hh, ww = x.shape[-2:]
    blocks = (x - 128.0).reshape(b, c, hh // 8, 8, ww // 8, 8).transpose(3, 4)  # (B,3,h8,w8,8,8)
    d = _dct_matrix().to(x.device)
    coef = d @ blocks @ d.T
    coef = torch.round(coef / table) * table
    blocks = d.T @ coef @ d + 128.0
    x = blocks.transpose(3, 4).reshape(b, c, hh, ww)[..., :h, :w]
    if colorspace == "ycbcr":
        x = x.clone()
        x[:, 1:] -= 128.0
        x = torch.einsum("ij,bjhw->bihw", torch.from_numpy(_YCBCR_TO_RGB).to(x.device), x)
    out = torch.round(x.clamp(0.0, 255.0)) / 255.0
    return out.to(images.dtype)


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


def bitdepth(images: torch.Tensor, d: int) -> torch.Tensor:
    """Reduce every channel to ``d`` bits: ``round(x * (2^d - 1)) / (2^d - 1)``.

    Bit-depth reduction from feature squeezing (Xu et al., NDSS 2018); the paper's Fig. 6(b)
    uses d = 2..4. Not differentiable (a staircase).
    """
    _check_images(images)
    if isinstance(d, bool) or not _is_int(d) or not 1 <= int(d) <= 8:
        raise ValueError(f"bitdepth d must be an integer in 1..8, got {d}")
    levels = float(2 ** int(d) - 1)
    return torch.round(images.clamp(0, 1) * levels) / levels


# -- Total variation minimisation --------------------------------------------------------------


def _forward_differences(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences with zero at the last column/row (Neumann boundary)."""
    dx = torch.zeros_like(u)
    dy = torch.zeros_like(u)
    dx[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    dy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    return dx, dy


def tv_energy(
    u: torch.Tensor, images: torch.Tensor, keep: torch.Tensor, weight: float
) -> torch.Tensor:
    """The TVM objective per image: ``0.5 * sum(keep * (u - x)^2) + weight * TV(u)``.

    TV is the isotropic total variation of every channel, ``sum sqrt(dx^2 + dy^2)`` with forward
    differences (zero across the last row and column).

    Args:
        u: (B, 3, H, W) candidate reconstruction.
        images: (B, 3, H, W) the observed images.
        keep: (B, 3, H, W) 1 where the pixel was kept, 0 where dropped.
        weight: The TV weight lambda.

    Returns:
        (B,) objective values.
    """
    dx, dy = _forward_differences(u)
    data_term = 0.5 * (keep * (u - images) ** 2).flatten(1).sum(1)
    return data_term + weight * torch.sqrt(dx * dx + dy * dy).flatten(1).sum(1)


def _tvm_initial(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The solver's start: kept pixels as they are, dropped ones filled from their neighbours.

    A dropped value becomes the mean of the kept values in its 3x3 neighbourhood, or of the
    channel's kept values when there are none (0.5 when nothing is kept).
    """
    b, c, h, w = images.shape
    kernel = torch.ones(1, 1, 3, 3, dtype=images.dtype, device=images.device)
    num = F.conv2d((keep * images).reshape(b * c, 1, h, w), kernel, padding=1).view(b, c, h, w)
    den = F.conv2d(keep.reshape(b * c, 1, h, w), kernel, padding=1).view(b, c, h, w)
    kept = keep.sum(dim=(2, 3), keepdim=True)
    channel_mean = torch.where(
        kept > 0, (keep * images).sum(dim=(2, 3), keepdim=True) / kept.clamp(min=1.0), 0.5
    )
    fill = torch.where(den > 0, num / den.clamp(min=1.0), channel_mean.expand_as(num))
    return torch.where(keep > 0, images, fill)


def tv_reconstruct(
    images: torch.Tensor, keep: torch.Tensor, weight: float, iterations: int = 200
) -> torch.Tensor:
    """Minimise :func:`tv_energy` over u with a batched primal-dual (Chambolle-Pock) solver.

    The first-order primal-dual algorithm of Chambolle and Pock (J. Math. Imaging Vis. 2011,
    Alg. 1, theta = 1, tau = sigma = 1/sqrt(8)) with the dual variable projected onto the
    ``weight``-ball of every pixel's gradient: only element-wise tensor operations, so whole
    batches run at once on the CPU or GPU. Every image and channel is an independent problem and
    the iteration count is fixed, so the result does not depend on the batch.

    Args:
        images: (B, 3, H, W) observed images.
        keep: (B, 3, H, W) mask, 1 where the pixel was kept.
        weight: TV weight lambda > 0.
        iterations: Primal-dual iterations.

    Returns:
        (B, 3, H, W) the reconstruction, clipped to [0, 1].
    """
    f = images.detach().float()
    m = keep.detach().float()
    tau = sigma = 1.0 / math.sqrt(8.0)
    u = _tvm_initial(f, m)
    ubar = u.clone()
    px = torch.zeros_like(f)
    py = torch.zeros_like(f)
    scaled_data = tau * m * f
    inverse = 1.0 / (1.0 + tau * m)
    div = torch.empty_like(f)
    norm = torch.empty_like(f)
    for _ in range(iterations):
        # Dual ascent on p, then projection onto {|p| <= weight} pixel by pixel.
        px[..., :, :-1].add_(ubar[..., :, 1:] - ubar[..., :, :-1], alpha=sigma)
        py[..., :-1, :].add_(ubar[..., 1:, :] - ubar[..., :-1, :], alpha=sigma)
        torch.hypot(px, py, out=norm)
        norm.mul_(1.0 / weight).clamp_(min=1.0)
        px.div_(norm)
        py.div_(norm)
        # div p, the negative adjoint of the forward differences.
        div.copy_(px)
        div[..., :, 1:].sub_(px[..., :, :-1])
        div.add_(py)
        div[..., 1:, :].sub_(py[..., :-1, :])
        # Proximal step of the masked quadratic data term, then extrapolation.
        u_new = div.mul_(tau).add_(u).add_(scaled_data).mul_(inverse)
        torch.mul(u_new, 2.0, out=ubar).sub_(u)
        u, div = u_new, u
    return u.clamp_(0.0, 1.0).to(images.dtype)


@contextlib.contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """Temporarily limit PyTorch's intra-op CPU threads (``None``: leave them).

    The TVM solver runs thousands of element-wise operations on tensors of one image: splitting
    each across threads gains little, and when the other cores are busy every operation waits for
    a descheduled thread (measured 50x slower with 2 threads on a loaded 2-core machine).
    """
    previous = torch.get_num_threads()
    if n is None or n >= previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _seed_from(value: int | str) -> int:
    digest = hashlib.sha256(str(value).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def dropout_mask(shape: Sequence[int], seed: int, drop_rate: float = 0.5) -> torch.Tensor:
    """TVM's random pixel dropout: True where a value is kept, independently per pixel and channel.

    Drawn on the CPU from a generator seeded with ``seed``, so it does not depend on the device.

    Args:
        shape: (3, H, W).
        seed: The seed.
        drop_rate: Probability that a value is dropped.

    Returns:
        A bool tensor of ``shape``.
    """
    g = torch.Generator().manual_seed(int(seed) & (2**63 - 1))
    return torch.rand(tuple(shape), generator=g) >= drop_rate


def tvm(
    images: torch.Tensor,
    weight: float = 0.03,
    drop_rate: float = 0.5,
    seeds: Sequence[int] | None = None,
    iterations: int = 200,
) -> torch.Tensor:
    """Total variation minimisation: drop random pixels and reconstruct the simplest image.

    Guo et al., "Countering Adversarial Images using Input Transformations" (ICLR 2018): every
    pixel of every channel is kept with probability ``1 - drop_rate``, and the image ``u`` that
    minimises ``0.5 * sum_kept (u - x)^2 + weight * TV(u)`` (isotropic TV per channel, images in
    [0, 1]) is returned; see :func:`tv_reconstruct`. This is the objective of their split-Bregman
    code (``reconstruct(..., 'bregman', weight=0.03)``, fidelity ``1 / weight``), which the paper
    follows with drop rate 0.5 and TV weight 0.03. Not differentiable.

    Args:
        images: (B, 3, H, W) in [0, 1].
        weight: TV weight lambda.
        drop_rate: Probability that a pixel value is dropped, in [0, 1).
        seeds: One seed per image for its dropout mask (default 0, 1, 2, ... by position).
        iterations: Solver iterations.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    _check_images(images)
    b = images.shape[0]
    seeds = list(range(b)) if seeds is None else list(seeds)
    if len(seeds) != b:
        raise ValueError(f"tvm needs one seed per image, got {len(seeds)} seeds for {b} images")
    keep = torch.stack([dropout_mask(images.shape[1:], s, drop_rate) for s in seeds])
    keep = keep.to(images.device)
    # On the CPU, small chunks stay in cache and run faster than one big batch.
    h, w = images.shape[-2:]
    chunk = b if images.device.type != "cpu" else max(1, CPU_TVM_CHUNK // (3 * h * w))
    with torch.no_grad(), _cpu_threads(1 if images.device.type == "cpu" else None):
        return torch.cat(
            [
                tv_reconstruct(images[i : i + chunk], keep[i : i + chunk], weight, iterations)
                for i in range(0, b, chunk)
            ]
        )


# --------------------------------------------------------------------------------------------
# The defenses as parameterised objects
# --------------------------------------------------------------------------------------------


def _format_param(value: float | int) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:g}"


class Defense:
    """A parameterised image transformation on (B, 3, H, W) tensors in [0, 1].

    Subclasses set the class attributes and implement :meth:`apply`. Calling the object checks the
    shape and applies it; ``seeds`` matter only to randomised defenses.

    Attributes:
        name: Registry name, used in specs (``name:param``).
        param_name: Name of the single swept parameter, or ``None``.
        param_type: ``int`` or ``float``.
        differentiable: Whether gradients through the defense are meaningful.
        randomized: Whether the output depends on ``seeds``.
    """

    name: ClassVar[str] = ""
    param_name: ClassVar[str | None] = None
    param_type: ClassVar[type] = float
    differentiable: ClassVar[bool] = False
    randomized: ClassVar[bool] = False
    description: ClassVar[str] = ""

    @property
    def param(self) -> float | int | None:
        """The value of the swept parameter."""
        return getattr(self, self.param_name) if self.param_name else None

    @property
    def spec(self) -> str:
        """The canonical ``name:param`` string."""
        p = self.param
        return self.name if p is None else f"{self.name}:{_format_param(p)}"

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Transform checked images (subclasses implement this)."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Apply the defense to (B, 3, H, W) images in [0, 1]."""
        _check_images(images)
        if self.differentiable:
            return self.apply(images, seeds)
        with torch.no_grad():
            return self.apply(images, seeds)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self.__dict__) == repr(other.__dict__)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self.__dict__)))


class NoDefense(Defense):
    """The identity: no defense (white-box and black-box settings)."""

    name = "none"
    differentiable = True
    description = "no defense"

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Return the images unchanged."""
        return images


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
    description = "downscale by gamma and upscale back (bilinear)"

    def __init__(self, gamma: float, antialias: bool = False) -> None:
        if isinstance(gamma, bool) or not (
            isinstance(gamma, (int, float)) and math.isfinite(gamma) and 1 <= gamma <= 100
        ):
            raise ValueError(f"resize factor gamma must be a number in [1, 100], got {gamma}")
        self.gamma = float(gamma)
        self.antialias = bool(antialias)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Resize down and up."""
        return resize(images, self.gamma, self.antialias)


class JPEG(Defense):
    """Real JPEG compression with Pillow at quality ``q`` (see :func:`jpeg`).

    Paper: Dziugaite et al., "A study of the effect of JPG compression on adversarial images"
    (arXiv 2016); Guo et al. (ICLR 2018); Dong et al., Fig. 5(a) (q 5-95). Limitations: results
    depend on the libjpeg build bundled with Pillow (libjpeg-turbo) and on chroma subsampling
    (4:2:0 by default, so even q = 100 is not lossless); runs on the CPU, one image at a time; no
    gradient.

    Args:
        q: Quality factor, an integer in 1..100.
        subsampling: Pillow's chroma subsampling (0, 1, 2) or ``None`` for Pillow's default.
    """

    name = "jpeg"
    param_name = "q"
    param_type = int
    description = "JPEG compression with Pillow at quality q"

    def __init__(self, q: int, subsampling: int | None = None) -> None:
        if isinstance(q, bool) or not _is_int(q) or not 1 <= int(q) <= 100:
            raise ValueError(f"jpeg quality q must be an integer in 1..100, got {q}")
        if subsampling not in (None, 0, 1, 2):
            raise ValueError(f"jpeg subsampling must be 0, 1, 2 or None, got {subsampling}")
        self.q = int(q)
        self.subsampling = subsampling

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Encode and decode."""
        return jpeg(images, self.q, self.subsampling)


class DnnJPEG(Defense):
    """DNN-oriented JPEG (Feature Distillation) at quality ``q`` (see :func:`dnn_jpeg`).

    Paper: Liu et al., "Feature Distillation: DNN-Oriented JPEG Compression Against Adversarial
    Examples", CVPR 2019; Dong et al., Fig. 5(b). Limitations: the published table is fixed (25
    for the 4x4 low frequencies, 30 elsewhere; here ``q = 50``); other qualities scale it like
    libjpeg scales its standard tables, which is this project's choice so that it can be swept
    like Fig. 5(b), not something Liu et al. define. Only this fixed table is implemented, not a
    table fitted to a particular model. The colour conversion is done in floating point, without
    the 8-bit rounding of a Pillow YCbCr round trip; there is no chroma subsampling. No
    gradient.

    Args:
        q: Quality factor, an integer in 1..100 (50: the published table).
        colorspace: ``ycbcr`` (default, like the reference code) or ``rgb``.
    """

    name = "dnn-jpeg"
    param_name = "q"
    param_type = int
    description = "DNN-oriented JPEG (Feature Distillation), table 25/30 scaled by quality q"

    def __init__(self, q: int, colorspace: str = "ycbcr") -> None:
        if isinstance(q, bool) or not _is_int(q) or not 1 <= int(q) <= 100:
            raise ValueError(f"dnn-jpeg quality q must be an integer in 1..100, got {q}")
        if colorspace not in ("ycbcr", "rgb"):
            raise ValueError(f"dnn-jpeg colorspace must be 'ycbcr' or 'rgb', got {colorspace!r}")
        self.q = int(q)
        self.colorspace = colorspace

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Block DCT, quantise, inverse DCT."""
        return dnn_jpeg(images, self.q, self.colorspace)


class AvgPool(Defense):
    """Stride-1 k x k average pooling, same size (see :func:`avgpool`).

    Paper: Dong et al., CVPR 2020, Table 3 (k = 3, 5, 7). Limitations: odd k only (even kernels
    have no centred same-size window); borders average the pixels inside the image only.

    Args:
        k: Kernel size, an odd integer >= 1.
    """

    name = "avgpool"
    param_name = "k"
    param_type = int
    differentiable = True
    description = "k x k average pooling, stride 1"

    def __init__(self, k: int) -> None:
        self.k = _check_odd_kernel("avgpool", k)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Pool."""
        return avgpool(images, self.k)


class MaxPool(Defense):
    """Stride-1 k x k max pooling, same size (see :func:`maxpool`).

    Paper: Dong et al., CVPR 2020, Table 3 (k = 3, 5, 7). Limitations: odd k only; it brightens
    every image (a dilation), so clean accuracy drops quickly with k.

    Args:
        k: Kernel size, an odd integer >= 1.
    """

    name = "maxpool"
    param_name = "k"
    param_type = int
    differentiable = True
    description = "k x k max pooling, stride 1"

    def __init__(self, k: int) -> None:
        self.k = _check_odd_kernel("maxpool", k)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Pool."""
        return maxpool(images, self.k)


class TVM(Defense):
    """Total variation minimisation after random pixel dropout (see :func:`tvm`).

    Paper: Guo et al., "Countering Adversarial Images using Input Transformations", ICLR 2018;
    Dong et al., Fig. 6(a) and Table 4 (drop rate 0.5, TV weight 0.03). Limitations: randomised
    (deterministic given the seeds; the evaluation seeds every image from its name, so a clean
    image and its adversarial version get the same mask); the solver runs a fixed number of
    iterations of a convergent algorithm, while Guo et al.'s Gauss-Seidel split-Bregman code
    stops early (10 inner sweeps, tolerance 0.01), so outputs agree with theirs only up to that
    tolerance; the minimiser is not unique where a dropped pixel sits between neighbours that leave
    its value free, so such pixels may differ between solvers; no gradient.

    Args:
        weight: TV weight lambda > 0 on images in [0, 1] (the swept parameter).
        drop_rate: Probability of dropping a pixel value, in [0, 1).
        iterations: Solver iterations, >= 1.
        seed: Default seed of image i of a batch is ``hash(seed, i)`` when no seeds are given.
    """

    name = "tvm"
    param_name = "weight"
    randomized = True
    description = "total variation minimisation, drop rate 0.5"

    def __init__(
        self,
        weight: float = 0.03,
        drop_rate: float = 0.5,
        iterations: int = 200,
        seed: int = 0,
    ) -> None:
        if isinstance(weight, bool) or not (
            isinstance(weight, (int, float)) and math.isfinite(weight) and 0 < weight <= 10
        ):
            raise ValueError(f"tvm weight must be a number in (0, 10], got {weight}")
        if not (isinstance(drop_rate, (int, float)) and 0 <= drop_rate < 1):
            raise ValueError(f"tvm drop_rate must lie in [0, 1), got {drop_rate}")
        if isinstance(iterations, bool) or not _is_int(iterations) or int(iterations) < 1:
            raise ValueError(f"tvm iterations must be an integer >= 1, got {iterations}")
        self.weight = float(weight)
        self.drop_rate = float(drop_rate)
        self.iterations = int(iterations)
        self.seed = int(seed)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Drop pixels and reconstruct."""
        if seeds is None:
            seeds = [_seed_from(f"{self.seed}:{i}") for i in range(images.shape[0])]
        return tvm(images, self.weight, self.drop_rate, seeds, self.iterations)


class BitDepth(Defense):
    """Bit-depth reduction to ``d`` bits per channel (see :func:`bitdepth`).

    Paper: Xu et al., "Feature Squeezing", NDSS 2018; Dong et al., Fig. 6(b) (d = 2-4).
    Limitations: no gradient; d = 8 leaves 8-bit images unchanged.

    Args:
        d: Bits per channel, an integer in 1..8.
    """

    name = "bitdepth"
    param_name = "d"
    param_type = int
    description = "bit-depth reduction to d bits per channel"

    def __init__(self, d: int) -> None:
        if isinstance(d, bool) or not _is_int(d) or not 1 <= int(d) <= 8:
            raise ValueError(f"bitdepth d must be an integer in 1..8, got {d}")
        self.d = int(d)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Quantise."""
        return bitdepth(images, self.d)


class Median(Defense):
    """k x k median smoothing per channel (see :func:`median`).

    Paper: Xu et al., "Feature Squeezing", NDSS 2018. Limitations: odd k only (feature
    squeezing's 2x2 window is not available); borders repeat the edge pixels.

    Args:
        k: Kernel size, an odd integer >= 1.
    """

    name = "median"
    param_name = "k"
    param_type = int
    differentiable = True
    description = "k x k median smoothing"

    def __init__(self, k: int) -> None:
        self.k = _check_odd_kernel("median", k)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Filter."""
        return median(images, self.k)


DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls
    for cls in (NoDefense, Resize, JPEG, DnnJPEG, AvgPool, MaxPool, TVM, BitDepth, Median)
}
"""Defense classes by spec name."""

_PARAM_REQUIRED = {"resize", "jpeg", "dnn-jpeg", "avgpool", "maxpool", "bitdepth", "median"}
_EXAMPLES = {
    "resize": "resize:2",
    "jpeg": "jpeg:55",
    "dnn-jpeg": "dnn-jpeg:50",
    "avgpool": "avgpool:3",
    "maxpool": "maxpool:3",
    "bitdepth": "bitdepth:3",
    "median": "median:3",
    "tvm": "tvm or tvm:0.03",
}


# --------------------------------------------------------------------------------------------
# Specs and sweeps
# --------------------------------------------------------------------------------------------


def _number(text: str, spec: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"defense {spec!r}: {text.strip()!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"defense {spec!r}: {text.strip()!r} is not a finite number")
    return value


def _make(cls: type[Defense], value: Decimal) -> Defense:
    number: float | int = float(value)
    if cls.param_type is int and value == value.to_integral_value():
        number = int(value)
    return cls(number)


def expand_defense_spec(spec: str) -> list[Defense]:
    """Turn one spec into defenses.

    Accepted forms: ``name`` (``none``, ``tvm``), ``name:value`` (``resize:2``), a list
    ``name:v1,v2,...`` (``avgpool:3,5,7``), and a sweep ``name:start..stop:step`` with both ends
    included (``resize:1.0..3.0:0.1``, ``jpeg:5..95:10``; the step defaults to 1). Sweep values
    are computed in decimal arithmetic, so ``1.0..3.0:0.1`` gives exactly 21 values.

    Args:
        spec: The spec.

    Returns:
        The defenses, in order.

    Raises:
        ValueError: Unknown name, missing or malformed parameter, or a parameter out of range
            (the defense's own message).
    """
    text = spec.strip()
    name, sep, arg = text.partition(":")
    name = name.strip().lower()
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose one of {', '.join(DEFENSES)}")
    cls = DEFENSES[name]
    if not sep or not arg.strip():
        if sep:
            raise ValueError(f"defense {spec!r} has an empty parameter after ':'")
        if name in _PARAM_REQUIRED:
            raise ValueError(
                f"defense {name!r} needs its parameter {cls.param_name}: "
                f"{name}:{cls.param_name.upper()} (e.g. {_EXAMPLES[name]})"
            )
        return [cls()]
    if cls.param_name is None:
        raise ValueError(f"defense {name!r} takes no parameter, got {spec!r}")
    arg = arg.strip()
    if ".." in arg:
        start_text, _, rest = arg.partition("..")
        stop_text, has_step, step_text = rest.partition(":")
        start = _number(start_text, spec)
        stop = _number(stop_text, spec)
        step = _number(step_text, spec) if has_step else Decimal(1)
        if step <= 0:
            raise ValueError(f"sweep {spec!r}: the step must be > 0, got {step}")
        if stop < start:
            raise ValueError(f"sweep {spec!r}: the end {stop} is below the start {start}")
        count = int((stop - start) / step) + 1
        if count > MAX_SWEEP_VALUES:
            raise ValueError(
                f"sweep {spec!r} has {count} values; at most {MAX_SWEEP_VALUES} are allowed"
            )
        values = [start + i * step for i in range(count)]
    else:
        values = [_number(v, spec) for v in arg.split(",")]
    return [_make(cls, v) for v in values]


def parse_defense(spec: str) -> Defense:
    """Parse a single ``name[:param]`` spec (no sweeps or lists)."""
    defenses = expand_defense_spec(spec)
    if len(defenses) != 1:
        raise ValueError(f"defense {spec!r} names {len(defenses)} defenses; expected one")
    return defenses[0]


def parse_defenses(specs: Iterable[str | Defense]) -> list[Defense]:
    """Expand specs (and pass through ready objects), dropping duplicates, keeping order."""
    result: list[Defense] = []
    seen: set[str] = set()
    for spec in specs:
        for defense in [spec] if isinstance(spec, Defense) else expand_defense_spec(spec):
            key = repr((type(defense).__name__, defense.__dict__))
            if key not in seen:
                seen.add(key)
                result.append(defense)
    return result
