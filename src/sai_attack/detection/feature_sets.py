"""Steganalysis feature vectors of 8-bit image arrays (sealwatch), and the settings naming them.

Two feature sets from ``sealwatch`` are offered, both computed on the 8-bit pixel values:

- ``spam``: second-order SPAM (Pevny, Bas and Fridrich, "Steganalysis by Subtractive Pixel
  Adjacency Matrix", IEEE TIFS 2010), T = 3, 686 dimensions per channel. sealwatch's Rust
  implementation is used (it agrees with the Python reference to 1e-16).
- ``srm``: the spatial rich model (Fridrich and Kodovsky, "Rich Models for Steganalysis of Digital
  Images", IEEE TIFS 2012), 34671 dimensions per channel. sealwatch has no Rust SRM, so this is
  slow (about 9 s per channel of a 224 x 224 image on one core).

Colour (``rgb``) images are handled per channel: the feature vectors of R, G and B are
concatenated in that order (2058-D for SPAM, 104013-D for SRM). ``gray`` uses the luminance only,
computed as Pillow's ``convert("L")`` does (ITU-R 601-2: ``L = (299 R + 587 G + 114 B) / 1000``,
rounded), so it is the same 8-bit image that a grayscale file of the image would hold.

Known limitations: features are computed on whatever size the image has (run folders hold the
attack resolution, e.g. 224 x 224 for EfficientNet-Lite0); SPAM's co-occurrences of such small
images are noisier than on the 512 x 512 BOSSbase images these features were designed for.
Images smaller than 8 x 8 pixels are rejected (sealwatch's SPAM and SRM are undefined there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

FEATURE_SETS = ("spam", "srm")
COLOR_MODES = ("rgb", "gray")
FEATURE_DIMS = {"spam": 686, "srm": 34671}
FEATURE_DTYPES = {"spam": np.dtype(np.float64), "srm": np.dtype(np.float32)}
MIN_SIZE = 8
# Bumped whenever the way vectors are computed from an image changes, invalidating old cache
# entries (it is part of the settings key).
_IMPLEMENTATION_VERSION = 1


def _sealwatch_version() -> str:
    import sealwatch

    return str(getattr(sealwatch, "__version__", None) or "unknown")


@dataclass(frozen=True)
class FeatureSettings:
    """Which steganalysis features are extracted, checked on construction.

    Attributes:
        features: ``spam`` (686-D per channel) or ``srm`` (34671-D per channel).
        color: ``rgb`` (the three channel vectors concatenated) or ``gray`` (luminance only).
    """

    features: str = "spam"
    color: str = "rgb"

    def __post_init__(self) -> None:
        if self.features not in FEATURE_SETS:
            raise ValueError(
                f"--features must be one of {', '.join(FEATURE_SETS)}, got {self.features!r}"
            )
        if self.color not in COLOR_MODES:
            raise ValueError(f"--color must be one of {', '.join(COLOR_MODES)}, got {self.color!r}")

    @property
    def channels(self) -> int:
        """Number of channels whose vectors are concatenated."""
        return 3 if self.color == "rgb" else 1

    @property
    def dim(self) -> int:
        """Length of one image's feature vector."""
        return FEATURE_DIMS[self.features] * self.channels

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the vectors (sealwatch's own: float64 for SPAM, float32 for SRM)."""
        return FEATURE_DTYPES[self.features]

    def key(self) -> str:
        """The cache key of these settings (feature set, colour, versions)."""
        version = f"v{_IMPLEMENTATION_VERSION}-sealwatch{_sealwatch_version()}"
        return f"{self.features}-{self.color}-{version}"

    def describe(self) -> dict:
        """JSON-ready description."""
        return {
            "features": self.features,
            "color": self.color,
            "dim": self.dim,
            "sealwatch": _sealwatch_version(),
            "implementation_version": _IMPLEMENTATION_VERSION,
        }


def luminance(image: np.ndarray) -> np.ndarray:
    """The 8-bit luminance of an (H, W, 3) uint8 image, as Pillow's ``convert("L")``.

    Returns:
        (H, W) uint8.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
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
    """SRM-34671 of one 8-bit channel (sealwatch's Python implementation).

    Args:
        channel: (H, W) uint8.

    Returns:
        (34671,) float32, sub-models in sealwatch's order.
    """
    import sealwatch as sw

    return np.asarray(sw.tools.flatten(sw.srm.extract(channel)), dtype=np.float32)


_CHANNEL_EXTRACTORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "spam": spam_features,
    "srm": srm_features,
}


def extract_image(image: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """The feature vector of one image.

    Args:
        image: (H, W, 3) uint8 RGB, at least 8 x 8 pixels.
        settings: Which features.

    Returns:
        (settings.dim,) vector of dtype ``settings.dtype``: the R, G, B channel vectors
        concatenated (``rgb``) or the luminance vector (``gray``).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise ValueError(
            f"image is {w}x{h} pixels; steganalysis features need at least {MIN_SIZE}x{MIN_SIZE}"
        )
    extractor = _CHANNEL_EXTRACTORS[settings.features]
    channels = [luminance(image)] if settings.color == "gray" else [image[..., c] for c in range(3)]
    vector = np.concatenate([extractor(ch) for ch in channels]).astype(settings.dtype, copy=False)
    if vector.shape != (settings.dim,):
        raise RuntimeError(
            f"sealwatch returned {vector.shape[0]} features, expected {settings.dim}"
        )
    return vector
