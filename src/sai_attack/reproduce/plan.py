"""What a reproduction runs: attack configurations, settings and the sections that use them.

Every experiment is a :class:`Section` that declares, once, the attack runs it reads and fills
its tables and figures from them; the plan of a reproduction is the union of the sections' runs
(:func:`plan`), so that Table 1, the robustness figures and the detection table share runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

    Beyond the paper: ``space`` replaces the method's perturbation space (``None``: its own),
    ``texture_weight`` weights superpixels by their HILL cost, ``ensemble`` attacks the white-box
    model together with the first ``ensemble`` black-box models of the settings (logits
    averaged), and ``extra`` holds further options of the table as ``(name, value)`` pairs (EoT,
    input diversity, translation invariance); pairs at the option's default are dropped and the
    rest sorted, so equal configurations share one folder.
    """

    method: str
    delta: float
    budget: str | None = None
    merge_beta: float = 0.0
    superpixel: str = "slic"
    size: int = 5
    phi12: int = 4
    grad_mode: str = "noise"
    space: str | None = None
    texture_weight: float = 0.0
    ensemble: int = 0
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.budget == ATTACKS[self.method].default_budget:
            object.__setattr__(self, "budget", None)  # one folder for identical configurations
        if self.space == ATTACKS[self.method].space_name:
            object.__setattr__(self, "space", None)
        for name, _ in self.extra:
            if name not in options.OPTIONS or name in _OWN_FIELDS:
                raise ValueError(
                    f"extra option {name!r} is not an option beyond the RunSpec fields"
                )
        extra = {name: options.check(name, value) for name, value in self.extra}
        extra = {k: v for k, v in extra.items() if v != options.default(k)}
        object.__setattr__(self, "extra", tuple(sorted(extra.items())))

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
        if self.space:
            parts.append(self.space)
        if self.texture_weight:
            parts.append(f"tw{self.texture_weight:g}")
        if self.ensemble:
            parts.append(f"ens{self.ensemble + 1}")
        parts += [_key_word(name, value) for name, value in self.extra]
        return "_".join(parts)

    @property
    def label(self) -> str:
        """Display name: method (and matched protocol marker)."""
        name = METHOD_NAMES[self.method]
        if self.budget == "exact":
            name += " (exact)"
        if self.merge_beta:
            name += f" beta={self.merge_beta:g}"
        if self.space:
            name += f" [{self.space}]"
        if self.texture_weight:
            name += f" W={self.texture_weight:g}"
        if self.ensemble:
            name += f" ensemble of {self.ensemble + 1}"
        return name + "".join(f" {k}={v}" for k, v in self.extra)

    def matched(self) -> RunSpec:
        """The same attack under the matched protocol (full budget)."""
        return replace(self, budget="exact")

    def config(self, model: str, seed: int, black_box: Sequence[str] = ()) -> AttackConfig:
        """The pipeline configuration; ``black_box`` supplies the members of an ensemble.

        Raises:
            ValueError: The run is an ensemble and there are too few black-box models.
        """
        if len(black_box) < self.ensemble:
            raise ValueError(
                f"run {self.key} attacks an ensemble of the white-box model and "
                f"{self.ensemble} black-box model(s), but {len(black_box)} are given"
            )
        return AttackConfig(
            method=self.method,
            model=",".join([model, *black_box[: self.ensemble]]),
            delta=self.delta,
            budget=self.budget,
            merge_beta=self.merge_beta,
            superpixel=self.superpixel,
            superpixel_size=self.size,
            phi=self.phi12 / 12.0,
            grad_mode=self.grad_mode,
            seed=seed,
            space=self.space,
            texture_weight=self.texture_weight,
            **dict(self.extra),
        )


_OWN_FIELDS = frozenset(
    {"method", "delta", "budget", "merge_beta", "superpixel", "superpixel_size", "phi",
     "grad_mode", "seed", "space", "texture_weight", "model"}
)  # fmt: skip
"""Options a RunSpec sets through its own fields (not through ``extra``)."""


def _key_word(name: str, value: Any) -> str:
    """``eot-resize1to3+jpeg55`` for ``("eot", "resize:1..3 jpeg:55")``: a folder-safe word."""
    text = str(value).replace("..", "to").replace(":", "").replace(",", "-")
    text = re.sub(r"\s+", "+", text.strip())
    return f"{name.replace('_', '-')}-{re.sub(r'[^A-Za-z0-9.+-]', '', text)}"


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
