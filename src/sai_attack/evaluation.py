"""Success of saved adversarial examples under models x defenses: the engine of ``evaluate``.

Dong et al. (CVPR 2020) measure attack ability (Sec. 4.1, Table 1: white-box and black-box success
rates) and robustness to image-processing defenses (Sec. 4.2, Table 3 and Figures 4-6: gray-box
success rates). This module measures both on run folders written by ``sai-attack attack``:

* every (run, model, defense) gets a success rate over the images whose *clean* version, after the
  same defense, the model classifies correctly; that count ``n`` is reported next to every rate
  (the paper keeps "robust images which can be classified correctly after image processing");
* success is measured on the saved 8-bit PNG ``images/<stem>.png`` (never on float tensors):
  untargeted runs succeed when the prediction differs from the label, targeted runs when it
  equals the target;
* each model is loaded once, each image decoded once per run, every defense applied to whole
  batches, and clean predictions are cached per (clean image, model, defense), across runs;
* randomised defenses (TVM) are seeded per image from the image name, so results are
  deterministic and independent of the batch size.

Outputs (:func:`write_evaluation`): ``evaluation.csv`` (tidy rows), ``evaluation.json``,
``evaluation.md`` (tables in the layout of the paper's Tables 1 and 3), ``predictions.csv`` (one
row per image, model and defense) and ``plots/*.png`` (success rate against the parameter of every
swept defense, one line per run, like Figures 4-6).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sai_attack import data, parallel
from sai_attack.attacks import METHOD_NAMES
from sai_attack.defenses import Defense, NoDefense, parse_defenses
from sai_attack.models import load_target, split_target_spec
from sai_attack.pipeline import (
    STATUS_OK,
    image_seed,
    library_versions,
    read_results,
    resolve_device,
)

logger = logging.getLogger(__name__)

PROTOCOL = {
    "success_rate": "for every (run, model, defense): successes / n, where n is the number of the "
    "run's images whose clean version (RUN_DIR/clean/<stem>.png), after the defense, the model "
    "classifies correctly (prediction == label); n is reported next to every rate",
    "success": "untargeted runs: the model's prediction on the defended adversarial image "
    "(RUN_DIR/images/<stem>.png, the saved 8-bit PNG) differs from the label; targeted runs: it "
    "equals the target class",
    "label": "the label column of results.csv (ground truth); where it is empty (a run without "
    "labels), the attack model's clean prediction (clean_pred), i.e. the class the attack "
    "attacked, so that for another model 'correct' means 'agrees with the attacked model'",
    "settings": "white-box: the attack's own model without defense; black-box: another model "
    "without defense; gray-box: any defense (unknown to the attacker)",
    "defenses": "applied in pixel space to the decoded 8-bit images at their saved size, before "
    "the model's own resizing and normalisation, identically to the clean and the adversarial "
    "image; randomised defenses (tvm) use one seed per image, derived from the image name and "
    "--seed, for both",
    "images": "rows of results.csv with status ok whose images/ and clean/ files exist",
}

RESULT_COLUMNS = (
    "run", "method", "delta", "delta_eff", "model", "defense", "param", "spec", "setting", "n",
    "successes", "success_rate", "images", "clean_accuracy", "attack_model", "targeted",
    "labels",
)  # fmt: skip
PREDICTION_COLUMNS = (
    "run", "image", "model", "defense", "label", "target", "clean_pred", "adv_pred",
    "clean_correct", "success",
)  # fmt: skip
POOLING = {"avgpool": "AVG", "maxpool": "MAX"}


class EvaluationError(ValueError):
    """A run folder cannot be evaluated (not a run folder, no usable images, ...)."""


# --------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunItem:
    """One attacked image of a run folder."""

    image: str
    stem: str
    label: int
    target: int | None
    label_from_prediction: bool
    delta_eff: float | None


@dataclass
class RunInfo:
    """What the evaluation needs from a run folder.

    Attributes:
        path: The folder.
        name: Display name, unique among the evaluated runs.
        method: Attack method (``summary.json``).
        attack_model: The attacked model's name.
        attack_weights: Its weights file, if any.
        delta: The perturbation scale delta.
        targeted: Whether the run is targeted.
        items: The usable images.
        skipped: Rows of ``results.csv`` whose status is not ``ok``.
        missing: Images whose adversarial or clean file is missing.
    """

    path: Path
    name: str
    method: str
    attack_model: str
    attack_weights: str | None
    delta: float | None
    targeted: bool
    items: list[RunItem] = field(default_factory=list)
    skipped: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def mean_delta_eff(self) -> float:
        """Mean effective perturbation size delta_eff = ||r||_2 / sqrt(N) over the items."""
        values = [it.delta_eff for it in self.items if it.delta_eff is not None]
        return float(np.mean(values)) if values else float("nan")

    @property
    def label_source(self) -> str:
        """``labels``, ``clean prediction`` or ``mixed``: where the reference classes came from."""
        from_pred = sum(it.label_from_prediction for it in self.items)
        if from_pred == 0:
            return "labels"
        return "clean prediction" if from_pred == len(self.items) else "mixed"

    def describe(self) -> dict:
        """For ``evaluation.json``."""
        return {
            "name": self.name,
            "path": str(self.path),
            "method": self.method,
            "attack_model": self.attack_model,
            "attack_weights": self.attack_weights,
            "delta": self.delta,
            "mean_delta_eff": _round(self.mean_delta_eff),
            "targeted": self.targeted,
            "images": len(self.items),
            "skipped_rows": self.skipped,
            "missing_files": len(self.missing),
            "labels": self.label_source,
        }


def _int_or_none(text: str | None) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return {}
    return value if isinstance(value, dict) else {}


def load_run(path: str | os.PathLike, name: str | None = None) -> RunInfo:
    """Read a run folder's ``results.csv`` and ``summary.json`` (or ``run.json``).

    Args:
        path: The run folder.
        name: Display name (default: the folder name).

    Returns:
        The :class:`RunInfo`.

    Raises:
        FileNotFoundError: The folder does not exist.
        EvaluationError: No ``results.csv``, or no usable image in it.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {str(folder)!r} does not exist")
    results = folder / "results.csv"
    if not results.is_file():
        raise EvaluationError(
            f"{str(folder)!r} is not a run folder: results.csv is missing "
            "(run 'sai-attack attack ... --out DIR' first)"
        )
    summary = _read_json(folder / "summary.json")
    record = _read_json(folder / "run.json")
    config = summary.get("config") or record.get("config") or {}
    parameters = summary.get("parameters") or record.get("attack") or {}
    delta = parameters.get("delta", config.get("delta"))
    info = RunInfo(
        path=folder,
        name=name or folder.resolve().name,
        method=str(summary.get("method") or config.get("method") or "unknown"),
        attack_model=str(summary.get("model") or record.get("model") or config.get("model") or ""),
        attack_weights=config.get("weights"),
        delta=float(delta) if isinstance(delta, (int, float)) else None,
        targeted=bool(parameters.get("targeted", config.get("targeted", False))),
    )
    for row in read_results(results):
        if row.get("status") != STATUS_OK:
            info.skipped += 1
            continue
        output = (row.get("output") or "").strip()
        stem = Path(output).stem if output else data.safe_stem(row["image"])
        if (
            not (folder / "images" / f"{stem}.png").is_file()
            or not (folder / "clean" / f"{stem}.png").is_file()
        ):
            info.missing.append(row["image"])
            continue
        label = _int_or_none(row.get("label"))
        clean_pred = _int_or_none(row.get("clean_pred"))
        if label is None and clean_pred is None:
            info.missing.append(row["image"])
            continue
        target = _int_or_none(row.get("target"))
        if info.targeted and target is None:
            info.missing.append(row["image"])
            continue
        info.items.append(
            RunItem(
                image=row["image"],
                stem=stem,
                label=label if label is not None else clean_pred,  # type: ignore[arg-type]
                target=target,
                label_from_prediction=label is None,
                delta_eff=_float_or_none(row.get("delta_eff")),
            )
        )
    if info.missing:
        logger.warning(
            "%s: %d image(s) without their images/ or clean/ file (or label) are left out: %s",
            info.name,
            len(info.missing),
            ", ".join(info.missing[:5]) + (", ..." if len(info.missing) > 5 else ""),
        )
    if not info.items:
        raise EvaluationError(f"run folder {str(folder)!r} has no usable attacked image")
    return info


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.resolve().name or "run"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def load_runs(paths: Sequence[str | os.PathLike]) -> list[RunInfo]:
    """Load several run folders, giving them unique display names."""
    folders = [Path(p) for p in paths]
    if not folders:
        raise EvaluationError("no run folder given")
    return [load_run(p, n) for p, n in zip(folders, _unique_names(folders), strict=True)]


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    """A model to evaluate on.

    Attributes:
        name: Display name (the ``model`` column).
        spec: The spec it was loaded from.
        model: Callable on (B, 3, H, W) images in [0, 1], returning (B, classes) scores.
    """

    name: str
    spec: str
    model: nn.Module

    def describe(self) -> dict:
        """For ``evaluation.json``."""
        extra = self.model.describe() if hasattr(self.model, "describe") else {}
        return {
            "name": self.name,
            "spec": self.spec,
            "input_size": getattr(self.model, "input_size", None),
            **{k: v for k, v in extra.items() if k != "name"},
        }

    def is_attack_model(self, run: RunInfo) -> bool:
        """Whether this is the model ``run`` attacked (white-box)."""
        base = split_target_spec(self.spec)[0]
        return run.attack_model in (base, self.name)


