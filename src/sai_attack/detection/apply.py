"""A saved detector applied to run folders (clean and adversarial images) or image folders.

Run folders are read with :func:`sai_attack.runs.read_run`; ``detect --apply`` writes the
results with :func:`sai_attack.detection.reports.write_apply_outputs`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.detection.classifiers import Detector
from sai_attack.detection.features import FeatureCache, FeatureExtractor, FeatureSettings
from sai_attack.detection.protocol import error_rates
from sai_attack.detection.runs import run_features
from sai_attack.runs import Run, RunLayout, read_run


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
