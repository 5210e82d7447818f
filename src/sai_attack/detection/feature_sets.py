"""Steganalysis feature vectors of 8-bit image arrays (sealwatch), and the settings naming them.

:data:`FEATURE_SETS` is the registry of the feature sets, all from ``sealwatch`` and computed on
the 8-bit pixel values:

- ``spam``: second-order SPAM (Pevny, Bas and Fridrich, "Steganalysis by Subtractive Pixel
  Adjacency Matrix", IEEE TIFS 2010), T = 3, 686 dimensions per channel, float64. sealwatch's
  Rust implementation is used (it agrees with the Python reference to 1e-16).
- ``srm``: the spatial rich model (Fridrich and Kodovsky, "Rich Models for Steganalysis of Digital
  Images", IEEE TIFS 2012), 34671 dimensions per channel, float32: sealwatch's residuals and
  sub-models with a faster co-occurrence count (:mod:`~sai_attack.detection.rich_models`,
  bit-identical to ``sealwatch.srm.extract``).
- ``srmq1``: SRMQ1, the SRM with only its first quantisation step (q = 1) of each sub-model, as
  in the same paper: 12753 dimensions per channel, float32 (bit-identical to
  ``sealwatch.srm.srmq1.extract``, computed the same way as ``srm``).
- ``crm``: the colour rich model CRMQ1 (Goljan, Fridrich and Cogranne, "Rich Model for
  Steganalysis of Color Images", IEEE WIFS 2014): SRMQ1-like residuals of the three channels
  with co-occurrences taken *across* the channels at one pixel, truncation T = 3, q = 1; 5404
  dimensions for the whole colour image, float32 (bit-identical to
  ``sealwatch.srm.crm.extract(x, Tc=3)``, with the faster count; sealwatch's own default
  ``Tc=2`` gives a reduced 2073-D variant, not the published model).

The per-channel sets handle colour (``rgb``) images channel by channel: the vectors of R, G and B
are concatenated in that order (2058-D for SPAM, 104013-D for SRM, 38259-D for SRMQ1). ``gray``
uses the luminance only, computed as Pillow's ``convert("L")`` does (ITU-R 601-2:
``L = (299 R + 587 G + 114 B) / 1000``, rounded), so it is the same 8-bit image that a grayscale
file of the image would hold. CRM is a colour model: it needs ``rgb``.

Known limitations: features are computed on whatever size the image has (run folders hold the
attack resolution, e.g. 224 x 224 for EfficientNet-Lite0); the co-occurrences of such small
images are noisier than on the 512 x 512 BOSSbase images these features were designed for.
Images smaller than 8 x 8 pixels are rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sai_attack.detection import rich_models

COLOR_MODES = ("rgb", "gray")
MIN_SIZE = 8
# Bumped whenever the way vectors are computed from an image changes, invalidating old cache
# entries (it is part of the settings key).
_IMPLEMENTATION_VERSION = 1


def _sealwatch_version() -> str:
    import sealwatch

    return str(getattr(sealwatch, "__version__", None) or "unknown")


def luminance(image: np.ndarray) -> np.ndarray:
    """The 8-bit luminance of an (H, W, 3) uint8 image, as Pillow's ``convert("L")``.

    Returns:
        (H, W) uint8.
    """
    _check_rgb(image)
    return np.asarray(Image.fromarray(image, mode="RGB").convert("L"), dtype=np.uint8)


def spam_features(channel: np.ndarray) -> np.ndarray:
    """SPAM-686 of one 8-bit channel with sealwatch's Rust backend.

    Args:
        channel: (H, W) uint8.

    Returns:
        (686,) float64, the ``straight`` then ``diagonal`` sub-models.
    """
    import sealwatch as sw

    with sw.BACKEND_RUST:
        parts = sw.spam.extract(np.ascontiguousarray(channel), T=3)
    return np.concatenate(
        [np.asarray(parts[k], dtype=np.float64).ravel() for k in ("straight", "diagonal")]
    )


def srm_features(channel: np.ndarray) -> np.ndarray:
    """SRM-34671 of one 8-bit channel (as ``sealwatch.srm.extract``).

    Args:
        channel: (H, W) uint8.

    Returns:
        (34671,) float32, sub-models in sealwatch's order.
    """
    return _rich_model(channel, rich_models.SRM_QUANTISATION)


def srmq1_features(channel: np.ndarray) -> np.ndarray:
    """SRMQ1-12753 of one 8-bit channel (as ``sealwatch.srm.srmq1.extract``).

    Args:
        channel: (H, W) uint8.

    Returns:
        (12753,) float32, sub-models in sealwatch's order.
    """
    return _rich_model(channel, rich_models.SRMQ1_QUANTISATION)


def _rich_model(channel: np.ndarray, quantisation: Sequence[Sequence[float]]) -> np.ndarray:
    import sealwatch as sw

    return np.asarray(sw.tools.flatten(rich_models.extract(channel, quantisation)), np.float32)


def crm_features(image: np.ndarray) -> np.ndarray:
    """CRMQ1-5404 of an 8-bit colour image (as ``sealwatch.srm.crm.extract``, T = 3).

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        (5404,) float32, sub-models in sealwatch's order.
    """
    import sealwatch as sw

    features = rich_models.crm(np.ascontiguousarray(image), q=1, truncation=3)
    return np.asarray(sw.tools.flatten(features), dtype=np.float32)


@dataclass(frozen=True)
class FeatureSet:
    """One entry of :data:`FEATURE_SETS`.

    Attributes:
        name: The registry (and CLI) name.
        title: How reports name it, with its dimension (``SPAM-686``).
        dim: Dimensions per channel (per-channel sets) or of the whole image (colour sets).
        dtype: The dtype of the vectors (sealwatch's own).
        extract: The extractor: one (H, W) uint8 channel, or one (H, W, 3) image for colour sets.
        colour: Whether ``extract`` takes the colour image (only ``rgb`` is then allowed).
        min_parallel: Fewer cache misses than this are computed in the calling process:
            starting spawned workers (each imports the package, torch included: seconds) costs
            more than several hundred SPAM vectors but less than one SRM vector.
        reference: The paper that defines it.
    """

    name: str
    title: str
    dim: int
    dtype: np.dtype
    extract: Callable[[np.ndarray], np.ndarray]
    colour: bool
    min_parallel: int
    reference: str


FEATURE_SETS: dict[str, FeatureSet] = {
    fs.name: fs
    for fs in (
        FeatureSet("spam", "SPAM-686", 686, np.dtype(np.float64), spam_features, False, 1000,
                   "Pevny, Bas and Fridrich, IEEE TIFS 2010"),
        FeatureSet("srm", "SRM-34671", 34671, np.dtype(np.float32), srm_features, False, 2,
                   "Fridrich and Kodovsky, IEEE TIFS 2012"),
        FeatureSet("srmq1", "SRMQ1-12753", 12753, np.dtype(np.float32), srmq1_features, False,
                   2, "Fridrich and Kodovsky, IEEE TIFS 2012"),
        FeatureSet("crm", "CRMQ1-5404", 5404, np.dtype(np.float32), crm_features, True, 8,
                   "Goljan, Fridrich and Cogranne, IEEE WIFS 2014"),
    )
}  # fmt: skip
"""The steganalysis feature sets by name (see the module docstring)."""

FEATURE_DIMS = {name: fs.dim for name, fs in FEATURE_SETS.items()}
"""Dimensions per channel (per-channel sets) or per image (colour sets), by name."""
FEATURE_DTYPES = {name: fs.dtype for name, fs in FEATURE_SETS.items()}
"""The vectors' dtypes by name."""


@dataclass(frozen=True)
class FeatureSettings:
    """Which steganalysis features are extracted, checked on construction.

    Attributes:
        features: A name of :data:`FEATURE_SETS` (``spam``, ``srm``, ``srmq1``, ``crm``).
        color: ``rgb`` (the three channel vectors concatenated; the colour image for CRM) or
            ``gray`` (luminance only; not for CRM).
    """

    features: str = "spam"
    color: str = "rgb"

    def __post_init__(self) -> None:
        if self.features not in FEATURE_SETS:
            raise ValueError(
                f"features must be one of {', '.join(FEATURE_SETS)}, got {self.features!r}"
            )
        if self.color not in COLOR_MODES:
            raise ValueError(f"color must be one of {', '.join(COLOR_MODES)}, got {self.color!r}")
        if self.feature_set.colour and self.color != "rgb":
            raise ValueError(
                f"color must be rgb for the {self.features} features (a colour model), "
                f"got {self.color!r}"
            )

    @property
    def feature_set(self) -> FeatureSet:
        """The registry entry."""
        return FEATURE_SETS[self.features]

    @property
    def channels(self) -> int:
        """Number of channel vectors concatenated (1 for colour sets and ``gray``)."""
        return 3 if self.color == "rgb" and not self.feature_set.colour else 1

    @property
    def dim(self) -> int:
        """Length of one image's feature vector."""
        return self.feature_set.dim * self.channels

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the vectors (sealwatch's own: float64 for SPAM, else float32)."""
        return self.feature_set.dtype

    def key(self) -> str:
        """The cache key of these settings (feature set, colour, versions)."""
        version = f"v{_IMPLEMENTATION_VERSION}-sealwatch{_sealwatch_version()}"
        return f"{self.features}-{self.color}-{version}"

    def describe(self) -> dict:
        """JSON-ready description."""
        return {
            "features": self.features,
            "title": self.feature_set.title,
            "color": self.color,
            "dim": self.dim,
            "sealwatch": _sealwatch_version(),
            "implementation_version": _IMPLEMENTATION_VERSION,
        }


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")


def extract_image(image: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """The feature vector of one image.

    Args:
        image: (H, W, 3) uint8 RGB, at least 8 x 8 pixels.
        settings: Which features.

    Returns:
        (settings.dim,) vector of dtype ``settings.dtype``: the R, G, B channel vectors
        concatenated (``rgb``), the luminance vector (``gray``), or the colour model's vector.
    """
    _check_rgb(image)
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise ValueError(
            f"image is {w}x{h} pixels; steganalysis features need at least {MIN_SIZE}x{MIN_SIZE}"
        )
    fs = settings.feature_set
    if fs.colour:
        parts = [fs.extract(image)]
    elif settings.color == "gray":
        parts = [fs.extract(luminance(image))]
    else:
        parts = [fs.extract(image[..., c]) for c in range(3)]
    vector = np.concatenate(parts).astype(settings.dtype, copy=False)
    if vector.shape != (settings.dim,):
        raise RuntimeError(
            f"sealwatch returned {vector.shape[0]} features, expected {settings.dim}"
        )
    return vector
