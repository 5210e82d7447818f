"""The detection protocol: paired train/test splits, error rates and their aggregation.

This follows the steganalysis practice that Liu et al. ("Detection based defense against
adversarial examples from the steganalysis point of view", CVPR 2019) carry over to adversarial
examples and that Dong et al. (CVPR 2020, Section 4.2, Table 2) use: one detector per attack
configuration; the clean and the adversarial version of an image form a pair, and both stay on the
same side of every split, so that the detector never sees the clean twin of a test image. A
fraction of the pairs (default one half) trains, the rest tests; this is repeated over several
seeded random splits. On the test pairs,

- P_FA: the fraction of clean images flagged adversarial (false alarms),
- P_MD: the fraction of adversarial images passed as clean (missed detections),
- P_E = (P_FA + P_MD) / 2, the error under equal priors, and accuracy = 1 - P_E;

and, threshold-free, from the detector's decision scores (``Detector.decision_function``: the
FLD ensemble's fraction of base-learner votes, ties broken as sealwatch does; the logistic
regression's logit):

- AUC: the area under the ROC curve (``sklearn.metrics.roc_auc_score``; 0.5 is chance),
- TPR@5%FPR: the highest true-positive rate (adversarial images flagged) among the points of the
  ROC curve (``sklearn.metrics.roc_curve``) whose false-positive rate is at most 5%, without
  interpolation; with n clean test images the FPR moves in steps of 1/n.

The reported accuracy, P_FA, P_MD, AUC and TPR@5%FPR are means over splits; ``std`` is the sample
standard deviation (ddof = 1) of the accuracy over splits (undefined, NaN, for a single split),
``auc_std`` that of the AUC. The ROC curve of a result is the vertical average of the splits'
curves (their TPR interpolated on a grid of FPR values).

Known limitation: with few pairs the split-to-split spread is large; it is reported, not hidden.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from concurrent.futures import Executor
from typing import Any

import numpy as np

from sai_attack.detection.classifiers import CLASSIFIERS, Detector, make_detector
from sai_attack.detection.results import FPR_TARGET, DetectionResult, SplitResult
from sai_attack.options import Option

logger = logging.getLogger(__name__)

MIN_PAIRS = 4


class OpenFraction(Option):
    """An :class:`Option` for a number strictly between ``low`` and ``high`` (both excluded)."""

    def check(self, value: Any) -> float:
        """Validate ``value`` and return it as a float.

        Raises:
            ValueError: ``value`` is not a number strictly between ``low`` and ``high``.
        """
        try:
            number = super().check(value)
        except ValueError:
            number = None
        if number is None or number >= self.high:
            raise ValueError(
                f"{self.name} must lie strictly between {self.low:g} and {self.high:g}, "
                f"got {value!r}"
            ) from None
        return float(number)


SPLITS = Option("splits", int, 5, "random train/test splits", low=1)
"""The number of seeded random splits of the protocol."""

TRAIN_FRACTION = OpenFraction(
    "train_fraction", float, 0.5, "fraction of the pairs that train each detector",
    low=0.0, low_open=True, high=1.0,
)  # fmt: skip
"""The fraction of the pairs that train each split's detector."""


def protocol_text(splits: int, train_fraction: float) -> str:
    """The protocol, in one paragraph, for reports."""
    return (
        "One detector per attack configuration. Clean/adversarial pairs of the same image stay "
        f"on the same side of each split; {100 * train_fraction:g}% of the pairs train the "
        f"detector and the remaining pairs test it; repeated over {splits} seeded random "
        "split(s). Detection accuracy = 1 - P_E with P_E = (P_FA + P_MD)/2 on the test pairs "
        "(P_FA: clean images flagged adversarial, P_MD: adversarial images passed as clean). "
        "Threshold-free, from the detector's decision scores: AUC, the area under the ROC "
        f"curve, and TPR@{100 * FPR_TARGET:g}%FPR, the highest rate of adversarial test images "
        f"flagged among the ROC points with at most {100 * FPR_TARGET:g}% of the clean test "
        "images flagged (no interpolation). Accuracy, P_FA, P_MD, AUC and TPR are means over "
        "splits, std is the standard deviation (ddof=1) of the accuracy over splits. n_train "
        "and n_test count pairs."
    )


