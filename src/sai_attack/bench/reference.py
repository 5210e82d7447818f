"""torchattacks' ``PGDL2`` and ``PGD`` as references for the attack loop of I-FGM.

The references are run as a user would run them: on the pretrained network as its package builds
it (:func:`~sai_attack.models.zoo.load_plain_model`: BatchNorm layers, trainable parameters,
PyTorch's default layout, the same preprocessing), with the same images, batches, steps and
budget, no random start. They are also run on the very model I-FGM attacks (BatchNorm folded,
parameters frozen, the run's layout), which leaves only the loops' own costs to compare. Every
attack takes each batch in turn, so drifts of the machine's speed affect all alike.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sai_attack import data
from sai_attack.attacks import IFGM, epsilon
from sai_attack.models import ImageClassifier, load_plain_model
from sai_attack.models.layout import FLOOR_PASSES, forward_backward_times

logger = logging.getLogger(__name__)

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SAME_MODEL = " same model"
"""Suffix of a reference run on the model I-FGM attacks instead of the plain module."""
COUNTERPARTS = {"torchattacks.PGDL2": "ifgm", "torchattacks.PGD": "ifgm linf"}
"""Each reference and the attack of ours it computes (the same update rule and budget)."""
PAIRS = {
    "ifgm_over_pgdl2": ("ifgm", "torchattacks.PGDL2"),
    "ifgm_over_pgdl2_same_model": ("ifgm", "torchattacks.PGDL2" + SAME_MODEL),
    "ifgm_linf_over_pgd": ("ifgm linf", "torchattacks.PGD"),
    "ifgm_linf_over_pgd_same_model": ("ifgm linf", "torchattacks.PGD" + SAME_MODEL),
}
"""Reported ratios: our attack loop's time over the reference's (median of the repeats)."""


def load_batches(
    folder: Path, names: list[str], size: int, batch: int, device: torch.device
) -> list[torch.Tensor]:
    """The images ``names`` of ``folder`` at ``size`` x ``size``, in (B, 3, size, size) batches.

    Only plain names inside the folder are opened (a labels file may list others); unreadable
    images are skipped with a warning.
    """
    inputs = data.discover_inputs(folder)
    problems = inputs.labels.problems if inputs.labels else {}
    images = []
    for name in names:
        if name in problems or not data.is_plain_name(name):
            logger.warning("skipped %r: %s", name, problems.get(name, "not a plain file name"))
            continue
        try:
            images.append(data.resize_center_crop(data.load_image(inputs.root / name), size))
        except data.ImageLoadError as exc:
            logger.warning("skipped %r: %s", name, exc)
    return [data.to_tensor(images[i : i + batch]).to(device) for i in range(0, len(images), batch)]


def _attacks(
    torchattacks: Any,
    model: ImageClassifier,
    plain: ImageClassifier,
    delta: float,
    steps: int,
    shape: tuple[int, ...],
) -> dict[str, AttackFn]:
    eps_l2, eps_linf = epsilon(delta, shape, "l2"), epsilon(delta, shape, "linf")
    attacks: dict[str, AttackFn] = {
        "ifgm": IFGM(model, delta=delta, steps=steps),
        "ifgm linf": IFGM(model, delta=delta, steps=steps, norm="linf"),
    }
    for suffix, net in (("", plain), (SAME_MODEL, model)):
        attacks["torchattacks.PGDL2" + suffix] = torchattacks.PGDL2(
            net, eps=eps_l2, alpha=eps_l2 / steps, steps=steps, random_start=False
        )
        attacks["torchattacks.PGD" + suffix] = torchattacks.PGD(
            net, eps=eps_linf, alpha=eps_linf / steps, steps=steps, random_start=False
        )
    return attacks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_repeat(
    attacks: dict[str, AttackFn],
    model: ImageClassifier,
    batches: list[torch.Tensor],
    device: torch.device,
    gaps: dict[str, float],
) -> dict[str, float]:
    """Seconds per image of every attack over all batches; updates the largest output gaps."""
    totals = dict.fromkeys(attacks, 0.0)
    for x in batches:
        with torch.no_grad():
            y = model(x).argmax(1)
        outputs = {}
        for name, attack in attacks.items():
            _sync(device)
            t0 = time.perf_counter()
            out = attack(x, y)
            _sync(device)
            totals[name] += time.perf_counter() - t0
            outputs[name] = out
        for name, ours in COUNTERPARTS.items():  # the same attack on the same model: a check
            gap = float((outputs[name + SAME_MODEL] - outputs[ours]).abs().max()) * 255.0
            gaps[name] = max(gaps.get(name, 0.0), gap)
    n = sum(x.shape[0] for x in batches)
    return {name: total / n for name, total in totals.items()}


def reference_attacks(
    model: ImageClassifier,
    batches: list[torch.Tensor],
    settings: Any,
    repeats: int,
    device: torch.device,
) -> dict | None:
    """Attack-loop seconds per image of I-FGM (L2, L-infinity) and torchattacks' references.

    Args:
        model: The model the benchmarked methods attack.
        batches: The images, (B, 3, H, W) in [0, 1].
        settings: The run's :class:`~sai_attack.pipeline.AttackConfig` (model, weights,
            delta, steps; the L-infinity runs read delta as ``delta / 255``).
        repeats: Every attack runs this many times over all batches.
        device: Where the models run.

    Returns:
        None when torchattacks is not installed; else the images, each attack's median seconds
        per image, the ratios of :data:`PAIRS` (medians of the per-repeat ratios), the largest
        difference between our output and the same-model reference's (0-255 units, ``gap to
        ...``),
        and ``plain_floor``, the plain module's median forward+backward seconds per batch.
    """
    try:
        import torchattacks
    except ImportError:
        logger.info("torchattacks is not installed; skipping the PGDL2 and PGD references")
        return None
    if not batches:
        return None
    plain = load_plain_model(settings.model, settings.weights).to(device)
    attacks = _attacks(torchattacks, model, plain, settings.delta, settings.steps,
                       tuple(batches[0].shape[1:]))  # fmt: skip
    gaps: dict[str, float] = {}
    runs = [_one_repeat(attacks, model, batches, device, gaps) for _ in range(repeats)]
    result: dict[str, Any] = {"images": sum(x.shape[0] for x in batches), "repeats": repeats}
    result.update({name: statistics.median(r[name] for r in runs) for name in attacks})
    for key, (ours, theirs) in PAIRS.items():
        result[key] = statistics.median(r[ours] / r[theirs] for r in runs)
    result.update({f"gap to {name}{SAME_MODEL}": gap for name, gap in gaps.items()})
    # the median pass, as the floors of the layouts
    times = forward_backward_times(plain, torch.rand_like(batches[0]), FLOOR_PASSES)[0]
    result["plain_floor"] = statistics.median(times)
    return result
