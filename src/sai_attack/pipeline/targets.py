"""Where a targeted run's targets come from: the labels file, a seeded draw, or the clean logits.

``target_mode`` names the source. ``labels`` reads the ``target`` column of the labels CSV;
``random`` draws, per image, a class other than the true one (the clean prediction when the
image has no label) from a generator seeded by :func:`sai_attack.runtime.image_seed`, so a
target depends on the run seed and the image name only, never on the batch; ``least-likely``
takes the class with the lowest clean logit other than the true one. The choice is made on the
clean pass of each batch and written to the ``target`` column of ``results.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sai_attack import options
from sai_attack.data import LabelTable
from sai_attack.runtime import RunError, image_seed

logger = logging.getLogger(__name__)

TARGET_MODES = ("labels", "random", "least-likely")
"""Sources of targets: the labels file, a seeded draw, the lowest clean logit."""
options.register_choices("target_mode", TARGET_MODES)

FROM_FILE = TARGET_MODES[0]
"""The mode that reads targets from the labels file (the default)."""


def check_target_mode(config: Any) -> None:
    """Refuse a target mode other than the labels file on an untargeted run.

    Raises:
        ValueError: ``target_mode`` chooses targets but ``targeted`` is False.
    """
    if config.target_mode != FROM_FILE and not config.targeted:
        raise ValueError(f"target_mode {config.target_mode!r} needs targeted=True")


def check_target_source(config: Any, labels: LabelTable | None) -> None:
    """Make sure a run's targets have a source, before any image is attacked.

    A labels file with targets is only a warning on an untargeted run: the same folder serves
    untargeted and targeted runs.

    Raises:
        RunError: ``targeted`` with ``target_mode`` labels, and no target in the labels file.
    """
    has_targets = labels is not None and bool(labels.targets)
    if not config.targeted:
        if has_targets:
            logger.warning("labels file has a target column; it is ignored without targeted")
        return
    if config.target_mode == FROM_FILE and not has_targets:
        others = " or ".join(repr(m) for m in TARGET_MODES if m != FROM_FILE)
        raise RunError(
            f"targeted with target_mode {FROM_FILE!r} needs a labels CSV with a 'target' "
            f"column; set target_mode to {others} to choose targets without one"
        )


def choose_targets(
    mode: str,
    logits: torch.Tensor,
    reference: Sequence[int],
    names: Sequence[str],
    seed: int,
    given: Mapping[str, int],
) -> torch.Tensor:
    """The target class of each image of a batch.

    Args:
        mode: A name of :data:`TARGET_MODES`.
        logits: (B, K) clean logits.
        reference: The true class of each image (the clean prediction where it has no label):
            never chosen as a target.
        names: The input names (they seed the random draw).
        seed: The run seed.
        given: Targets from the labels file by input name (mode ``labels``).

    Returns:
        (B,) int64 target classes on the device of ``logits``.
    """
    if mode == FROM_FILE:
        chosen = [given[n] for n in names]
    elif mode == "random":
        classes = int(logits.shape[1])
        chosen = []
        for name, true in zip(names, reference, strict=True):
            # Uniform over the classes other than the true one: draw among K-1, skip past it.
            k = int(np.random.default_rng(image_seed(seed, name)).integers(classes - 1))
            chosen.append(k + (k >= true))
    else:  # least-likely
        scores = logits.detach().float().clone()
        rows = torch.arange(len(reference), device=scores.device)
        scores[rows, torch.tensor(list(reference), device=scores.device)] = float("inf")
        chosen = scores.argmin(dim=1).tolist()
    return torch.tensor(chosen, dtype=torch.int64, device=logits.device)
