"""Steganalysis detection on run folders: pairs, one detector per run, tables, saved detectors.

A run folder (see :mod:`sai_attack.pipeline`) pairs every adversarial image
``images/<stem>.png`` with its preprocessed clean input ``clean/<stem>.png``. Only rows of
``results.csv`` with status ``ok`` whose two files exist are used; the adversarial file is the
row's ``output`` column and the clean file has the same name in ``clean/``.

The results are written as ``detection.csv``, ``detection.json`` and ``detection.md``, the last in
the layout of Table 2 of Dong et al. (CVPR 2020): one row per attack (method and merge beta), one
column per delta, detection accuracy in percent.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.attacks import METHOD_NAMES
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
    derive_seed,
    error_rates,
    evaluate_pairs,
    protocol_text,
)
from sai_attack.pipeline import STATUS_OK, read_results

logger = logging.getLogger(__name__)

METHOD_ORDER = tuple(METHOD_NAMES)
SUPERPIXEL_METHODS = ("sa-fgm", "sai-fgm", "m-sai-fgm")

DETECTION_COLUMNS = (
    "run", "method", "delta", "delta_eff", "features", "n_train", "n_test", "accuracy", "std",
    "p_fa", "p_md", "label", "merge_beta", "superpixel", "color", "classifier", "splits",
)  # fmt: skip
PREDICTION_COLUMNS = ("folder", "image", "kind", "score", "predicted")


class RunFolderError(ValueError):
    """A folder is not a usable run folder (the message says why)."""


# --------------------------------------------------------------------------------------------
# Reading run folders
# --------------------------------------------------------------------------------------------


@dataclass
class RunPairs:
    """The clean/adversarial pairs of one run folder and what the run was.

    Attributes:
        path: The run folder.
        name: Its folder name.
        method: Attack method (CLI name), or ``""`` when unknown.
        delta: Perturbation scale delta, or ``None`` when unknown.
        merge_beta: Merge threshold beta of superpixel methods, else ``None``.
        superpixel: Superpixel algorithm of superpixel methods, else ``None``.
        stems: Image stems, one per pair.
        clean: Clean image files.
        adversarial: Adversarial image files.
        delta_eff: Per-pair delta_eff (L2 / sqrt(N)) from results.csv (NaN when missing).
        labels: Per-pair ground-truth label (``None`` when unknown).
        clean_pred: Per-pair clean prediction.
        config: The run's attack configuration (``summary.json`` or ``run.json``).
        model: The model name of the run.
    """

    path: Path
    name: str
    method: str = ""
    delta: float | None = None
    merge_beta: float | None = None
    superpixel: str | None = None
    stems: list[str] = field(default_factory=list)
    clean: list[Path] = field(default_factory=list)
    adversarial: list[Path] = field(default_factory=list)
    delta_eff: list[float] = field(default_factory=list)
    labels: list[int | None] = field(default_factory=list)
    clean_pred: list[int | None] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    model: str = ""

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def mean_delta_eff(self) -> float:
        """Mean delta_eff over the pairs (NaN when unknown)."""
        values = [v for v in self.delta_eff if not math.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    @property
    def label(self) -> str:
        """The row label of Table 2: ``I-FGM``, ``SAI-FGM (β=2)``, ``SAI-FGM (LSC, β=0)``."""
        name = METHOD_NAMES.get(self.method, self.method or self.name)
        if self.method in SUPERPIXEL_METHODS:
            parts = []
            if self.superpixel and self.superpixel != "slic":
                parts.append(self.superpixel.upper())
            if self.merge_beta is not None:
                parts.append(f"β={self.merge_beta:g}")
            if parts:
                name += f" ({', '.join(parts)})"
        return name

    def subset(self, stems: set[str]) -> RunPairs:
        """The pairs whose stem is in ``stems`` (same order)."""
        keep = [i for i, s in enumerate(self.stems) if s in stems]
        out = RunPairs(**{**self.__dict__})
        for attr in ("stems", "clean", "adversarial", "delta_eff", "labels", "clean_pred"):
            setattr(out, attr, [getattr(self, attr)[i] for i in keep])
        return out


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_run(run_dir: str | os.PathLike) -> RunPairs:
    """Read the pairs and the configuration of a run folder.

    Args:
        run_dir: A folder written by ``sai-attack attack``.

    Returns:
        The :class:`RunPairs` (possibly empty when no row is usable).

    Raises:
        RunFolderError: When the folder or its ``results.csv`` does not exist.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunFolderError(f"run folder {str(path)!r} does not exist")
    results = path / "results.csv"
    if not results.is_file():
        raise RunFolderError(f"{str(path)!r} is not a run folder (no results.csv)")
    summary = _read_json(path / "summary.json")
    record = _read_json(path / "run.json")
    config = summary.get("config") or record.get("config") or {}
    params = summary.get("parameters") or record.get("attack") or {}
    method = str(summary.get("method") or config.get("method") or "")
    delta = params.get("delta", config.get("delta"))
    run = RunPairs(
        path=path,
        name=path.resolve().name,
        method=method,
        delta=float(delta) if isinstance(delta, int | float) else None,
        config=config,
        model=str(summary.get("model") or record.get("model") or config.get("model") or ""),
    )
    if method in SUPERPIXEL_METHODS:
        beta = params.get("merge_beta", config.get("merge_beta"))
        run.merge_beta = float(beta) if isinstance(beta, int | float) else None
        run.superpixel = params.get("superpixel", config.get("superpixel"))
    missing = 0
    for row in read_results(results):
        if row.get("status") != STATUS_OK or not row.get("output"):
            continue
        output = Path(row["output"])
        if output.is_absolute() or ".." in output.parts:
            logger.warning("%s: ignoring row with unsafe output path %r", path, row["output"])
            continue
        adv, clean = path / output, path / "clean" / output.name
        if not (adv.is_file() and clean.is_file()):
            missing += 1
            continue
        run.stems.append(output.stem)
        run.adversarial.append(adv)
        run.clean.append(clean)
        try:
            run.delta_eff.append(float(row.get("delta_eff") or "nan"))
        except ValueError:
            run.delta_eff.append(float("nan"))
        run.labels.append(_int_or_none(row.get("label")))
        run.clean_pred.append(_int_or_none(row.get("clean_pred")))
    if missing:
        logger.warning("%s: %d ok rows lack their clean or adversarial file", path, missing)
    return run