def derive_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed derived from ``seed`` and ``parts`` (stable across runs and platforms)."""
    text = "\x00".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def check_protocol(splits: int, train_fraction: float) -> None:
    """Raise ValueError naming the parameter when ``splits`` or ``train_fraction`` is unusable."""
    SPLITS.check(splits)
    TRAIN_FRACTION.check(train_fraction)


def pair_split(
    n_pairs: int, train_fraction: float, seed: int, split: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test pairs of one split.

    Args:
        n_pairs: Number of clean/adversarial pairs (at least 4).
        train_fraction: Fraction of pairs that train, in (0, 1); the training set is
            ``round(train_fraction * n_pairs)`` pairs, kept within 2..n_pairs-1.
        seed: The protocol seed.
        split: The split index.

    Returns:
        ``(train, test)``: sorted int64 pair indices, disjoint, together ``0..n_pairs-1``. Both the
        clean and the adversarial image of a pair go where its index goes.
    """
    check_protocol(1, train_fraction)
    if n_pairs < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} clean/adversarial pairs, got {n_pairs}")
    n_train = min(max(round(train_fraction * n_pairs), 2), n_pairs - 1)
    perm = np.random.default_rng(derive_seed(seed, "split", split)).permutation(n_pairs)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def error_rates(pred_clean: np.ndarray, pred_adversarial: np.ndarray) -> tuple[float, float]:
    """``(P_FA, P_MD)`` from 0/1 predictions (1 = adversarial) on clean and adversarial images."""
    p_fa = float(np.mean(np.asarray(pred_clean) == 1)) if len(pred_clean) else float("nan")
    p_md = float(np.mean(np.asarray(pred_adversarial) == 0)) if len(pred_adversarial) else math.nan
    return p_fa, p_md