def load_targets(
    specs: Sequence[str] | None,
    runs: Sequence[RunInfo],
    device: str | torch.device = "cpu",
    label_offset: int | str = "auto",
) -> list[Target]:
    """Load the models to evaluate on, each once.

    Args:
        specs: Target specs (see :func:`~sai_attack.models.load_target`); ``None`` means the
            models the runs attacked (with their weights).
        runs: The runs, for the default.
        device: Where PyTorch models run.
        label_offset: Default label offset of deployed models.

    Returns:
        The targets, with unique display names, in order.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    if specs is None:
        pairs: list[tuple[str, str | None]] = []
        for run in runs:
            if not run.attack_model:
                raise EvaluationError(f"run {run.name!r} does not name its model; pass --models")
            pair = (run.attack_model, run.attack_weights)
            if pair not in pairs:
                pairs.append(pair)
        loaded = [(name, load_target(name, weights, device)) for name, weights in pairs]
    else:
        unique = list(dict.fromkeys(s.strip() for s in specs if s.strip()))
        if not unique:
            raise EvaluationError("--models is empty")
        loaded = [(s, load_target(s, device=device, label_offset=label_offset)) for s in unique]
    targets: list[Target] = []
    for spec, model in loaded:
        base = getattr(model, "name", None) or split_target_spec(spec)[0]
        name, k = base, 2
        while any(t.name == name for t in targets):
            name, k = f"{base}#{k}", k + 1
        targets.append(Target(name=name, spec=spec, model=model.eval()))
    return targets


# --------------------------------------------------------------------------------------------
# The evaluation loop
# --------------------------------------------------------------------------------------------


@dataclass
class _Pair:
    index: int
    clean: np.ndarray | None
    adv: np.ndarray | None
    clean_key: str = ""
    error: str | None = None


class _PairDataset(Dataset):
    """Decodes the clean and adversarial PNG of every item (in worker processes)."""

    def __init__(self, folder: Path, items: Sequence[RunItem], indices: Sequence[int]) -> None:
        self.folder = folder
        self.items = list(items)
        self.indices = list(indices)  # the share of the items this process evaluates

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> _Pair:
        index = self.indices[position]
        item = self.items[index]
        try:
            clean = data.load_image(self.folder / "clean" / f"{item.stem}.png")
            adv = data.load_image(self.folder / "images" / f"{item.stem}.png")
        except data.ImageLoadError as exc:
            return _Pair(index, None, None, error=str(exc))
        if clean.shape != adv.shape:
            return _Pair(
                index, None, None, error=f"clean {clean.shape} and adversarial {adv.shape} differ"
            )
        digest = hashlib.sha256(clean.tobytes()).hexdigest()[:32]
        return _Pair(index, clean, adv, clean_key=f"{clean.shape}:{digest}")


def _collate(pairs: list[_Pair]) -> list[_Pair]:
    return pairs


@dataclass
class Evaluation:
    """The results of :func:`evaluate`.

    Attributes:
        runs: The evaluated runs.
        targets: The models.
        defenses: The defenses (``none`` first).
        rows: One dict per (run, model, defense), keys :data:`RESULT_COLUMNS`.
        predictions: One dict per (run, image, model, defense), keys :data:`PREDICTION_COLUMNS`.
        seed: Seed of randomised defenses.
        seconds: Wall time.
    """

    runs: list[RunInfo]
    targets: list[Target]
    defenses: list[Defense]
    rows: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)
    seed: int = 0
    seconds: float = 0.0

    def row(self, run: str, model: str, defense: str) -> dict:
        """The result row of (run name, model name, defense spec)."""
        for r in self.rows:
            if (r["run"], r["model"], r["spec"]) == (run, model, defense):
                return r
        raise KeyError((run, model, defense))


def _setting(defense: Defense, target: Target, run: RunInfo) -> str:
    if not isinstance(defense, NoDefense):
        return "gray-box"
    return "white-box" if target.is_attack_model(run) else "black-box"


def _argmax(model: nn.Module, images: torch.Tensor, batch_size: int) -> list[int]:
    preds: list[int] = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            preds += model(images[i : i + batch_size]).argmax(dim=1).tolist()
    return preds


def evaluate(
    runs: Sequence[RunInfo],
    targets: Sequence[Target],
    defenses: Sequence[Defense | str],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    workers: int = 0,
    seed: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    ctx: parallel.DistContext | None = None,
) -> Evaluation:
    """Measure success rates for every (run, model, defense).

    Under ``torchrun`` (``ctx`` distributed) every rank evaluates its share of each run's images
    and the predictions are gathered, so every rank ends with the same complete result.

    Args:
        runs: Run folders (:func:`load_runs`).
        targets: Models (:func:`load_targets`).
        defenses: Defenses or specs (sweeps allowed); ``none`` is always evaluated, first.
        batch_size: Images per batch; results do not depend on it.
        device: Where images, defenses and PyTorch models run.
        workers: Processes decoding PNG files (0: in this process).
        seed: Seed of randomised defenses; image i's seed is ``image_seed(seed, name)``.
        on_batch: Called with (images done, images total) after every batch.
        ctx: The distributed context (default: from the environment, single process).

    Returns:
        The :class:`Evaluation`.
    """
    started = time.perf_counter()
    ctx = ctx or parallel.DistContext()
    if batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {batch_size}")
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    chosen = parse_defenses([NoDefense(), *defenses])
    if not targets:
        raise EvaluationError("no model to evaluate on")
    for t in targets:
        t.model.to(dev).eval()
    result = Evaluation(list(runs), list(targets), chosen, seed=seed)
    clean_cache: dict[tuple[str, str, str, str], int] = {}
    total = sum(len(r.items) for r in runs)
    done = 0
    for run in runs:
        # records[(image index, target name, defense spec)] = (clean_pred, adv_pred)
        records: dict[tuple[int, str, str], tuple[int, int]] = {}
        mine = ctx.shard(list(range(len(run.items))), batch_size)
        loader = DataLoader(
            _PairDataset(run.path, run.items, mine),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers if len(mine) > batch_size else 0,
            collate_fn=_collate,
        )
        for batch in loader:
            good = [p for p in batch if p.error is None]
            for p in batch:
                if p.error is not None:
                    logger.warning(
                        "%s: %s left out: %s", run.name, run.items[p.index].image, p.error
                    )
            if good:
                _evaluate_batch(run, good, result, clean_cache, records, dev, batch_size)
            done += len(batch)
            if on_batch is not None:
                on_batch(done, total)
        if ctx.distributed:
            records = {k: v for part in ctx.gather(records) for k, v in part.items()}
        _collect(run, result, records)
    result.seconds = time.perf_counter() - started
    return result


def _evaluate_batch(
    run: RunInfo,
    pairs: list[_Pair],
    result: Evaluation,
    clean_cache: dict[tuple[str, str, str, str], int],
    records: dict[tuple[int, str, str], tuple[int, int]],
    dev: torch.device,
    batch_size: int,
) -> None:
    items = [run.items[p.index] for p in pairs]
    clean = data.to_tensor([p.clean for p in pairs]).to(dev)  # (B, 3, H, W)
    adv = data.to_tensor([p.adv for p in pairs]).to(dev)  # (B, 3, H, W)
    seeds = [image_seed(result.seed, it.image) for it in items]
    for defense in result.defenses:
        # Clean images whose prediction is not cached yet for some model (seeded like the
        # adversarial image, so the cache key includes the seed).
        keys = [(p.clean_key, str(s)) for p, s in zip(pairs, seeds, strict=True)]
        need = [
            i
            for i, k in enumerate(keys)
            if any((*k, t.name, defense.spec) not in clean_cache for t in result.targets)
        ]
        inputs = torch.cat([clean[need], adv]) if need else adv
        input_seeds = [seeds[i] for i in need] + seeds
        defended = defense(inputs, seeds=input_seeds)
        for t in result.targets:
            preds = _argmax(t.model, defended, batch_size)
            for j, i in enumerate(need):
                clean_cache[(*keys[i], t.name, defense.spec)] = preds[j]
            adv_preds = preds[len(need) :]
            for i, p in enumerate(pairs):
                clean_pred = clean_cache[(*keys[i], t.name, defense.spec)]
                records[(p.index, t.name, defense.spec)] = (clean_pred, adv_preds[i])


def _collect(
    run: RunInfo, result: Evaluation, records: dict[tuple[int, str, str], tuple[int, int]]
) -> None:
    evaluated = sorted({k[0] for k in records})
    for t in result.targets:
        for d in result.defenses:
            n = successes = 0
            for index in evaluated:
                item = run.items[index]
                clean_pred, adv_pred = records[(index, t.name, d.spec)]
                correct = clean_pred == item.label
                success = adv_pred == item.target if run.targeted else adv_pred != item.label
                n += correct
                successes += correct and success
                result.predictions.append(
                    {
                        "run": run.name,
                        "image": item.image,
                        "model": t.name,
                        "defense": d.spec,
                        "label": item.label,
                        "target": "" if item.target is None else item.target,
                        "clean_pred": clean_pred,
                        "adv_pred": adv_pred,
                        "clean_correct": int(correct),
                        "success": int(success),
                    }
                )
            images = len(evaluated)
            result.rows.append(
                {
                    "run": run.name,
                    "method": run.method,
                    "delta": run.delta,
                    "delta_eff": _round(run.mean_delta_eff, 4),
                    "model": t.name,
                    "defense": d.name,
                    "param": d.param,
                    "spec": d.spec,
                    "setting": _setting(d, t, run),
                    "n": n,
                    "successes": successes,
                    "success_rate": successes / n if n else float("nan"),
                    "images": images,
                    "clean_accuracy": n / images if images else float("nan"),
                    "attack_model": run.attack_model,
                    "targeted": run.targeted,
                    "labels": run.label_source,
                }
            )


def evaluate_folders(
    run_dirs: Sequence[str | os.PathLike],
    models: Sequence[str] | Mapping[str, nn.Module] | None = None,
    defenses: Sequence[str | Defense] = (),
    label_offset: int | str = "auto",
    batch_size: int = 16,
    device: str = "cpu",
    workers: int = 0,
    seed: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Load runs, models and defenses, then :func:`evaluate` (sharded under ``torchrun``).

    Every argument is checked before any model is loaded or image decoded.

    Args:
        run_dirs: Run folders.
        models: Target specs, a mapping of display name to ready model, or ``None`` for the
            models the runs attacked.
        defenses: Defense specs (sweeps allowed) or objects.
        label_offset: Default label offset of deployed models.
        batch_size: Images per batch.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        workers: PNG-decoding processes.
        seed: Seed of randomised defenses.
        on_batch: Progress callback.

    Returns:
        The :class:`Evaluation`.
    """
    chosen = parse_defenses(defenses)
    dev = resolve_device(device)
    ctx = parallel.context(dev)
    dev = ctx.device(dev)
    runs = load_runs(run_dirs)
    if isinstance(models, Mapping):
        targets = [Target(name=n, spec=n, model=m) for n, m in models.items()]
    else:
        targets = load_targets(models, runs, dev, label_offset)
    return evaluate(runs, targets, chosen, batch_size, dev, workers, seed, on_batch, ctx)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return value