# --------------------------------------------------------------------------------------------
# Detection on runs
# --------------------------------------------------------------------------------------------


@dataclass
class RunDetection:
    """The detection result of one run."""

    run: RunPairs
    result: DetectionResult
    settings: FeatureSettings
    extraction: ExtractionStats
    seconds_train: float

    def row(self) -> dict:
        """The ``detection.csv`` row."""
        r = self.result
        return {
            "run": self.run.name,
            "method": self.run.method,
            "delta": "" if self.run.delta is None else f"{self.run.delta:g}",
            "delta_eff": fmt_number(self.run.mean_delta_eff),
            "features": self.settings.features,
            "n_train": r.n_train,
            "n_test": r.n_test,
            "accuracy": fmt_number(r.accuracy),
            "std": fmt_number(r.std),
            "p_fa": fmt_number(r.p_fa),
            "p_md": fmt_number(r.p_md),
            "label": self.run.label,
            "merge_beta": "" if self.run.merge_beta is None else f"{self.run.merge_beta:g}",
            "superpixel": self.run.superpixel or "",
            "color": self.settings.color,
            "classifier": r.classifier,
            "splits": len(r.splits),
        }

    def describe(self) -> dict:
        """JSON-ready record with per-split details."""
        return {
            "run": self.run.name,
            "path": str(self.run.path),
            "method": self.run.method,
            "label": self.run.label,
            "delta": self.run.delta,
            "merge_beta": self.run.merge_beta,
            "superpixel": self.run.superpixel,
            "model": self.run.model,
            "pairs": len(self.run),
            "delta_eff": _none_if_nan(self.run.mean_delta_eff),
            "detection": self.result.describe(),
            "features": self.extraction.describe(),
            "seconds_train": round(self.seconds_train, 3),
        }


