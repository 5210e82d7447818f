"""Steganalysis detection on run folders: one detector per run, and saved detectors applied.

A run folder is read with :func:`sai_attack.runs.read_run` (``require_items=False``: a run with
too few pairs is reported as skipped, not refused); every item pairs the adversarial image
``images/<stem>.png`` with its preprocessed clean input ``clean/<stem>.png``. The tables and
files these results are written to (Table 2 of Dong et al., CVPR 2020) are made by
:mod:`~sai_attack.detection.reports`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sai_attack import data, options
from sai_attack.attacks import ATTACKS, METHOD_NAMES
from sai_attack.detection.classifiers import Detector, make_detector, save_detector
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
    error_rates,
    evaluate_pairs,
)
from sai_attack.options import Option
from sai_attack.runs import Run, RunLayout, read_run

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
    if algorithm and algorithm != options.default("superpixel"):
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
    """Settings of ``sai-attack detect``, checked on construction."""

    features: str = "spam"
    color: str = "rgb"
    classifier: str = "fld"
    splits: int = 5
    train_fraction: float = 0.5
    seed: int = 0
    workers: int = 0
    cache_dir: str | os.PathLike | None = None  # None: no cache

    def __post_init__(self) -> None:
        self.settings = FeatureSettings(self.features, self.color)
        make_detector(self.classifier)
        check_protocol(self.splits, self.train_fraction)
        SEED.check(self.seed)
        WORKERS.check(self.workers)

    def cache(self) -> FeatureCache:
        """The feature cache (disabled when ``cache_dir`` is None)."""
        return FeatureCache(self.cache_dir)


def run_features(fx: FeatureExtractor, run: Run) -> tuple[np.ndarray, np.ndarray, ExtractionStats]:
    """Clean and adversarial features (N, D) of a run's pairs, and the extraction numbers."""
    clean, stats = fx.extract([item.clean for item in run.items])
    adversarial, more = fx.extract([item.adversarial for item in run.items])
    stats.add(more)
    return clean, adversarial, stats


def _save_final_detector(
    save_dir: str | os.PathLike,
    run: Run,
    clean: np.ndarray,
    adversarial: np.ndarray,
    options: DetectionOptions,
) -> None:
    """Train a detector on all pairs of ``run`` and save it as ``save_dir/<run>.json``."""
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
    save_detector(Path(save_dir) / f"{run.name}.json", detector, options.settings, info)


def detect_runs(
    runs: Sequence[Run],
    options: DetectionOptions,
    save_dir: str | os.PathLike | None = None,
) -> tuple[list[RunDetection], list[tuple[str, str]]]:
    """Train and test one detector per run.

    Args:
        runs: The runs (read with :func:`sai_attack.runs.read_run`).
        options: Features, classifier and protocol.
        save_dir: When given, a detector trained on all pairs of each run is saved there as
            ``<run>.json`` + ``<run>.npz`` (see :func:`sai_attack.detection.save_detector`).

    Returns:
        ``(results, skipped)``: one :class:`RunDetection` per usable run, and ``(run, reason)``
        for runs that were skipped (fewer than 4 pairs).
    """
    results: list[RunDetection] = []
    skipped: list[tuple[str, str]] = []
    pool = None
    if options.workers > 1 and options.splits > 1 and options.classifier == "fld":
        # FLD training dominates (seconds per split); the splits are independent.
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(min(options.workers, options.splits), mp_context=ctx)
    with contextlib.ExitStack() as stack:
        if pool is not None:
            stack.callback(pool.shutdown)
        fx = stack.enter_context(
            FeatureExtractor(options.settings, options.workers, options.cache())
        )
        for run in runs:
            if len(run) < MIN_PAIRS:
                reason = f"only {len(run)} clean/adversarial pairs (need {MIN_PAIRS})"
                logger.warning("skipping %s: %s", run.path, reason)
                skipped.append((run.name, reason))
                continue
            clean, adversarial, extraction = run_features(fx, run)
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
                "%s: %s detection accuracy %.1f%% (P_FA %.1f%%, P_MD %.1f%%) on %d test pairs",
                run.name,
                run_label(run),
                100 * result.accuracy,
                100 * result.p_fa,
                100 * result.p_md,
                result.n_test,
            )
            results.append(RunDetection(run, result, options.settings, extraction, seconds))
            if save_dir is not None:
                _save_final_detector(save_dir, run, clean, adversarial, options)
    return results, skipped


