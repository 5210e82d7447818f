"""The cross-attack matrix: a detector trained on run A, tested on run B, for every ordered pair.

It answers whether a detector trained on one attack (say I-FGM) catches another (SAI-FGM) at
all. The image split discipline of the protocol (:mod:`~sai_attack.detection.protocol`) is kept
across runs: for the pair (A, B), the stems (image names) that both runs attacked are split with
the same seeded :func:`~sai_attack.detection.protocol.pair_split` as the protocol; the detector
is trained on A's clean/adversarial pairs of the training stems and tested on B's pairs of the
test stems, so no test image (clean or adversarial, of either run) was seen in training. Where
the common stems are all of A's, in A's order, the splits are the protocol's own and A's
trained detectors are reused: the diagonal (A, A) is then exactly A's detection result.

Every cell carries the paper's accuracy 1 - (P_FA + P_MD)/2, AUC and TPR@5%FPR, means over
splits. A detector that never saw B's attack keeps its own threshold, so off the diagonal P_MD
(and accuracy) show how often the foreign attack passes; AUC shows whether its scores still
separate the classes with a better threshold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sai_attack.detection.feature_sets import FeatureSettings
from sai_attack.detection.protocol import (
    MIN_PAIRS,
    derive_seed,
    detector_params,
    fit_split,
    pair_split,
    split_result,
)
from sai_attack.detection.results import DetectionResult
from sai_attack.report import csv_text, markdown_table, number, percent
from sai_attack.runs import Run

logger = logging.getLogger(__name__)

CROSS_COLUMNS = (
    "features", "train_run", "test_run", "train_label", "test_label", "pairs", "n_train",
    "n_test", "accuracy", "std", "auc", "tpr_at_fpr", "p_fa", "p_md", "reused", "skipped",
)  # fmt: skip
"""The columns of ``cross_attack.csv``."""

Features = Callable[[Run], tuple[np.ndarray, np.ndarray]]
"""A run's (clean, adversarial) features, (N, D) each, rows in the order of ``run.items``."""


@dataclass
class CrossCell:
    """One cell: trained on ``train``, tested on ``test``.

    Attributes:
        settings: The feature set.
        train: The training run.
        test: The test run.
        result: Over splits (None when skipped).
        pairs: Stems common to both runs.
        reused: Whether the training run's protocol detectors were reused.
        skipped: Why the cell is empty ("" when computed).
    """

    settings: FeatureSettings
    train: Run
    test: Run
    result: DetectionResult | None
    pairs: int
    reused: bool = False
    skipped: str = ""


def _rows(run: Run) -> dict[str, int]:
    return {item.stem: i for i, item in enumerate(run.items)}


def cross_attack(
    runs: Sequence[Run],
    results: Sequence[DetectionResult],
    features: Features,
    settings: FeatureSettings,
    classifier: str,
    seed: int,
) -> list[CrossCell]:
    """The cross-attack matrix of one feature set, row by row (training run), in run order.

    Args:
        runs: The runs, each with its protocol result in ``results`` (same order).
        results: Their :class:`DetectionResult` with the splits' detectors.
        features: Gives a run's (clean, adversarial) features.
        settings: The feature set (recorded in the cells).
        classifier: The detector name (for detectors that must be trained anew).
        seed: The protocol seed.

    Returns:
        ``len(runs) ** 2`` cells, ``cells[i * len(runs) + j]`` trained on run i, tested on j.
    """
    rows = [_rows(r) for r in runs]
    cells: list[CrossCell] = []
    for a, (train_run, train_result) in enumerate(zip(runs, results, strict=True)):
        splits, train_fraction = len(train_result.splits), train_result.train_fraction
        own = list(rows[a])
        for b, test_run in enumerate(runs):
            stems = [s for s in own if s in rows[b]]
            if len(stems) < MIN_PAIRS:
                reason = f"only {len(stems)} images in common (need {MIN_PAIRS})"
                cells.append(
                    CrossCell(settings, train_run, test_run, None, len(stems), False, reason)
                )
                continue
            reuse = stems == own and len(train_result.detectors) == splits
            a_clean, a_adv = features(train_run) if not reuse else (None, None)
            b_clean, b_adv = features(test_run)
            a_rows = np.array([rows[a][s] for s in stems])
            b_rows = np.array([rows[b][s] for s in stems])
            out = []
            for k in range(splits):
                t0 = time.perf_counter()
                train, test = pair_split(len(stems), train_fraction, seed, k)
                if reuse:
                    det = train_result.detectors[k]
                else:
                    pairs = (a_clean[a_rows[train]], a_adv[a_rows[train]])
                    det = fit_split(classifier, {}, pairs, derive_seed(seed, "classifier", k))
                scores = (
                    det.decision_function(b_clean[b_rows[test]]),
                    det.decision_function(b_adv[b_rows[test]]),
                )
                seconds = time.perf_counter() - t0
                out.append(split_result(k, len(train), scores, seconds, detector_params(det)))
            result = DetectionResult(classifier, out, train_fraction, seed)
            cells.append(CrossCell(settings, train_run, test_run, result, len(stems), reuse))
            logger.info(
                "cross-attack %s: trained on %s, tested on %s: accuracy %.1f%%, AUC %.3f",
                settings.features, train_run.name, test_run.name,
                100 * result.accuracy, result.auc,
            )  # fmt: skip
    return cells


