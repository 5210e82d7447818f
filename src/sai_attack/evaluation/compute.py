"""The evaluation loop: predictions of every model on every defended clean and adversarial image.

Each model is loaded once, each image decoded once per run (one image per DataLoader task, grouped
into batches like the attack pipeline), every defense applied to whole batches, and clean
predictions cached per (clean image, seed, model, defense) across runs. Randomised defenses are
seeded per image from its name, so results do not depend on the batch size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from sai_attack import data, options, parallel
from sai_attack.defenses import Defense, NoDefense, parse_defenses
from sai_attack.evaluation.protocol import EvaluationError, method_of
from sai_attack.evaluation.targets import Target, load_targets
from sai_attack.pipeline.loading import worker_batches
from sai_attack.report import none_if_nan
from sai_attack.runs import Run, RunItem, read_runs
from sai_attack.runs.layout import check_output_folder
from sai_attack.runtime import image_seed, resolve_device

logger = logging.getLogger(__name__)

# (image index, target name, defense spec) -> (clean prediction, adversarial prediction)
Records = dict[tuple[int, str, str], tuple[int, int]]
# (clean image key, seed, target name, defense spec) -> clean prediction
CleanCache = dict[tuple[str, str, str, str], int]


@dataclass
class _Pair:
    """The decoded clean and adversarial image of one item, or why they could not be used."""

    index: int
    clean: np.ndarray | None
    adv: np.ndarray | None
    clean_key: str = ""
    error: str | None = None


def _relative(path: Path) -> str:
    """``images/<stem>.png`` or ``clean/<stem>.png``: a run folder's file, for messages."""
    return f"{path.parent.name}/{path.name}"


def _size(image: np.ndarray | tuple[int, ...]) -> str:
    """``WxH`` of an (H, W, 3) image or shape."""
    shape = image.shape if isinstance(image, np.ndarray) else image
    return f"{shape[1]}x{shape[0]}"


class _PairDataset(Dataset):
    """Decodes the clean and adversarial PNG of every item (in worker processes)."""

    def __init__(self, items: Sequence[RunItem], indices: Sequence[int]) -> None:
        self.items = list(items)
        self.indices = list(indices)  # the share of the items this process evaluates

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> _Pair:
        index = self.indices[position]
        item = self.items[index]
        images = []
        for path in (item.clean, item.adversarial):
            try:
                images.append(data.load_image(path))
            except data.ImageLoadError as exc:
                return _Pair(index, None, None, error=f"{_relative(path)}: {exc}")
        clean, adv = images
        if clean.shape != adv.shape:
            error = f"its clean image is {_size(clean)} and its adversarial image {_size(adv)}"
            return _Pair(index, None, None, error=error)
        digest = hashlib.sha256(clean.tobytes()).hexdigest()[:32]
        return _Pair(index, clean, adv, clean_key=f"{clean.shape}:{digest}")


def _run_shape(run: Run) -> tuple[int, ...] | None:
    """The (H, W, 3) shape of the run's saved images, from its recorded image size."""
    size = run.record.number("image_size")
    if size is None or not size.is_integer() or size < 1:
        return None  # unrecorded (or tampered): the first decoded pair decides
    return (int(size), int(size), 3)


