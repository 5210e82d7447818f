"""The results of the detection protocol: one split, and the aggregate over splits.

The definitions (P_FA, P_MD, accuracy = 1 - (P_FA + P_MD)/2, AUC, TPR@5%FPR, the averaged ROC
curve) are given in :mod:`~sai_attack.detection.protocol`, which computes these results.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from sai_attack.detection.detector import Detector

__all__ = ["FPR_TARGET", "ROC_GRID", "DetectionResult", "SplitResult"]

FPR_TARGET = 0.05
"""The false-positive rate at which the true-positive rate is reported (TPR@5%FPR)."""

ROC_GRID = 101
"""FPR grid points of the averaged ROC curve (0, 0.01, ..., 1)."""


@dataclass
class SplitResult:
    """One split: sizes (pairs), error rates, threshold-free metrics, the detector's parameters.

    ``roc_fpr`` / ``roc_tpr`` are the split's ROC points (rounded to 6 digits).
    """

    split: int
    n_train: int
    n_test: int
    p_fa: float
    p_md: float
    accuracy: float
    seconds: float
    detector: dict = field(default_factory=dict)
    auc: float = math.nan
    tpr_at_fpr: float = math.nan
    roc_fpr: list[float] = field(default_factory=list)
    roc_tpr: list[float] = field(default_factory=list)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _over_splits(metric: str, statistic: Callable[[list[float]], float], doc: str) -> property:
    """A property of :class:`DetectionResult`: ``statistic`` of a split metric over the splits."""

    def value(self: DetectionResult) -> float:
        return statistic([getattr(s, metric) for s in self.splits])

    return property(value, doc=doc)


@dataclass
class DetectionResult:
    """Aggregated over splits (see the module docstring for the definitions).

    Attributes:
        detectors: The splits' fitted detectors, in split order (kept in memory for the
            cross-attack matrix; never written).
    """

    classifier: str
    splits: list[SplitResult]
    train_fraction: float
    seed: int
    detectors: list[Detector] = field(default_factory=list, repr=False, compare=False)

    accuracy = _over_splits("accuracy", _mean, "Mean detection accuracy 1 - P_E.")
    std = _over_splits(
        "accuracy", _std, "Standard deviation (ddof=1) of the accuracy over splits; NaN for one."
    )
    p_fa = _over_splits("p_fa", _mean, "Mean false-alarm rate.")
    p_md = _over_splits("p_md", _mean, "Mean missed-detection rate.")
    auc = _over_splits("auc", _mean, "Mean ROC AUC.")
    auc_std = _over_splits(
        "auc", _std, "Standard deviation (ddof=1) of the AUC over splits; NaN for one split."
    )
    tpr_at_fpr = _over_splits(
        "tpr_at_fpr", _mean, "Mean true-positive rate at :data:`FPR_TARGET` false positives."
    )

    @property
    def n_train(self) -> int:
        """Training pairs per split."""
        return self.splits[0].n_train

    @property
    def n_test(self) -> int:
        """Test pairs per split."""
        return self.splits[0].n_test

    def mean_roc(self, points: int = ROC_GRID) -> tuple[np.ndarray, np.ndarray]:
        """The splits' ROC curves averaged vertically: ``(fpr grid, mean tpr)``."""
        grid = np.linspace(0.0, 1.0, points)
        curves = [np.interp(grid, s.roc_fpr, s.roc_tpr) for s in self.splits if s.roc_fpr]
        if not curves:
            return grid, np.full(points, np.nan)
        tpr = np.mean(curves, axis=0)
        tpr[0] = 0.0  # a ROC curve starts at (0, 0); interp takes the top of the vertical step
        return grid, tpr

    def describe(self) -> dict:
        """JSON-ready summary with the per-split details and the averaged ROC curve."""
        grid, tpr = self.mean_roc()
        return {
            "classifier": self.classifier,
            "accuracy": self.accuracy,
            "std": None if math.isnan(self.std) else self.std,
            "p_fa": self.p_fa,
            "p_md": self.p_md,
            "auc": self.auc,
            "auc_std": None if math.isnan(self.auc_std) else self.auc_std,
            "tpr_at_fpr": self.tpr_at_fpr,
            "fpr_target": FPR_TARGET,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "train_fraction": self.train_fraction,
            "seed": self.seed,
            "splits": [asdict(s) for s in self.splits],
            "roc_mean": {
                "fpr": np.round(grid, 6).tolist(),
                "tpr": [None if math.isnan(t) else round(float(t), 6) for t in tpr],
            },
        }
