"""The detector interface: a binary (clean vs adversarial) classifier of feature vectors.

A :class:`Detector` keeps its fitted parameters as plain numpy arrays (:meth:`Detector.arrays`),
so that :func:`~sai_attack.detection.classifiers.save_detector` can store them as an ``.npz``
read with ``allow_pickle=False``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


def check_training_arrays(clean: np.ndarray, adversarial: np.ndarray) -> None:
    """Check clean (N, D) and adversarial (M, D) training features.

    Raises:
        ValueError: When either is not 2-D, has fewer than 2 rows or non-finite values, or
            their dimensions differ.
    """
    for name, x in (("clean", clean), ("adversarial", adversarial)):
        if x.ndim != 2:
            raise ValueError(f"{name} features must be (N, D), got shape {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 {name} training samples, got {x.shape[0]}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} features contain NaN or infinite values")
    if clean.shape[1] != adversarial.shape[1]:
        raise ValueError(
            f"clean and adversarial features differ in dimension: "
            f"{clean.shape[1]} vs {adversarial.shape[1]}"
        )


class Detector:
    """A fitted binary detector; label 1 = adversarial, 0 = clean.

    Subclasses implement :meth:`fit`, :meth:`decision_function` and :meth:`from_arrays`, and
    name the attributes holding their fitted arrays in ``array_names`` (for :meth:`arrays`).
    """

    name: ClassVar[str] = ""
    # The attributes that hold the fitted arrays, in the order they are saved in (it fixes the
    # bytes, hence the hash, of the .npz file).
    array_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.dim: int | None = None

    def fit(self, clean: np.ndarray, adversarial: np.ndarray, seed: int = 0) -> Detector:
        """Train on clean (N, D) and adversarial (M, D) features; returns self."""
        raise NotImplementedError

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """(N,) scores, > 0 for adversarial."""
        raise NotImplementedError

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N,) int labels: 1 adversarial, 0 clean."""
        return (self.decision_function(features) > 0).astype(np.int64)

    def params(self) -> dict:
        """JSON-ready scalar parameters."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted numeric arrays, by the names in :attr:`array_names`.

        Raises:
            ValueError: When the detector is not fitted.
        """
        if not self.array_names:
            raise NotImplementedError
        arrays = {key: getattr(self, key) for key in self.array_names}
        if any(value is None for value in arrays.values()):
            raise ValueError(f"the {self.name} detector is not fitted")
        return arrays

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray], dim: int) -> Detector:
        """Rebuild a fitted detector from :meth:`params` and :meth:`arrays`."""
        raise NotImplementedError

    def _check_features(self, features: np.ndarray) -> np.ndarray:
        if self.dim is None:
            raise ValueError(f"the {self.name} detector is not fitted")
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"features must be (N, {self.dim}) for this detector, got shape {features.shape}"
            )
        return features.astype(np.float64, copy=False)