# --------------------------------------------------------------------------------------------
# Applying a saved detector
# --------------------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    """A saved detector applied to one folder.

    Attributes:
        folder: The folder.
        is_run: Whether it is a run folder (clean and adversarial images known).
        rows: ``predictions.csv`` rows.
        p_fa: False-alarm rate on the clean images (run folders), else NaN.
        p_md: Missed-detection rate on the adversarial images (run folders), else NaN.
        flagged: Fraction of the images flagged adversarial (plain folders: of all images).
        run: The run (run folders).
    """

    folder: Path
    is_run: bool
    rows: list[dict]
    p_fa: float = float("nan")
    p_md: float = float("nan")
    flagged: float = float("nan")
    run: Run | None = None

    @property
    def accuracy(self) -> float:
        """1 - (P_FA + P_MD)/2 (run folders)."""
        return 1.0 - 0.5 * (self.p_fa + self.p_md)


def _prediction_row(folder: Path, path: Path, kind: str, score: float) -> dict:
    return {
        "folder": str(folder),
        "image": str(path.relative_to(folder)),
        "kind": kind,
        "score": f"{score:.6f}",
        "predicted": "adversarial" if score > 0 else "clean",
    }


def _apply_to_run(detector: Detector, fx: FeatureExtractor, folder: Path) -> ApplyResult:
    """Scores of the clean and the adversarial images of a run folder, and the error rates."""
    run = read_run(folder, require_items=False)
    clean, adversarial, _ = run_features(fx, run)
    s_clean = detector.decision_function(clean) if len(run) else np.zeros(0)
    s_adv = detector.decision_function(adversarial) if len(run) else np.zeros(0)
    p_clean, p_adv = (s_clean > 0).astype(int), (s_adv > 0).astype(int)
    p_fa, p_md = error_rates(p_clean, p_adv)
    rows = [
        _prediction_row(folder, item.clean, "clean", s)
        for item, s in zip(run.items, s_clean, strict=True)
    ] + [
        _prediction_row(folder, item.adversarial, "adversarial", s)
        for item, s in zip(run.items, s_adv, strict=True)
    ]
    flagged = float(np.mean(np.concatenate([p_clean, p_adv]))) if len(run) else math.nan
    return ApplyResult(folder, True, rows, p_fa, p_md, flagged, run)


def _apply_to_images(detector: Detector, fx: FeatureExtractor, folder: Path) -> ApplyResult:
    """Scores of the images of a plain folder and the fraction flagged adversarial."""
    paths = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.lower().endswith(data.IMAGE_EXTENSIONS)
        and not p.name.startswith(".")
    )  # fmt: skip
    feats, _ = fx.extract(paths)
    scores = detector.decision_function(feats) if paths else np.zeros(0)
    rows = [_prediction_row(folder, p, "unknown", s) for p, s in zip(paths, scores, strict=True)]
    flagged = float(np.mean(scores > 0)) if paths else float("nan")
    return ApplyResult(folder, False, rows, flagged=flagged)


def apply_detector(
    detector: Detector,
    settings: FeatureSettings,
    folders: Sequence[str | os.PathLike],
    workers: int = 0,
    cache: FeatureCache | None = None,
) -> list[ApplyResult]:
    """Apply a saved detector to run folders (clean + adversarial) or plain image folders.

    Args:
        detector: The fitted detector.
        settings: The features it was trained on.
        folders: Run folders (with ``results.csv``) or folders of images.
        workers: Feature-extraction worker processes.
        cache: The feature cache.

    Returns:
        One :class:`ApplyResult` per folder.

    Raises:
        FileNotFoundError: A folder does not exist.
    """
    out = []
    with FeatureExtractor(settings, workers, cache) as fx:
        for folder in map(Path, folders):
            if RunLayout(folder).results.is_file():
                out.append(_apply_to_run(detector, fx, folder))
            elif folder.is_dir():
                out.append(_apply_to_images(detector, fx, folder))
            else:
                raise FileNotFoundError(f"folder {str(folder)!r} does not exist")
    return out
