"""Steganalysis detection on run folders: one detector per run and feature set.

A run folder is read with :func:`sai_attack.runs.read_run` (``require_items=False``: a run with
too few pairs is reported as skipped, not refused); every item pairs the adversarial image
``images/<stem>.png`` with its preprocessed clean input ``clean/<stem>.png``. Several feature sets
are compared side by side (``DetectionOptions.features``); with two or more runs,
:func:`run_detection` also fills the cross-attack matrix (:mod:`~sai_attack.detection.cross`).
The tables and files these results are written to (Table 2 of Dong et al., CVPR 2020) are made by
:mod:`~sai_attack.detection.reports`; saved detectors are applied by
:mod:`~sai_attack.detection.apply`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sai_attack import options as option_table
from sai_attack.attacks import ATTACKS, METHOD_NAMES
from sai_attack.detection.classifiers import make_detector, save_detector
from sai_attack.detection.cross import CrossCell, cross_attack
from sai_attack.detection.features import (
    ExtractionStats,
    FeatureCache,
    FeatureExtractor,
    FeatureSettings,
)
from sai_attack.detection.protocol import (
    MIN_PAIRS,
    DetectionResult,
    check_protocol,
    derive_seed,
    evaluate_pairs,
)
from sai_attack.options import Option
from sai_attack.runs import Run
from sai_attack.runtime import die_with_parent

logger = logging.getLogger(__name__)

SEED = Option("seed", int, 0, "seed of the splits and the classifiers", low=0, high=2**63 - 1)
"""The protocol seed (splits and the classifiers' randomness derive from it)."""

WORKERS = Option(
    "workers", int, 0, "worker processes for feature extraction and for training the splits' "
    "detectors in parallel; 0 computes in the main process", low=0,
)  # fmt: skip
"""Worker processes of ``detect`` (the results do not depend on them)."""


# --------------------------------------------------------------------------------------------
# What a run was
# --------------------------------------------------------------------------------------------


def uses_superpixels(run: Run) -> bool:
    """Whether the run's attack method is one of the superpixel-guided methods."""
    attack = ATTACKS.get(run.method)
    return attack is not None and attack.uses_superpixels


def merge_beta(run: Run) -> float | None:
    """The merge threshold beta of a superpixel method's run, else None."""
    return run.record.number("merge_beta") if uses_superpixels(run) else None


def superpixel_algorithm(run: Run) -> str | None:
    """The superpixel algorithm of a superpixel method's run, else None."""
    value = run.record.get("superpixel") if uses_superpixels(run) else None
    return str(value) if value else None


def run_label(run: Run) -> str:
    """The row label of Table 2: ``I-FGM``, ``SAI-FGM (β=2)``, ``SAI-FGM (LSC, β=0)``."""
    name = METHOD_NAMES.get(run.method, run.method or run.name)
    parts = []
    algorithm = superpixel_algorithm(run)
    if algorithm and algorithm != option_table.default("superpixel"):
        parts.append(algorithm.upper())
    beta = merge_beta(run)
    if beta is not None:
        parts.append(f"β={beta:g}")
    return f"{name} ({', '.join(parts)})" if parts else name


# --------------------------------------------------------------------------------------------
# Detection on runs
# --------------------------------------------------------------------------------------------


@dataclass
class RunDetection:
    """The detection result of one run."""

    run: Run
    result: DetectionResult
    settings: FeatureSettings
    extraction: ExtractionStats
    seconds_train: float

    @property
    def label(self) -> str:
        """The run's Table 2 row label (see :func:`run_label`)."""
        return run_label(self.run)

    @property
    def merge_beta(self) -> float | None:
        """The run's merge threshold beta (superpixel methods), else None."""
        return merge_beta(self.run)

    @property
    def superpixel(self) -> str | None:
        """The run's superpixel algorithm (superpixel methods), else None."""
        return superpixel_algorithm(self.run)


@dataclass
class DetectionOptions:
    """Settings of ``sai-attack detect``, checked on construction.

    Attributes:
        features: One feature set name, or several (compared side by side); normalised to a
            tuple of distinct names in the given order.
    """

    features: str | Sequence[str] = "spam"
    color: str = "rgb"
    classifier: str = "fld"
    splits: int = 5
    train_fraction: float = 0.5
    seed: int = 0
    workers: int = 0
    cache_dir: str | os.PathLike | None = None  # None: no cache

    def __post_init__(self) -> None:
        names = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        if not names:
            raise ValueError("features must name at least one feature set")
        self.features = tuple(dict.fromkeys(names))
        self.feature_settings = tuple(FeatureSettings(f, self.color) for f in self.features)
        make_detector(self.classifier)
        check_protocol(self.splits, self.train_fraction)
        SEED.check(self.seed)
        WORKERS.check(self.workers)

    @property
    def settings(self) -> FeatureSettings:
        """The first feature set's settings (the only one, in the common single-set case)."""
        return self.feature_settings[0]

    def cache(self) -> FeatureCache:
        """The feature cache (disabled when ``cache_dir`` is None)."""
        return FeatureCache(self.cache_dir)


def run_features(fx: FeatureExtractor, run: Run) -> tuple[np.ndarray, np.ndarray, ExtractionStats]:
    """Clean and adversarial features (N, D) of a run's pairs, and the extraction numbers."""
    clean, stats = fx.extract([item.clean for item in run.items])
    adversarial, more = fx.extract([item.adversarial for item in run.items])
    stats.add(more)
    return clean, adversarial, stats


def detector_name(run: str, settings: FeatureSettings, options: DetectionOptions) -> str:
    """The file stem of a saved detector: ``<run>``, or ``<run>-<features>`` for several sets."""
    return run if len(options.features) == 1 else f"{run}-{settings.features}"


def _save_final_detector(
    save_dir: str | os.PathLike,
    run: Run,
    clean: np.ndarray,
    adversarial: np.ndarray,
    settings: FeatureSettings,
    options: DetectionOptions,
) -> None:
    """Train a detector on all pairs of ``run``; save it in ``save_dir`` (:func:`detector_name`)."""
    detector = make_detector(options.classifier).fit(
        clean, adversarial, seed=derive_seed(options.seed, "final")
    )
    info = {
        "run": run.name,
        "run_path": str(run.path),
        "method": run.method,
        "delta": run.delta,
        "merge_beta": merge_beta(run),
        "pairs": len(run),
        "trained_on": "all pairs of the run",
        "seed": options.seed,
    }
    name = detector_name(run.name, settings, options)
    save_detector(Path(save_dir) / f"{name}.json", detector, settings, info)


@dataclass
class DetectionOutcome:
    """What :func:`run_detection` found.

    Attributes:
        results: One :class:`RunDetection` per feature set and usable run (feature sets in the
            options' order, runs in the given order within each).
        skipped: ``(run, reason)`` for runs with too few pairs.
        cross: The cross-attack cells (:mod:`~sai_attack.detection.cross`) of every feature set,
            when asked for and at least two runs are usable.
    """

    results: list[RunDetection]
    skipped: list[tuple[str, str]]
    cross: list[CrossCell] = field(default_factory=list)


class _Features:
    """A run's features for one feature set: kept in memory only when there is no cache.

    With the cache, a second request reads the vectors back from it (cheap), so that the
    features of many runs are not all held at once (SRM: 0.4 MB per image).
    """

    def __init__(self, fx: FeatureExtractor, keep: bool) -> None:
        self.fx, self.keep = fx, keep
        self.held: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def first(self, run: Run) -> tuple[np.ndarray, np.ndarray, ExtractionStats]:
        clean, adversarial, stats = run_features(self.fx, run)
        if self.keep:
            self.held[id(run)] = (clean, adversarial)
        return clean, adversarial, stats

    def __call__(self, run: Run) -> tuple[np.ndarray, np.ndarray]:
        if id(run) in self.held:
            return self.held[id(run)]
        return run_features(self.fx, run)[:2]


def _detect_one_set(
    runs: Sequence[Run],
    settings: FeatureSettings,
    options: DetectionOptions,
    pool: ProcessPoolExecutor | None,
    save_dir: str | os.PathLike | None,
    cross: bool,
) -> tuple[list[RunDetection], list[CrossCell]]:
    """Detection of usable ``runs`` with one feature set, and its cross-attack matrix."""
    results: list[RunDetection] = []
    with FeatureExtractor(settings, options.workers, options.cache()) as fx:
        features = _Features(fx, keep=cross and not options.cache().enabled)
        for run in runs:
            clean, adversarial, extraction = features.first(run)
            t0 = time.perf_counter()
            result = evaluate_pairs(
                clean,
                adversarial,
                options.classifier,
                options.splits,
                options.train_fraction,
                options.seed,
                executor=pool,
            )
            seconds = time.perf_counter() - t0
            logger.info(
                "%s: %s %s detection accuracy %.1f%% (P_FA %.1f%%, P_MD %.1f%%), AUC %.3f, "
                "on %d test pairs",
                run.name, settings.features, run_label(run), 100 * result.accuracy,
                100 * result.p_fa, 100 * result.p_md, result.auc, result.n_test,
            )  # fmt: skip
            results.append(RunDetection(run, result, settings, extraction, seconds))
            if save_dir is not None:
                _save_final_detector(save_dir, run, clean, adversarial, settings, options)
            del clean, adversarial
        cells = []
        if cross and len(results) > 1:
            cells = cross_attack(
                [r.run for r in results],
                [r.result for r in results],
                features,
                settings,
                options.classifier,
                options.seed,
            )
    for r in results:
        r.result.detectors = []  # done with them: free the memory
    return results, cells


def run_detection(
    runs: Sequence[Run],
    options: DetectionOptions,
    save_dir: str | os.PathLike | None = None,
    cross: bool = True,
) -> DetectionOutcome:
    """Train and test one detector per run and feature set, and the cross-attack matrix.

    Args:
        runs: The runs (read with :func:`sai_attack.runs.read_run`).
        options: Feature sets, classifier and protocol.
        save_dir: When given, a detector trained on all pairs of each run is saved there as
            ``<name>.json`` + ``<name>.npz`` (:func:`detector_name`; see
            :func:`sai_attack.detection.save_detector`).
        cross: Whether to compute the cross-attack matrix (when two or more runs are usable).

    Returns:
        The :class:`DetectionOutcome`.
    """
    skipped: list[tuple[str, str]] = []
    usable = []
    for run in runs:
        if len(run) < MIN_PAIRS:
            reason = f"only {len(run)} clean/adversarial pairs (need {MIN_PAIRS})"
            logger.warning("skipping %s: %s", run.path, reason)
            skipped.append((run.name, reason))
        else:
            usable.append(run)
    outcome = DetectionOutcome([], skipped)
    with contextlib.ExitStack() as stack:
        pool = None
        if options.workers > 1 and options.splits > 1 and options.classifier == "fld":
            # FLD training dominates (seconds per split); the splits are independent.
            ctx = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(
                min(options.workers, options.splits), mp_context=ctx, initializer=die_with_parent
            )
            stack.callback(pool.shutdown)
        for settings in options.feature_settings:
            results, cells = _detect_one_set(usable, settings, options, pool, save_dir, cross)
            outcome.results += results
            outcome.cross += cells
    return outcome


def detect_runs(
    runs: Sequence[Run],
    options: DetectionOptions,
    save_dir: str | os.PathLike | None = None,
) -> tuple[list[RunDetection], list[tuple[str, str]]]:
    """Train and test one detector per run and feature set (no cross-attack matrix).

    Args:
        runs: The runs (read with :func:`sai_attack.runs.read_run`).
        options: Features, classifier and protocol.
        save_dir: When given, the detectors trained on all pairs are saved there
            (see :func:`run_detection`).

    Returns:
        ``(results, skipped)``: one :class:`RunDetection` per feature set and usable run, and
        ``(run, reason)`` for runs that were skipped (fewer than 4 pairs).
    """
    outcome = run_detection(runs, options, save_dir, cross=False)
    return outcome.results, outcome.skipped