def cross_row(cell: CrossCell, label: Callable[[Run], str]) -> dict:
    """The ``cross_attack.csv`` row of a cell (rates in [0, 1])."""
    res = cell.result
    row = {
        "features": cell.settings.features,
        "train_run": cell.train.name,
        "test_run": cell.test.name,
        "train_label": label(cell.train),
        "test_label": label(cell.test),
        "pairs": cell.pairs,
        "reused": int(cell.reused),
        "skipped": cell.skipped,
    }
    if res is not None:
        row.update(
            n_train=res.n_train,
            n_test=res.n_test,
            accuracy=number(res.accuracy),
            std=number(res.std),
            auc=number(res.auc),
            tpr_at_fpr=number(res.tpr_at_fpr),
            p_fa=number(res.p_fa),
            p_md=number(res.p_md),
        )
    return row


def cross_csv(cells: Sequence[CrossCell], label: Callable[[Run], str]) -> str:
    """``cross_attack.csv``: one row per cell, every feature set."""
    return csv_text(CROSS_COLUMNS, [cross_row(c, label) for c in cells])


def cross_record(cells: Sequence[CrossCell]) -> list[dict]:
    """JSON-ready cells (without the per-split ROC points)."""
    return [
        {
            "features": c.settings.features,
            "train_run": c.train.name,
            "test_run": c.test.name,
            "pairs": c.pairs,
            "reused": c.reused,
            "skipped": c.skipped or None,
            "accuracy": None if c.result is None else c.result.accuracy,
            "auc": None if c.result is None else c.result.auc,
            "tpr_at_fpr": None if c.result is None else c.result.tpr_at_fpr,
            "p_fa": None if c.result is None else c.result.p_fa,
            "p_md": None if c.result is None else c.result.p_md,
        }
        for c in cells
    ]


def matrix(cells: Sequence[CrossCell]) -> tuple[list[Run], dict[tuple[int, int], CrossCell]]:
    """The runs of one feature set's cells (in order) and the cells by ``(id(train), id(test))``.

    Keyed by identity, not name: two run folders may share a name.
    """
    runs = list({id(c.train): c.train for c in cells}.values())
    return runs, {(id(c.train), id(c.test)): c for c in cells}


def cross_markdown(cells: Sequence[CrossCell], label: Callable[[Run], str]) -> str:
    """One feature set's matrix: rows trained on, columns tested on; accuracy % / AUC."""
    runs, by_name = matrix(cells)
    head = ["trained on \\ tested on", *[label(r) for r in runs]]
    body = []
    for a in runs:
        line = [label(a)]
        for b in runs:
            res = by_name[(id(a), id(b))].result
            line.append(
                "n/a" if res is None else f"{percent(res.accuracy, 1)} / {number(res.auc, 3)}"
            )
        body.append(line)
    return "\n".join(markdown_table(head, body)) + "\n"