def results_csv(evaluation: Evaluation) -> str:
    """``evaluation.csv``: one tidy row per (run, model, defense)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in evaluation.rows:
        writer.writerow({k: _csv_value(row[k]) for k in RESULT_COLUMNS})
    return buf.getvalue()


def predictions_csv(evaluation: Evaluation) -> str:
    """``predictions.csv``: one row per (run, image, model, defense)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PREDICTION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(evaluation.predictions)
    return buf.getvalue()


def results_json(evaluation: Evaluation) -> str:
    """``evaluation.json``: protocol, runs, models, defenses and the rows."""
    rows = [
        {k: (_round(v) if isinstance(v, float) else v) for k, v in row.items()}
        for row in evaluation.rows
    ]
    record = {
        "protocol": PROTOCOL,
        "runs": [r.describe() for r in evaluation.runs],
        "models": [t.describe() for t in evaluation.targets],
        "defenses": [
            {
                "spec": d.spec,
                "name": d.name,
                "parameter": d.param_name,
                "value": d.param,
                "description": d.description,
            }
            for d in evaluation.defenses
        ],
        "seed": evaluation.seed,
        "results": rows,
        "seconds": round(evaluation.seconds, 3),
        "versions": library_versions(),
    }
    return json.dumps(record, indent=2, default=_json_default) + "\n"