def fmt_number(value: float | None, digits: int = 4) -> str:
    """A number for CSV/Markdown: fixed digits, empty for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


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
        from sai_attack.detection.protocol import check_protocol

        self.settings = FeatureSettings(self.features, self.color)
        make_detector(self.classifier)
        check_protocol(self.splits, self.train_fraction)
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"--seed must lie in 0..2^63-1, got {self.seed}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")

    def cache(self) -> FeatureCache:
        """The feature cache (disabled when ``cache_dir`` is None)."""
        return FeatureCache(self.cache_dir)


def run_features(
    fx: FeatureExtractor, run: RunPairs
) -> tuple[np.ndarray, np.ndarray, ExtractionStats]:
    """Clean and adversarial features (N, D) of a run's pairs, and the extraction numbers."""
    clean, stats = fx.extract(run.clean)
    adversarial, more = fx.extract(run.adversarial)
    stats.add(more)
    return clean, adversarial, stats


def detect_runs(
    runs: Sequence[RunPairs],
    options: DetectionOptions,
    save_dir: str | os.PathLike | None = None,
) -> tuple[list[RunDetection], list[tuple[str, str]]]:
    """Train and test one detector per run.

    Args:
        runs: The runs (read with :func:`read_run`).
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
                run.label,
                100 * result.accuracy,
                100 * result.p_fa,
                100 * result.p_md,
                result.n_test,
            )
            results.append(RunDetection(run, result, options.settings, extraction, seconds))
            if save_dir is not None:
                detector = make_detector(options.classifier).fit(
                    clean, adversarial, seed=derive_seed(options.seed, "final")
                )
                info = {
                    "run": run.name,
                    "run_path": str(run.path),
                    "method": run.method,
                    "delta": run.delta,
                    "merge_beta": run.merge_beta,
                    "pairs": len(run),
                    "trained_on": "all pairs of the run",
                    "seed": options.seed,
                }
                save_detector(Path(save_dir) / f"{run.name}.json", detector, options.settings, info)
    return results, skipped


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def csv_text(columns: Sequence[str], rows: Sequence[dict]) -> str:
    """CSV text with a header; missing keys are empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    return buf.getvalue()


