"""What a reproduction runs: attack configurations, settings and the sections that use them.

Every experiment is a :class:`Section` that declares, once, the attack runs it reads and fills
its tables and figures from them; the plan of a reproduction is the union of the sections' runs
(:func:`plan`), so that Table 1, the robustness figures and the detection table share runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sai_attack import options
from sai_attack.attacks import ATTACKS, METHOD_NAMES
from sai_attack.pipeline import AttackConfig
from sai_attack.reproduce.presets import Preset

if TYPE_CHECKING:
    from sai_attack.reproduce.experiments import Reproduction


@dataclass(frozen=True)
class RunSpec:
    """One attack configuration of the reproduction.

    The defaults are the paper's setting (SLIC superpixels of size S = 5, phi = 4/12, no
    merging, the noise-vector gradient); the run's key names only what differs from it.
    ``budget`` is ``None`` for the method's paper default; ``phi12`` is phi in twelfths.
    """

    method: str
    delta: float
    budget: str | None = None
    merge_beta: float = 0.0
    superpixel: str = "slic"
    size: int = 5
    phi12: int = 4
    grad_mode: str = "noise"

    def __post_init__(self) -> None:
        if self.budget == ATTACKS[self.method].default_budget:
            object.__setattr__(self, "budget", None)  # one folder for identical configurations

    @property
    def key(self) -> str:
        """Folder name under ``runs/``."""
        parts = [self.method, f"d{self.delta:g}"]
        if self.budget:
            parts.append(self.budget)
        if self.merge_beta:
            parts.append(f"b{self.merge_beta:g}")
        if self.superpixel != "slic":
            parts.append(self.superpixel)
        if self.size != 5:
            parts.append(f"S{self.size}")
        if self.phi12 != 4:
            parts.append(f"phi{self.phi12}of12")
        if self.grad_mode != "noise":
            parts.append(f"grad-{self.grad_mode}")
        return "_".join(parts)

    @property
    def label(self) -> str:
        """Display name: method (and matched protocol marker)."""
        name = METHOD_NAMES[self.method]
        if self.budget == "exact":
            name += " (exact)"
        if self.merge_beta:
            name += f" beta={self.merge_beta:g}"
        return name

    def matched(self) -> RunSpec:
        """The same attack under the matched protocol (full budget)."""
        return replace(self, budget="exact")

    def config(self, model: str, seed: int) -> AttackConfig:
        """The pipeline configuration."""
        return AttackConfig(
            method=self.method,
            model=model,
            delta=self.delta,
            budget=self.budget,
            merge_beta=self.merge_beta,
            superpixel=self.superpixel,
            superpixel_size=self.size,
            phi=self.phi12 / 12.0,
            grad_mode=self.grad_mode,
            seed=seed,
        )


BLACK_BOX_MODELS = ("efficientnet-lite1", "efficientnet-lite2")
"""The black-box models of a reproduction unless told."""


@dataclass
class Settings:
    """What a reproduction runs on.

    Attributes:
        data: The folder of images (with ``labels.csv``).
        out: The output folder.
        preset: The sizes of the experiments.
        model: The white-box model.
        black_box: Black-box PyTorch models.
        targets: More black-box targets (``tflite:PATH``, ``onnx:PATH``).
        device: Where models run.
        batch_size: Images per batch.
        workers: Worker processes (loading, features, detectors).
        seed: The seed of the attacks, defenses and detector splits.
    """

    data: Path
    out: Path
    preset: Preset
    model: str = options.default("model")
    black_box: tuple[str, ...] = BLACK_BOX_MODELS
    targets: tuple[str, ...] = ()
    device: str = options.default("device")
    batch_size: int = options.default("batch_size")
    workers: int = options.default("workers")
    seed: int = options.default("seed")

    @property
    def models(self) -> list[str]:
        """The white-box model, then every black-box model and target."""
        return [self.model, *self.black_box, *self.targets]


Need = tuple[RunSpec, int]
"""An attack run and how many images (the first N inputs) a section reads from it."""


@dataclass(frozen=True)
class Section:
    """One stage of the reproduction: the runs it reads and what it fills from them.

    Attributes:
        name: The stage's name in the progress log.
        runs: The attack runs it needs (``preset -> [(run, images)]``).
        fill: Evaluates or detects on those runs and appends tables, figures and findings.
        cost: Its work in model passes per image, for the estimate of the time left.
    """

    name: str
    runs: Callable[[Preset], list[Need]]
    fill: Callable[[Reproduction], None]
    cost: Callable[[Reproduction], float]


def each(specs: Sequence[RunSpec], images: int) -> list[Need]:
    """``specs``, each read over the first ``images`` inputs."""
    return [(spec, images) for spec in specs]


def plan(sections: Sequence[Section], preset: Preset) -> dict[str, Need]:
    """Every attack run the sections need, each once, by key.

    Runs are in the order they are first needed; each is attacked on the largest number of
    images any section reads from it.
    """
    needs: dict[str, Need] = {}
    for section in sections:
        for spec, images in section.runs(preset):
            _, known = needs.get(spec.key, (spec, 0))
            needs[spec.key] = (spec, max(known, images))
    return needs