def _json_default(value: object) -> object:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def _cell(row: dict | None, star: bool = False) -> str:
    if row is None:
        return ""
    rate = row["success_rate"]
    text = "n/a" if not math.isfinite(rate) else f"{100 * rate:.1f}"
    return f"{text}{'*' if star else ''} (n={row['n']})"


def _run_label(run: RunInfo) -> str:
    method = METHOD_NAMES.get(run.method, run.method)
    delta = "" if run.delta is None else f", δ={run.delta:g}"
    return f"{run.name} ({method}{delta})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    escape = [[str(c).replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(escape[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in escape[1:]]
    return lines


def _swept(evaluation: Evaluation) -> dict[str, list[Defense]]:
    groups: dict[str, list[Defense]] = {}
    for d in evaluation.defenses:
        if d.param_name is not None:
            groups.setdefault(d.name, []).append(d)
    return {k: sorted(v, key=lambda d: d.param) for k, v in groups.items() if len(v) > 1}


def attack_ability_table(evaluation: Evaluation) -> list[str]:
    """Table 1 layout: success without defense, runs x models, * on the white-box model."""
    header = ["Attack", *[t.name for t in evaluation.targets]]
    rows = []
    for run in evaluation.runs:
        cells = [_run_label(run)]
        for t in evaluation.targets:
            cells.append(_cell(evaluation.row(run.name, t.name, "none"), t.is_attack_model(run)))
        rows.append(cells)
    return _table(header, rows)