def _check_shapes(batch: list[_Pair], shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """Mark the pairs whose images are not of the run's size; returns that size.

    A run's images all have its attack resolution; a pair of another size (a replaced file)
    could not be batched with the others, so it is left out with the reason.
    """
    for p in batch:
        if p.error is not None or p.clean is None:
            continue
        if shape is None:
            shape = p.clean.shape
        elif p.clean.shape != shape:
            p.error = f"its images are {_size(p.clean)}, the run's are {_size(shape)}"
    return shape


def _leave_out(run: Run, left_out: list[tuple[str, str]]) -> None:
    """Log the images of ``run`` that could not be evaluated and add them to ``run.missing``.

    ``run.missing`` is what ``evaluation.json`` counts as the run's left-out images; an image
    already there (a second evaluation of the same run) is not added twice.
    """
    for image, reason in left_out:
        logger.warning("%s: %s left out: %s", run.name, image, reason)
        line = f"{image}: {reason}"
        if line not in run.missing:
            run.missing.append(line)


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

    runs: list[Run]
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


def _setting(defense: Defense, target: Target, run: Run) -> str:
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
    runs: Sequence[Run],
    targets: Sequence[Target],
    defenses: Sequence[Defense | str],
    batch_size: int = options.default("batch_size"),
    device: str | torch.device = options.default("device"),
    workers: int = 0,
    seed: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    ctx: parallel.DistContext | None = None,
) -> Evaluation:
    """Measure success rates for every (run, model, defense).

    Under ``torchrun`` (``ctx`` distributed) every rank evaluates its share of each run's images
    and the predictions are gathered, so every rank ends with the same complete result.

    Args:
        runs: Run folders (:func:`sai_attack.runs.read_runs`).
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

    Raises:
        ValueError: A bad ``batch_size``, ``workers`` or defense spec.
        EvaluationError: No target.
    """
    started = time.perf_counter()
    ctx = ctx or parallel.DistContext()
    batch_size = options.check("batch_size", batch_size)
    workers = options.check("workers", workers)
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    chosen = parse_defenses([NoDefense(), *defenses])
    if not targets:
        raise EvaluationError("no model to evaluate on")
    for t in targets:
        t.model.to(dev).eval()
    result = Evaluation(list(runs), list(targets), chosen, seed=seed)
    clean_cache: CleanCache = {}
    total = sum(len(r.items) for r in runs)
    done = 0
    for run in runs:
        records: Records = {}
        left_out: list[tuple[str, str]] = []
        shape = _run_shape(run)
        mine = ctx.shard(list(range(len(run.items))), batch_size)
        for batch in worker_batches(_PairDataset(run.items, mine), batch_size, workers):
            shape = _check_shapes(batch, shape)
            good = [p for p in batch if p.error is None]
            left_out += [(run.items[p.index].image, p.error) for p in batch if p.error]
            if good:
                _evaluate_batch(run, good, result, clean_cache, records, dev, batch_size)
            done += len(batch)
            if on_batch is not None:
                on_batch(done, total)
        if ctx.distributed:
            records = {k: v for part in ctx.gather(records) for k, v in part.items()}
            left_out = [pair for part in ctx.gather(left_out) for pair in part]
        _leave_out(run, left_out)
        _collect(run, result, records)
    result.seconds = time.perf_counter() - started
    return result


def _evaluate_batch(
    run: Run,
    pairs: list[_Pair],
    result: Evaluation,
    clean_cache: CleanCache,
    records: Records,
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


def _prediction(
    run: Run, item: RunItem, target: Target, defense: Defense, preds: tuple[int, int]
) -> dict:
    """The ``predictions.csv`` row of one image, model and defense."""
    clean_pred, adv_pred = preds
    correct = clean_pred == item.reference
    success = adv_pred == item.target if run.targeted else adv_pred != item.reference
    return {
        "run": run.name,
        "image": item.image,
        "model": target.name,
        "defense": defense.spec,
        "label": item.reference,
        "target": "" if item.target is None else item.target,
        "clean_pred": clean_pred,
        "adv_pred": adv_pred,
        "clean_correct": int(correct),
        "success": int(success),
    }


def _collect(run: Run, result: Evaluation, records: Records) -> None:
    evaluated = sorted({k[0] for k in records})
    images = len(evaluated)
    for t in result.targets:
        for d in result.defenses:
            predictions = [
                _prediction(run, run.items[i], t, d, records[(i, t.name, d.spec)])
                for i in evaluated
            ]
            result.predictions += predictions
            n = sum(p["clean_correct"] for p in predictions)
            successes = sum(p["clean_correct"] and p["success"] for p in predictions)
            result.rows.append(
                {
                    "run": run.name,
                    "method": method_of(run),
                    "delta": run.delta,
                    "delta_eff": none_if_nan(run.mean_delta_eff, 4),
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
                    "attack_model": run.model,
                    "targeted": run.targeted,
                    "labels": run.label_source,
                }
            )


def evaluate_folders(
    run_dirs: Sequence[str | os.PathLike],
    models: Sequence[str] | Mapping[str, nn.Module] | None = None,
    defenses: Sequence[str | Defense] = (),
    label_offset: int | str = "auto",
    batch_size: int = options.default("batch_size"),
    device: str = options.default("device"),
    workers: int = 0,
    seed: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    out: str | os.PathLike | None = None,
) -> Evaluation:
    """Read runs, load models and defenses, then :func:`evaluate` (sharded under ``torchrun``).

    Every argument is checked before any model is loaded or image decoded, the output folder
    ``out`` too: it must not be, contain or lie inside a run folder.

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
        out: The folder the results will be written to (:func:`write_evaluation`), if any.

    Returns:
        The :class:`Evaluation`.

    Raises:
        RunFolderError: A folder is not a usable run folder.
        RunError: ``out`` is, contains or lies inside a run folder.
    """
    chosen = parse_defenses(defenses)
    dev = resolve_device(device)
    runs = read_runs(run_dirs)
    if out is not None:
        check_output_folder(out, [r.path for r in runs], "run folder")
    ctx = parallel.context(dev)
    dev = ctx.device(dev)
    if isinstance(models, Mapping):
        targets = [Target(name=n, spec=n, model=m) for n, m in models.items()]
    else:
        targets = load_targets(models, runs, dev, label_offset)
    return evaluate(runs, targets, chosen, batch_size, dev, workers, seed, on_batch, ctx)
