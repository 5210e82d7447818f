"""Lossy compression and quantisation: JPEG, DNN-oriented JPEG and bit-depth reduction.

None of these has a useful gradient (they round to a grid), so the objects run without autograd.
Attacks that see the defense (EoT, :meth:`~sai_attack.defenses.base.Defense.with_gradient`) get
JPEG's gradient from a differentiable approximation (:func:`jpeg_surrogate`) and the others'
through BPDA's straight-through estimator.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sai_attack.defenses.base import Defense, _check_images, _check_int_range

DNN_JPEG_BASE_TABLE = np.full((8, 8), 30, dtype=np.int64)
DNN_JPEG_BASE_TABLE[:4, :4] = 25
DNN_JPEG_BASE_TABLE.setflags(write=False)
"""Feature Distillation's quantisation table: step 25 for the 4x4 low frequencies, 30 elsewhere."""

# JFIF (full-range BT.601) colour conversion, as in JPEG files.
_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCBCR_TO_RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])

# The IJG standard tables (ITU-T T.81 Annex K), which libjpeg (and so Pillow) scales by quality.
JPEG_LUMA_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
], dtype=np.int64)  # fmt: skip
JPEG_CHROMA_TABLE = np.full((8, 8), 99, dtype=np.int64)
JPEG_CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
for _table in (JPEG_LUMA_TABLE, JPEG_CHROMA_TABLE):
    _table.setflags(write=False)

_SUBSAMPLING = {0: (1, 1), 1: (1, 2), 2: (2, 2)}
"""Pillow's ``subsampling`` (4:4:4, 4:2:2, 4:2:0) as chroma (vertical, horizontal) factors."""


def _check_colorspace(colorspace: str) -> None:
    """Raise unless ``colorspace`` is one that :func:`dnn_jpeg` implements."""
    if colorspace not in ("ycbcr", "rgb"):
        raise ValueError(f"dnn-jpeg colorspace must be 'ycbcr' or 'rgb', got {colorspace!r}")


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
    # Truncates non-integers (unlike DnnJPEG, which refuses them): kept as it always was.
    q = int(quality)
    if not 1 <= q <= 100:
        raise ValueError(f"dnn-jpeg quality q must be an integer in 1..100, got {quality}")
    return _ijg_scaled(DNN_JPEG_BASE_TABLE, q)


