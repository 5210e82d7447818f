"""The models the adversarial examples are evaluated on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sai_attack import options
from sai_attack.evaluation.protocol import EvaluationError
from sai_attack.models import load_target, split_target_spec
from sai_attack.runs import Run
from sai_attack.runtime import resolve_device


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

    def is_attack_model(self, run: Run) -> bool:
        """Whether this is the model ``run`` attacked (white-box)."""
        base = split_target_spec(self.spec)[0]
        return run.model in (base, self.name)


def load_targets(
    specs: Sequence[str] | None,
    runs: Sequence[Run],
    device: str | torch.device = options.default("device"),
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

    Raises:
        EvaluationError: ``specs`` is empty, or (without ``specs``) a run does not name its model.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    if specs is None:
        pairs: list[tuple[str, str | None]] = []
        for run in runs:
            if not run.model:
                raise EvaluationError(
                    f"run {run.name!r} does not name its model; give the models to evaluate on"
                )
            pair = (run.model, run.weights)
            if pair not in pairs:
                pairs.append(pair)
        loaded = [(name, load_target(name, weights, device)) for name, weights in pairs]
    else:
        unique = list(dict.fromkeys(s.strip() for s in specs if s.strip()))
        if not unique:
            raise EvaluationError("models is empty")
        loaded = [(s, load_target(s, device=device, label_offset=label_offset)) for s in unique]
    targets: list[Target] = []
    for spec, model in loaded:
        base = getattr(model, "name", None) or split_target_spec(spec)[0]
        name, k = base, 2
        while any(t.name == name for t in targets):
            name, k = f"{base}#{k}", k + 1
        targets.append(Target(name=name, spec=spec, model=model.eval()))
    return targets