def roc_metrics(
    scores_clean: np.ndarray, scores_adversarial: np.ndarray
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """AUC, TPR at :data:`FPR_TARGET` and the ROC curve of decision scores (adversarial = 1).

    Args:
        scores_clean: (N,) scores of clean images (at least one).
        scores_adversarial: (M,) scores of adversarial images (at least one).

    Returns:
        ``(auc, tpr_at_fpr, fpr, tpr)``; ``fpr`` and ``tpr`` are the points of
        ``sklearn.metrics.roc_curve``, from (0, 0) to (1, 1).

    Raises:
        ValueError: Either set of scores is empty or not finite.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    for name, x in (("scores_clean", scores_clean), ("scores_adversarial", scores_adversarial)):
        if len(x) == 0 or not np.all(np.isfinite(x)):
            raise ValueError(f"{name} must be a non-empty array of finite scores")
    y = np.concatenate([np.zeros(len(scores_clean)), np.ones(len(scores_adversarial))])
    scores = np.concatenate([scores_clean, scores_adversarial]).astype(np.float64)
    fpr, tpr, _ = roc_curve(y, scores)
    # roc_curve starts at (0, 0), so some point always qualifies.
    tpr_at = float(tpr[fpr <= FPR_TARGET + 1e-12].max())
    return float(roc_auc_score(y, scores)), tpr_at, fpr, tpr


def split_result(
    split: int,
    n_train: int,
    scores: tuple[np.ndarray, np.ndarray],
    seconds: float = 0.0,
    detector: dict | None = None,
) -> SplitResult:
    """The :class:`SplitResult` of a detector's decision scores on clean and adversarial tests.

    Args:
        split: The split index.
        n_train: Training pairs.
        scores: ``(clean, adversarial)`` decision scores of the test pairs (> 0: adversarial,
            the detectors' own threshold).
        seconds: Training and testing time.
        detector: The detector's parameters to report.
    """
    s_clean, s_adv = (np.asarray(x, dtype=np.float64) for x in scores)
    p_fa, p_md = error_rates((s_clean > 0).astype(int), (s_adv > 0).astype(int))
    auc, tpr_at, fpr, tpr = roc_metrics(s_clean, s_adv)
    return SplitResult(
        split=split,
        n_train=n_train,
        n_test=len(s_clean),
        p_fa=p_fa,
        p_md=p_md,
        accuracy=1.0 - 0.5 * (p_fa + p_md),
        seconds=round(seconds, 3),
        detector=detector or {},
        auc=auc,
        tpr_at_fpr=tpr_at,
        roc_fpr=np.round(fpr, 6).tolist(),
        roc_tpr=np.round(tpr, 6).tolist(),
    )


def fit_split(
    classifier: str,
    classifier_options: dict,
    train: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> Detector:
    """One split's detector, trained on ``train = (clean, adversarial)`` features."""
    return make_detector(classifier, **classifier_options).fit(*train, seed=seed)


def detector_params(detector: Detector) -> dict:
    """The parameters of a split's detector that reports show (L, d_sub, OOB error)."""
    return {k: v for k, v in detector.params().items() if k in ("L", "d_sub", "oob_error")}


def _fit_and_test(
    classifier: str,
    classifier_options: dict,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> tuple[np.ndarray, np.ndarray, Detector, float]:
    """Train one split's detector; returns (clean scores, adversarial scores, detector, s)."""
    t0 = time.perf_counter()
    det = fit_split(classifier, classifier_options, train, seed)
    scores = det.decision_function(test[0]), det.decision_function(test[1])
    return *scores, det, time.perf_counter() - t0


def evaluate_pairs(
    clean: np.ndarray,
    adversarial: np.ndarray,
    classifier: str = "fld",
    splits: int = 5,
    train_fraction: float = 0.5,
    seed: int = 0,
    classifier_options: dict | None = None,
    executor: Executor | None = None,
) -> DetectionResult:
    """Train and test a detector on paired features over several seeded splits.

    Args:
        clean: (N, D) features of the clean images.
        adversarial: (N, D) features of their adversarial versions; row i pairs with row i.
        classifier: ``fld`` or ``logreg``.
        splits: Number of random splits.
        train_fraction: Fraction of pairs that train.
        seed: The protocol seed (splits and the classifiers' randomness derive from it).
        classifier_options: Keyword arguments of the detector class (e.g. ``L``, ``d_sub`` of
            :class:`~sai_attack.detection.classifiers.FLDEnsemble`).
        executor: Optional process pool that trains the splits in parallel (the results do not
            depend on it).

    Returns:
        The :class:`DetectionResult`, with the splits' detectors.
    """
    check_protocol(splits, train_fraction)
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {classifier!r}")
    clean, adversarial = np.asarray(clean), np.asarray(adversarial)
    if clean.ndim != 2 or clean.shape != adversarial.shape:
        raise ValueError(
            f"clean and adversarial features must both be (N, D) with the same shape, got "
            f"{clean.shape} and {adversarial.shape}"
        )
    tasks = []
    for k in range(splits):
        train, test = pair_split(len(clean), train_fraction, seed, k)
        tasks.append(
            (
                classifier,
                classifier_options or {},
                (clean[train], adversarial[train]),
                (clean[test], adversarial[test]),
                derive_seed(seed, "classifier", k),
            )
        )
    # Every split carries its own seed, so the outcome is the same in any process.
    if executor is not None and splits > 1:
        outcomes = list(executor.map(_fit_and_test, *zip(*tasks, strict=True)))
    else:
        outcomes = [_fit_and_test(*task) for task in tasks]
    results, detectors = [], []
    for k, (task, (s_clean, s_adv, det, seconds)) in enumerate(zip(tasks, outcomes, strict=True)):
        result = split_result(k, len(task[2][0]), (s_clean, s_adv), seconds, detector_params(det))
        results.append(result)
        detectors.append(det)
        logger.debug(
            "split %d: P_FA %.3f, P_MD %.3f, AUC %.3f, %s",
            k, result.p_fa, result.p_md, result.auc, result.detector,
        )  # fmt: skip
    return DetectionResult(classifier, results, float(train_fraction), int(seed), detectors)