def _ijg_scaled(table: np.ndarray, q: int) -> np.ndarray:
    """``table`` scaled to quality ``q`` (1..100) as libjpeg's ``jpeg_set_quality`` does."""
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((table * scale + 50) // 100, 1, 255)


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
    _check_colorspace(colorspace)
    x = torch.round(images.detach().to(torch.float64).clamp(0, 1) * 255.0)  # (B, 3, H, W)
    if colorspace == "ycbcr":
        x = _rgb_to_ycbcr(x)
    x = quantize_blocks(x, dnn_jpeg_table(quality), torch.round)
    if colorspace == "ycbcr":
        x = _ycbcr_to_rgb(x)
    out = torch.round(x.clamp(0.0, 255.0)) / 255.0
    return out.to(images.dtype)


def _rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """JFIF RGB -> YCbCr of (B, 3, H, W) values in 0..255 (differentiable)."""
    x = torch.einsum("ij,bjhw->bihw", torch.from_numpy(_RGB_TO_YCBCR).to(x.device), x)
    x[:, 1:] += 128.0
    return x


def _ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """JFIF YCbCr -> RGB of (B, 3, H, W) values in 0..255 (differentiable)."""
    x = x.clone()
    x[:, 1:] -= 128.0
    return torch.einsum("ij,bjhw->bihw", torch.from_numpy(_YCBCR_TO_RGB).to(x.device), x)


def quantize_blocks(
    x: torch.Tensor, table: np.ndarray, rounding: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """JPEG's lossy core on (B, C, H, W) float64 planes in 0..255.

    Every 8x8 block (the planes padded to multiples of 8 by repeating the last row and column,
    cropped back) is level-shifted by -128, transformed with the orthonormal 2-D DCT, quantised
    as ``rounding(c / t) * t`` with the (8, 8) ``table`` and transformed back.
    """
    b, c, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    hh, ww = x.shape[-2:]
    blocks = (x - 128.0).reshape(b, c, hh // 8, 8, ww // 8, 8).transpose(3, 4)  # (B,C,h8,w8,8,8)
    d = _dct_matrix().to(x.device)
    step = torch.from_numpy(table.astype(np.float64)).to(x.device)
    coef = d @ blocks @ d.T
    coef = rounding(coef / step) * step
    blocks = d.T @ coef @ d + 128.0
    return blocks.transpose(3, 4).reshape(b, c, hh, ww)[..., :h, :w]


def _soft_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x) + (x - round(x))^3``: rounding with a gradient (Shin and Song, 2017)."""
    r = torch.round(x)
    return r + (x - r) ** 3


def _straight_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` with the identity as its gradient."""
    return x + (torch.round(x) - x).detach()


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """8-bit values 0..255, the rounding's gradient passed straight through."""
    return _straight_round(x.clamp(0.0, 255.0))


def jpeg_surrogate(
    images: torch.Tensor, quality: int, subsampling: int | None = None
) -> torch.Tensor:
    """A differentiable approximation of :func:`jpeg`: libjpeg's pipeline in floating point.

    The codec's steps as libjpeg (and so Pillow) runs them: 8-bit rounding, JFIF RGB -> YCbCr,
    chroma subsampling by averaging (4:2:0 unless ``subsampling`` says otherwise), 8x8 DCT,
    quantisation with the IJG tables scaled to ``quality``, inverse DCT, chroma upsampling by
    bilinear interpolation (libjpeg's "fancy" triangle filter) and YCbCr -> RGB. The coefficient
    rounding is replaced by :func:`_soft_round` (Shin and Song, "JPEG-resistant adversarial
    images", NIPS 2017 workshop), the pixel roundings pass their gradient straight through.
    The planes are rounded to 8 bits between the steps as in libjpeg, but its integer DCTs and
    exact filters are not reproduced: on natural images the output is within about 1/255 of
    Pillow's on average (``tests/test_eot.py``); only its gradient is used
    (:meth:`JPEG.with_gradient`).

    Args:
        images: (B, 3, H, W) in [0, 1].
        quality: JPEG quality factor 1..100.
        subsampling: Pillow's chroma subsampling (0, 1, 2) or ``None`` (4:2:0).

    Returns:
        (B, 3, H, W) in [0, 1], differentiable w.r.t. ``images``.
    """
    _check_images(images)
    q = _check_int_range("jpeg quality q", quality, 1, 100)
    fv, fh = _SUBSAMPLING[2 if subsampling is None else subsampling]
    h, w = images.shape[-2:]
    x = _straight_round(images.to(torch.float64).clamp(0, 1) * 255.0)
    ycc = _pixels(_rgb_to_ycbcr(x))  # libjpeg keeps 8-bit planes between its steps
    luma = _pixels(quantize_blocks(ycc[:, :1], _ijg_scaled(JPEG_LUMA_TABLE, q), _soft_round))
    chroma = ycc[:, 1:]
    if (fv, fh) != (1, 1):
        chroma = F.avg_pool2d(F.pad(chroma, (0, (-w) % fh, 0, (-h) % fv), mode="replicate"),
                              (fv, fh))  # fmt: skip
    chroma = quantize_blocks(_pixels(chroma), _ijg_scaled(JPEG_CHROMA_TABLE, q), _soft_round)
    chroma = _pixels(chroma)
    if (fv, fh) != (1, 1):
        chroma = F.interpolate(chroma, scale_factor=(fv, fh), mode="bilinear",
                               align_corners=False)[..., :h, :w]  # fmt: skip
    rgb = _ycbcr_to_rgb(torch.cat([luma, chroma], dim=1))
    return (_pixels(rgb) / 255.0).to(images.dtype)


def bitdepth(images: torch.Tensor, d: int) -> torch.Tensor:
    """Reduce every channel to ``d`` bits: ``round(x * (2^d - 1)) / (2^d - 1)``.

    Bit-depth reduction from feature squeezing (Xu et al., NDSS 2018); the paper's Fig. 6(b)
    uses d = 2..4. Not differentiable (a staircase).
    """
    _check_images(images)
    levels = float(2 ** _check_int_range("bitdepth d", d, 1, 8) - 1)
    return torch.round(images.clamp(0, 1) * levels) / levels


class JPEG(Defense):
    """Real JPEG compression with Pillow at quality ``q`` (see :func:`jpeg`).

    Paper: Dziugaite et al., "A study of the effect of JPG compression on adversarial images"
    (arXiv 2016); Guo et al. (ICLR 2018); Dong et al., Fig. 5(a) (q 5-95). Limitations: results
    depend on the libjpeg build bundled with Pillow (libjpeg-turbo) and on chroma subsampling
    (4:2:0 by default, so even q = 100 is not lossless); runs on the CPU, one image at a time; no
    gradient (attacks that see it get that of :func:`jpeg_surrogate`).

    Args:
        q: Quality factor, an integer in 1..100.
        subsampling: Pillow's chroma subsampling (0, 1, 2) or ``None`` for Pillow's default.
    """

    name = "jpeg"
    param_name = "q"
    param_type = int
    gradient = "approximate"
    description = "JPEG compression with Pillow at quality q"
    example = "jpeg:55"

    def __init__(self, q: int, subsampling: int | None = None) -> None:
        self.q = _check_int_range("jpeg quality q", q, 1, 100)
        if subsampling not in (None, 0, 1, 2):
            raise ValueError(f"jpeg subsampling must be 0, 1, 2 or None, got {subsampling}")
        self.subsampling = subsampling

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Encode and decode."""
        return jpeg(images, self.q, self.subsampling)

    def surrogate(self, images: torch.Tensor) -> torch.Tensor:
        """The differentiable approximation :func:`jpeg_surrogate` at this quality."""
        return jpeg_surrogate(images, self.q, self.subsampling)


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
    example = "dnn-jpeg:50"

    def __init__(self, q: int, colorspace: str = "ycbcr") -> None:
        self.q = _check_int_range("dnn-jpeg quality q", q, 1, 100)
        _check_colorspace(colorspace)
        self.colorspace = colorspace

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Block DCT, quantise, inverse DCT."""
        return dnn_jpeg(images, self.q, self.colorspace)


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
    example = "bitdepth:3"

    def __init__(self, d: int) -> None:
        self.d = _check_int_range("bitdepth d", d, 1, 8)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Quantise."""
        return bitdepth(images, self.d)