def defense_table(evaluation: Evaluation, target: Target) -> list[str]:
    """Runs x defenses on one model (the layout of the paper's Table 4)."""
    header = ["Attack", *[d.spec for d in evaluation.defenses]]
    rows = [
        [_run_label(run)]
        + [_cell(evaluation.row(run.name, target.name, d.spec)) for d in evaluation.defenses]
        for run in evaluation.runs
    ]
    return _table(header, rows)


def pooling_table(evaluation: Evaluation, target: Target) -> list[str]:
    """Table 3 layout: (operation, threshold, method) x kernel size, on one model."""
    pools = [d for d in evaluation.defenses if d.name in POOLING]
    kernels = sorted({d.param for d in pools})
    header = ["Operation", "Threshold", "Attack method", *[f"k={k}" for k in kernels]]
    rows = []
    for op, label in POOLING.items():
        present = {d.param: d for d in pools if d.name == op}
        if not present:
            continue
        runs = sorted(evaluation.runs, key=lambda r: (r.delta is None, r.delta or 0.0))
        for run in runs:
            threshold = "" if run.delta is None else f"{run.delta:g}√N"
            cells = [label, threshold, f"{run.name} ({METHOD_NAMES.get(run.method, run.method)})"]
            for k in kernels:
                d = present.get(k)
                cells.append(_cell(evaluation.row(run.name, target.name, d.spec)) if d else "")
            rows.append(cells)
    return _table(header, rows)