def _row_labels(results: Sequence[RunDetection]) -> list[str]:
    """Table 2 row labels, made unique with the run name where two runs would share a cell."""
    labels = [r.run.label for r in results]
    cells: dict[tuple[str, float | None], int] = {}
    for label, r in zip(labels, results, strict=True):
        cells[(label, r.run.delta)] = cells.get((label, r.run.delta), 0) + 1
    return [
        f"{label} [{r.run.name}]" if cells[(label, r.run.delta)] > 1 else label
        for label, r in zip(labels, results, strict=True)
    ]


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def table2_markdown(results: Sequence[RunDetection]) -> str:
    """Detection accuracy (%) with methods as rows and delta as columns (paper Table 2)."""
    if not results:
        return "(no runs)\n"
    labels = _row_labels(results)
    deltas = sorted({r.run.delta for r in results if r.run.delta is not None})
    has_unknown = any(r.run.delta is None for r in results)
    columns: list[float | None] = [*deltas, *([None] if has_unknown else [])]

    def order(item: tuple[str, RunDetection]) -> tuple:
        label, r = item
        m = r.run.method
        rank = METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER)
        beta = -1.0 if r.run.merge_beta is None else r.run.merge_beta
        return (rank, r.run.superpixel or "", beta, label)

    rows: dict[str, dict[float | None, RunDetection]] = {}
    for label, r in sorted(zip(labels, results, strict=True), key=order):
        rows.setdefault(label, {})[r.run.delta] = r
    head = ["Generation method", *[("δ = ?" if d is None else f"δ = {d:g}") for d in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, cells in rows.items():
        values = []
        for d in columns:
            r = cells.get(d)
            if r is None:
                values.append("")
            elif math.isnan(r.result.std):
                values.append(_pct(r.result.accuracy))
            else:
                values.append(f"{_pct(r.result.accuracy)} ± {_pct(r.result.std)}")
        lines.append("| " + " | ".join([label, *values]) + " |")
    return "\n".join(lines) + "\n"


def details_markdown(results: Sequence[RunDetection]) -> str:
    """One line per run: pairs, delta_eff, accuracy, std, P_FA, P_MD, classifier parameters."""
    head = (
        "| run | attack | δ | δ_eff | pairs (train/test) | accuracy % | std % | P_FA % | P_MD % |"
    )
    lines = [head, "|" + " --- |" * 9]
    for r in results:
        res = r.result
        delta = "" if r.run.delta is None else f"{r.run.delta:g}"
        lines.append(
            f"| {r.run.name} | {r.run.label} | {delta} | {fmt_number(r.run.mean_delta_eff, 3)} | "
            f"{res.n_train}/{res.n_test} | {_pct(res.accuracy)} | {_pct(res.std)} | "
            f"{_pct(res.p_fa)} | {_pct(res.p_md)} |"
        )
    return "\n".join(lines) + "\n"


def detection_report(
    results: Sequence[RunDetection],
    options: DetectionOptions,
    skipped: Sequence[tuple[str, str]] = (),
) -> str:
    """The full Markdown report: Table 2 analogue, per-run details and the protocol."""
    s = options.settings
    classifier = {"fld": "FLD ensemble (Kodovsky et al. 2012)", "logreg": "logistic regression"}
    parts = [
        "# Steganalysis-based detection (Dong et al. 2020, Table 2 layout)\n",
        f"Detection accuracy (%) = 1 - P_E, mean ± std over {options.splits} split(s); "
        f"features: {s.features.upper()} ({s.color}, {s.dim}-D), classifier: "
        f"{classifier.get(options.classifier, options.classifier)}. Lower is better for the "
        "attack.\n",
        table2_markdown(results),
        "## Runs\n",
        details_markdown(results),
        "## Protocol\n",
        protocol_text(options.splits, options.train_fraction) + "\n",
    ]
    if skipped:
        parts.append("## Skipped\n")
        parts.append("\n".join(f"- {name}: {reason}" for name, reason in skipped) + "\n")
    return "\n".join(parts)


def write_detection_outputs(
    out: str | os.PathLike,
    results: Sequence[RunDetection],
    options: DetectionOptions,
    skipped: Sequence[tuple[str, str]] = (),
    versions: dict | None = None,
) -> dict[str, Path]:
    """Write ``detection.csv``, ``detection.md`` and ``detection.json`` into ``out``.

    Returns:
        The paths written, by kind.
    """
    out = Path(out)
    paths = {
        "csv": out / "detection.csv",
        "md": out / "detection.md",
        "json": out / "detection.json",
    }
    data.atomic_write_text(paths["csv"], csv_text(DETECTION_COLUMNS, [r.row() for r in results]))
    data.atomic_write_text(paths["md"], detection_report(results, options, skipped))
    total = ExtractionStats()
    for r in results:
        total.add(r.extraction)
    record = {
        "protocol": protocol_text(options.splits, options.train_fraction),
        "settings": {
            **options.settings.describe(),
            "classifier": options.classifier,
            "splits": options.splits,
            "train_fraction": options.train_fraction,
            "seed": options.seed,
            "workers": options.workers,
            "cache_dir": None if options.cache_dir is None else str(options.cache_dir),
        },
        "runs": [r.describe() for r in results],
        "skipped": [{"run": n, "reason": why} for n, why in skipped],
        "feature_extraction": total.describe(),
        "versions": versions or {},
    }
    data.atomic_write_text(
        paths["json"], json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    )
    return paths


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
        run: The run's pairs (run folders).
    """

    folder: Path
    is_run: bool
    rows: list[dict]
    p_fa: float = float("nan")
    p_md: float = float("nan")
    flagged: float = float("nan")
    run: RunPairs | None = None

    @property
    def accuracy(self) -> float:
        """1 - (P_FA + P_MD)/2 (run folders)."""
        return 1.0 - 0.5 * (self.p_fa + self.p_md)


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
    """
    out = []
    with FeatureExtractor(settings, workers, cache) as fx:
        for folder in map(Path, folders):
            if (folder / "results.csv").is_file():
                run = read_run(folder)
                clean, adversarial, _ = run_features(fx, run)
                s_clean = detector.decision_function(clean) if len(run) else np.zeros(0)
                s_adv = detector.decision_function(adversarial) if len(run) else np.zeros(0)
                p_clean, p_adv = (s_clean > 0).astype(int), (s_adv > 0).astype(int)
                p_fa, p_md = error_rates(p_clean, p_adv)
                rows = [
                    _prediction_row(folder, p, "clean", s)
                    for p, s in zip(run.clean, s_clean, strict=True)
                ] + [
                    _prediction_row(folder, p, "adversarial", s)
                    for p, s in zip(run.adversarial, s_adv, strict=True)
                ]
                flagged = float(np.mean(np.concatenate([p_clean, p_adv]))) if len(run) else math.nan
                out.append(ApplyResult(folder, True, rows, p_fa, p_md, flagged, run))
            elif folder.is_dir():
                paths = sorted(
                    p
                    for p in folder.iterdir()
                    if p.is_file()
                    and p.name.lower().endswith(data.IMAGE_EXTENSIONS)
                    and not p.name.startswith(".")
                )
                feats, _ = fx.extract(paths)
                scores = detector.decision_function(feats) if paths else np.zeros(0)
                rows = [
                    _prediction_row(folder, p, "unknown", s)
                    for p, s in zip(paths, scores, strict=True)
                ]
                flagged = float(np.mean(scores > 0)) if paths else float("nan")
                out.append(ApplyResult(folder, False, rows, flagged=flagged))
            else:
                raise FileNotFoundError(f"folder {str(folder)!r} does not exist")
    return out


def _prediction_row(folder: Path, path: Path, kind: str, score: float) -> dict:
    return {
        "folder": str(folder),
        "image": str(path.relative_to(folder)),
        "kind": kind,
        "score": f"{score:.6f}",
        "predicted": "adversarial" if score > 0 else "clean",
    }


def apply_report(model_path: str, info: dict, results: Sequence[ApplyResult]) -> str:
    """Markdown summary of :func:`apply_detector`."""
    trained = info.get("run", "?")
    lines = [
        "# Saved detector applied\n",
        f"Detector {model_path} (trained on run {trained}, {info.get('pairs', '?')} pairs).\n",
        "| folder | kind | images | flagged % | accuracy % | P_FA % | P_MD % |",
        "|" + " --- |" * 7,
    ]
    for r in results:
        kind = "run" if r.is_run else "images"
        acc = _pct(r.accuracy) if r.is_run else ""
        pfa = _pct(r.p_fa) if r.is_run else ""
        pmd = _pct(r.p_md) if r.is_run else ""
        lines.append(
            f"| {r.folder} | {kind} | {len(r.rows)} | {_pct(r.flagged)} | {acc} | {pfa} | {pmd} |"
        )
    return "\n".join(lines) + "\n"


def write_apply_outputs(
    out: str | os.PathLike, model_path: str, info: dict, results: Sequence[ApplyResult]
) -> dict[str, Path]:
    """Write ``predictions.csv``, ``detection.md`` and ``detection.json`` for an applied detector.

    Returns:
        The paths written, by kind.
    """
    out = Path(out)
    paths = {
        "csv": out / "predictions.csv",
        "md": out / "detection.md",
        "json": out / "detection.json",
    }
    rows = [row for r in results for row in r.rows]
    data.atomic_write_text(paths["csv"], csv_text(PREDICTION_COLUMNS, rows))
    data.atomic_write_text(paths["md"], apply_report(model_path, info, results))
    record = {
        "model": model_path,
        "model_info": info,
        "folders": [
            {
                "folder": str(r.folder),
                "is_run": r.is_run,
                "images": len(r.rows),
                "flagged": _none_if_nan(r.flagged),
                "accuracy": _none_if_nan(r.accuracy) if r.is_run else None,
                "p_fa": _none_if_nan(r.p_fa),
                "p_md": _none_if_nan(r.p_md),
            }
            for r in results
        ],
    }
    data.atomic_write_text(
        paths["json"], json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    )
    return paths
