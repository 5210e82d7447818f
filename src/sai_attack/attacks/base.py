"""What every attack shares: the call protocol, losses, and the loop that combines the parts.

An attack is four parts (paper Sec. 3; "general to most existing gradient-based methods"):

- a perturbation **space** (``attacks/spaces.py``): the pixels, or one value per superpixel;
- a **mask** (``attacks/masks.py``): none, the attention mask m*, or one passed per batch;
- an **optimiser** (``attacks/optimizers.py``): one step, iterative, momentum, Nesterov, with an
  optional random start;
- a **norm** and budget protocol (``attacks/norms.py``): L2 ball of radius ``delta * sqrt(N)``
  (the paper) or L-infinity box of half-width ``delta``, ``within`` or ``exact``.

:class:`Attack` combines any of them; the paper's six methods (``ATTACKS``) are presets. Images
are (B, 3, H, W) tensors in [0, 1]; the loss is summed over the batch and every norm is per
sample, so results do not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sai_attack import options
from sai_attack.attacks.masks import Mask, make_mask
from sai_attack.attacks.norms import (  # noqa: F401  (re-exported: the historical home)
    BUDGETS,
    NORMS,
    apply_budget,
    delta_eff,
    epsilon,
    l1_normalize,
    l2_norm,
    l2_normalize,
    project,
    project_l2,
    project_linf,
    scale_l2,
    scale_linf,
)
from sai_attack.attacks.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from sai_attack.attacks.spaces import SPACES, Space, make_space
from sai_attack.attacks.transforms import InputTransform, Transforms

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, shape (B,)."""
    return F.cross_entropy(logits, labels, reduction="none")


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample C&W margin ``max_{j != y} z_j - z_y``, shape (B,)."""
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return others.max(dim=1).values - true


LOSSES: dict[str, LossFn] = {"ce": cross_entropy_loss, "cw": margin_loss}
"""Losses by CLI name. Untargeted attacks maximise ``loss(logits, label)``; targeted ones
minimise ``loss(logits, target)``."""
options.register_choices("loss", LOSSES)
options.register_choices("fallback_loss", ("auto", "none", *LOSSES))

# --------------------------------------------------------------------------------------------
# The attack base class
# --------------------------------------------------------------------------------------------


@dataclass
class AttackResult:
    """Everything an attack produced for one batch.

    Attributes:
        adv: (B, 3, H, W) adversarial images in [0, 1] (float, not yet quantised).
        perturbation: ``adv - images``.
        eps: The budget in [0, 1] units (L2 radius or L-infinity half-width).
        superpixels: (B, H, W) int64 superpixel labels, for superpixel attacks.
        attention: (B, 1, H, W) attention maps in [0, 1], when attention was used.
        mask: (B, 1, H, W) binary mask m* the perturbation was cropped with, when used.
    """

    adv: torch.Tensor
    perturbation: torch.Tensor
    eps: float
    superpixels: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class Attack:
    """``adv = attack(images, labels)`` with images (B, 3, H, W) in [0, 1].

    Every step is ``v <- step(v, alpha * direction(grad_v L(x(lookahead(v)))))`` with
    ``alpha = eps / T``, where the space defines ``v`` and ``x(v)``, and the optimiser the
    direction and look-ahead. Subclasses are presets: they set the class attributes
    ``optimizer`` (a name of ``OPTIMIZERS``) and build their space and mask.

    Args:
        model: The white-box classifier (an :class:`ImageClassifier` or any module taking [0, 1]
            images; its train/eval state is restored after each call).
        delta: Per-pixel perturbation scale in 0-255 units; the budget is ``delta * sqrt(N)``
            (L2) or ``delta`` (L-infinity).
        steps: Iterations T; the step is ``alpha = eps / T`` (one-step rules take 1).
        loss: ``"ce"``, ``"cw"``, or a callable ``(logits, labels) -> (B,)`` per-sample loss.
        targeted: Minimise the loss towards ``targets`` instead of maximising it on ``labels``.
        budget: ``"within"`` or ``"exact"``; ``None`` takes the preset's paper default.
        seed: Seed of the random initialisation, used for every sample unless per-sample
            ``seeds`` are passed to :meth:`run`.
        norm: ``"l2"`` (the paper) or ``"linf"`` (sign steps, projection into the box).
        space: A :class:`Space` or a name of ``SPACES`` (with default settings); None takes
            the preset's (pixels for :class:`Attack`).
        mask: A :class:`Mask` or a name of ``MASKS`` (with default settings); None takes the
            preset's (none for :class:`Attack`).
        optimizer: An ``OPTIMIZERS`` name or an :class:`Optimizer`; None takes the preset's.
        momentum: Decay factor mu of the momentum and Nesterov rules.
        random_start: Start from a uniformly random point of the budget (PGD).
        transforms: :class:`~sai_attack.attacks.transforms.InputTransform` objects applied to
            the adversarial images before the model (EoT over defenses, DI, TI), in order.
        eot_samples: K, the draws of the random transforms averaged per step.

    Example:
        >>> atk = Attack(model, space=SuperpixelSpace(), mask=AttentionMask(),  # doctest: +SKIP
        ...              optimizer="nesterov", norm="linf", delta=8)
        >>> adv = atk(images, labels)  # doctest: +SKIP
    """

    name = "attack"
    title = "Attack"  # display name in tables
    default_budget = "within"
    uses_superpixels = False
    """Whether the preset's space needs superpixel templates."""
    space_name = "pixels"
    """The preset's perturbation space (a name of ``SPACES``)."""
    mask_name = "none"
    """The preset's mask (a name of ``MASKS``)."""
    optimizer_name = "iterative"
    """The preset's update rule (a name of ``OPTIMIZERS``)."""
    fixed_steps: int | None = None
    """1 for presets whose rule is one step (FGM, SA-FGM), else None."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.fixed_steps = 1 if OPTIMIZERS[cls.optimizer_name].one_step else None
        cls.uses_superpixels = SPACES[cls.space_name].uses_superpixels

    def __init__(
        self,
        model: torch.nn.Module,
        delta: float = options.default("delta"),
        steps: int = options.default("steps"),
        loss: str | LossFn = options.default("loss"),
        targeted: bool = options.default("targeted"),
        budget: str | None = options.default("budget"),
        seed: int = options.default("seed"),
        norm: str = options.default("norm"),
        *,
        space: Space | str | None = options.default("space"),
        mask: Mask | str | None = options.default("mask"),
        optimizer: str | Optimizer | None = options.default("optimizer"),
        momentum: float = options.default("momentum"),
        random_start: bool = options.default("random_start"),
        transforms: Sequence[InputTransform] = (),
        eot_samples: int = options.default("eot_samples"),
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(loss, str):
            loss = options.check("loss", loss)
        elif not callable(loss):
            raise TypeError("loss must be a name or a callable (logits, labels) -> per-sample loss")
        budget = options.check("budget", budget)
        self.model = model
        self.space: Space = make_space(space if space is not None else self.space_name)
        self.mask_part: Mask = make_mask(mask if mask is not None else self.mask_name)
        self.optimizer = make_optimizer(
            optimizer if optimizer is not None else self.optimizer_name, momentum
        )
        self.random_start = options.check("random_start", random_start)
        self.transforms = Transforms(transforms, eot_samples)  # none: the plain objective
        self.delta = options.check("delta", delta)
        self.steps = options.check("steps", 1 if self.optimizer.one_step else steps)
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn: LossFn = LOSSES[loss] if isinstance(loss, str) else loss
        self.targeted = options.check("targeted", bool(targeted))
        self.budget = budget if budget is not None else self.default_budget
        self.seed = options.check("seed", int(seed))
        self.norm = options.check("norm", norm)
        self.autocast: torch.dtype | None = None  # mixed precision for the model's passes
        self.last: AttackResult | None = None

    @property
    def momentum(self) -> float | None:
        """The optimiser's decay factor, None for rules without momentum."""
        return self.optimizer.momentum if self.optimizer.uses_momentum else None

    # -- the public protocol -------------------------------------------------------------------

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        """Return adversarial images; see :meth:`run` for the arguments."""
        return self.run(images, labels, **kwargs).adv

    def run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        superpixels: torch.Tensor | None = None,
        attention: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        seeds: Sequence[int] | None = None,
    ) -> AttackResult:
        """Attack a batch.

        Args:
            images: (B, 3, H, W) in [0, 1]; never modified.
            labels: (B,) true (or attacked) classes; CAM is computed for them.
            targets: (B,) target classes, required when ``targeted``.
            superpixels: (B, H, W) int64 precomputed templates (superpixel spaces).
            attention: (B, 1, H, W) precomputed attention maps in [0, 1].
            mask: (B, 1, H, W) binary mask to use instead of the mask part's.
            seeds: One random-initialisation seed per sample.

        Returns:
            The :class:`AttackResult`; also kept in ``self.last``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError("images must lie in [0, 1]")
        b = images.shape[0]
        labels = torch.as_tensor(labels, device=images.device).long().view(-1)
        if labels.shape[0] != b:
            raise ValueError(f"got {labels.shape[0]} labels for {b} images")
        if self.targeted:
            if targets is None:
                raise ValueError("targeted attack needs targets (one class per image)")
            targets = torch.as_tensor(targets, device=images.device).long().view(-1)
            if targets.shape[0] != b:
                raise ValueError(f"got {targets.shape[0]} targets for {b} images")
        if seeds is not None and len(seeds) != b:
            raise ValueError(f"got {len(seeds)} seeds for {b} images")
        seeds = list(seeds) if seeds is not None else [self.seed] * b
        images = images.detach()
        was_training = self.model.training
        self.model.eval()
        try:
            result = self._run(images, labels, targets, superpixels, attention, mask, seeds)
        finally:
            self.model.train(was_training)
        self.last = result
        return result

    # -- the loop ------------------------------------------------------------------------------

    def eps_for(self, images: torch.Tensor) -> float:
        """The budget in [0, 1] units (in ``self.norm``) for this batch's (C, H, W)."""
        return epsilon(self.delta, images.shape[1:], self.norm)

    def objective(self, x_adv: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None):
        """The scalar to ascend: summed per-sample loss (negated towards targets)."""
        if self.autocast is None:
            logits = self.model(x_adv)
        else:
            with torch.autocast(device_type=x_adv.device.type, dtype=self.autocast):
                logits = self.model(x_adv)
            logits = logits.float()
        if self.targeted:
            return -self.loss_fn(logits, targets).sum()
        return self.loss_fn(logits, labels).sum()

    def _run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor | None,
        superpixels: torch.Tensor | None,
        attention: torch.Tensor | None,
        mask: torch.Tensor | None,
        seeds: list[int],
    ) -> AttackResult:
        eps = self.eps_for(images)
        alpha = eps / self.steps
        templates = self.space.templates(images, superpixels)  # (B, H, W) or None
        if mask is None:
            mask, attention = self.mask_part.resolve(
                self.model, images, labels, attention, templates
            )
        space = self.space.bind(images, templates, mask, eps, self.budget, self.norm)
        v = space.init(seeds, alpha, self.random_start)
        transforms = self.transforms.bind(seeds)
        state: dict = {}
        for _ in range(self.steps):
            point = self.optimizer.lookahead(v, state, alpha, self.norm, space.sizes)
            grad = transforms.gradient(space, point, lambda x: self.objective(x, labels, targets))
            v = space.step(v, alpha * self.optimizer.direction(grad, state, self.norm))
        adv = space.finish(v)
        return AttackResult(
            adv=adv,
            perturbation=adv - images,
            eps=eps,
            superpixels=templates,
            attention=attention,
            mask=mask,
        )

    def describe(self) -> dict:
        """The parameters that define this attack, for summaries."""
        described = {
            "method": self.name,
            "delta": self.delta,
            "steps": self.steps,
            "loss": self.loss_name,
            "targeted": self.targeted,
            "budget": self.budget,
            "seed": self.seed,
            "norm": self.norm,
            "space": self.space.name,
            "mask": self.mask_part.name,
            **self.optimizer.describe(),
            "random_start": self.random_start,
            **self.space.describe(),
            **self.mask_part.describe(),
            **self.transforms.describe(),
        }
        return described

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "method")
        return f"{type(self).__name__}({args})"