def sweep_table(evaluation: Evaluation, target: Target, sweep: Sequence[Defense]) -> list[str]:
    """Runs x parameter values of one swept defense, on one model."""
    header = ["Attack", *[f"{d.param_name}={d.param:g}" for d in sweep]]
    rows = [
        [_run_label(run)] + [_cell(evaluation.row(run.name, target.name, d.spec)) for d in sweep]
        for run in evaluation.runs
    ]
    return _table(header, rows)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def plot_name(defense: str, target: Target) -> str:
    """File name of the sweep plot of ``defense`` on ``target`` under ``plots/``."""
    return f"{_slug(defense)}_{_slug(target.name)}.png"


def results_markdown(evaluation: Evaluation, plots: bool = True) -> str:
    """``evaluation.md``: protocol, runs, and tables in the layout of the paper's tables."""
    lines = [
        "# Evaluation of adversarial examples under models and defenses",
        "",
        "Protocol:",
        "",
        *[f"- {key}: {text}." for key, text in PROTOCOL.items()],
        "",
        "Cells: attack success rate in % (n = images whose defended clean version the model "
        "classifies correctly); `*` marks the white-box model of the run; n/a: n = 0.",
        "",
        "## Runs",
        "",
    ]
    lines += _table(
        ["Run", "Method", "Attack model", "δ", "mean δ_eff", "Images", "Labels", "Folder"],
        [
            [
                r.name,
                METHOD_NAMES.get(r.method, r.method),
                r.attack_model,
                "" if r.delta is None else f"{r.delta:g}",
                "" if math.isnan(r.mean_delta_eff) else f"{r.mean_delta_eff:.3f}",
                str(len(r.items)),
                r.label_source,
                str(r.path),
            ]
            for r in evaluation.runs
        ],
    )
    lines += [
        "",
        "## Attack ability: white-box and black-box (layout of Table 1)",
        "",
        "Success rate without defense.",
        "",
    ]
    lines += attack_ability_table(evaluation)
    if len(evaluation.defenses) > 1:
        for t in evaluation.targets:
            lines += ["", f"## Robustness to defenses (gray-box) on {t.name}", ""]
            lines += defense_table(evaluation, t)
    if any(d.name in POOLING for d in evaluation.defenses):
        for t in evaluation.targets:
            lines += ["", f"## Pooling on {t.name} (layout of Table 3)", ""]
            lines += pooling_table(evaluation, t)
    for name, sweep in _swept(evaluation).items():
        for t in evaluation.targets:
            lines += ["", f"## Sweep of {name} on {t.name}", ""]
            lines += sweep_table(evaluation, t, sweep)
            if plots:
                lines += ["", f"![{name} on {t.name}](plots/{plot_name(name, t)})"]
    return "\n".join(lines) + "\n"


def sweep_plot(evaluation: Evaluation, target: Target, sweep: Sequence[Defense]) -> bytes:
    """PNG of success rate against the swept parameter, one line per run (Figures 4-6)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = [float(d.param) for d in sweep]
    for run in evaluation.runs:
        ys = [100.0 * evaluation.row(run.name, target.name, d.spec)["success_rate"] for d in sweep]
        ax.plot(xs, ys, marker="o", markersize=3, label=_run_label(run))
    ax.set_xlabel(f"{sweep[0].name} {sweep[0].param_name}")
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{sweep[0].name} on {target.name}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_evaluation(evaluation: Evaluation, out: str | os.PathLike) -> dict[str, Path]:
    """Write every output file into ``out`` (atomically); returns them by kind."""
    folder = Path(out)
    files = {
        "csv": folder / "evaluation.csv",
        "json": folder / "evaluation.json",
        "markdown": folder / "evaluation.md",
        "predictions": folder / "predictions.csv",
    }
    data.atomic_write_text(files["csv"], results_csv(evaluation))
    data.atomic_write_text(files["json"], results_json(evaluation))
    data.atomic_write_text(files["markdown"], results_markdown(evaluation))
    data.atomic_write_text(files["predictions"], predictions_csv(evaluation))
    for name, sweep in _swept(evaluation).items():
        for t in evaluation.targets:
            path = folder / "plots" / plot_name(name, t)
            data.atomic_write_bytes(path, sweep_plot(evaluation, t, sweep))
            files[f"plot:{name}:{t.name}"] = path
    return files
