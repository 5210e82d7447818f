"""What every attack shares: budget, losses, norms, and the call protocol.

The budget follows the paper (Sec. 4): an L2 ball of radius ``eps = delta * sqrt(N)`` in 0-255
pixel units, ``N = C*H*W`` at the attack resolution, step ``alpha = eps / T``. With
``norm="linf"`` the budget is the L-infinity box of half-width ``eps = delta`` and the steps are
sign steps of size ``eps / T`` (the I-FGSM / MI-FGSM convention). Images are
(B, 3, H, W) tensors in [0, 1], so internally ``eps`` is divided by 255. All norms are per sample
and the loss is summed over the batch, so results do not depend on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sai_attack import options

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

BUDGETS = ("within", "exact")
"""``within``: project into the ball (||r|| <= eps). ``exact``: rescale to ||r|| = eps (L2) or
put every perturbed value at +-eps (L-infinity)."""
options.register_choices("budget", BUDGETS)

NORMS = ("l2", "linf")
"""The threat models: ``l2`` (the paper) and ``linf``."""
options.register_choices("norm", NORMS)


# --------------------------------------------------------------------------------------------
# Per-sample norm helpers
# --------------------------------------------------------------------------------------------


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm of a (B, ...) tensor, shape (B,)."""
    return x.flatten(1).norm(p=2, dim=1)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.ndim - 1)))


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each sample by its L2 norm (zero samples stay zero)."""
    return x / _per_sample(l2_norm(x).clamp_min(eps), x)


def l1_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each sample by its L1 norm (zero samples stay zero)."""
    return x / _per_sample(x.flatten(1).abs().sum(dim=1).clamp_min(eps), x)


def project_l2(r: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Project each sample onto the L2 ball of radius ``eps``."""
    norm = l2_norm(r)
    eps_t = torch.as_tensor(eps, dtype=r.dtype, device=r.device)
    factor = torch.clamp(eps_t / norm.clamp_min(1e-12), max=1.0)
    return r * _per_sample(factor, r)


def scale_l2(r: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Rescale each non-zero sample to L2 norm ``eps`` (the paper's Scale_eps)."""
    return l2_normalize(r) * eps


def project_linf(r: torch.Tensor, eps: float) -> torch.Tensor:
    """Project into the L-infinity box ``[-eps, eps]``."""
    return r.clamp(-eps, eps)


class _SignTimesEps(torch.autograd.Function):
    """``eps * sign(r)`` whose backward pass is the identity (a straight-through estimator).

    The sign has zero gradient almost everywhere; passing the gradient through unchanged lets
    the ``exact`` L-infinity protocol be optimised like the L2 one, which rescales smoothly.
    """

    @staticmethod
    def forward(ctx: Any, r: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.sign(r) * eps

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def scale_linf(r: torch.Tensor, eps: float) -> torch.Tensor:
    """Put every non-zero value at ``+-eps`` (zeros stay zero); gradients pass straight through."""
    return _SignTimesEps.apply(r, eps)


def project(r: torch.Tensor, eps: float, norm: str = "l2") -> torch.Tensor:
    """Project each sample into the ``norm`` ball of radius ``eps``."""
    return project_linf(r, eps) if norm == "linf" else project_l2(r, eps)


def apply_budget(r: torch.Tensor, eps: float, budget: str, norm: str = "l2") -> torch.Tensor:
    """Apply a budget protocol (``within`` or ``exact``) in ``norm`` to perturbations."""
    if budget == "within":
        return project(r, eps, norm)
    if budget == "exact":
        return scale_linf(r, eps) if norm == "linf" else scale_l2(r, eps)
    raise ValueError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")


def epsilon(delta: float, shape: Sequence[int], norm: str = "l2") -> float:
    """The budget in [0, 1] units for per-pixel scale ``delta`` (0-255 units) and (C, H, W).

    L2: ``delta * sqrt(N) / 255``; L-infinity: ``delta / 255``.
    """
    if norm == "linf":
        return delta / 255.0
    return delta * math.sqrt(math.prod(shape)) / 255.0


def delta_eff(perturbation: torch.Tensor) -> torch.Tensor:
    """Effective delta ``||r||_2 / sqrt(N)`` in 0-255 units, per sample, shape (B,)."""
    n = perturbation[0].numel()
    return l2_norm(perturbation.double()) * 255.0 / math.sqrt(n)


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
    """Base class: ``adv = attack(images, labels)`` with images (B, 3, H, W) in [0, 1].

    Args:
        model: The white-box classifier (an :class:`ImageClassifier` or any module taking [0, 1]
            images; its train/eval state is restored after each call).
        delta: Per-pixel perturbation scale in 0-255 units; the budget is ``delta * sqrt(N)``
            (L2) or ``delta`` (L-infinity).
        steps: Iterations T; the step is ``alpha = eps / T``.
        loss: ``"ce"``, ``"cw"``, or a callable ``(logits, labels) -> (B,)`` per-sample loss.
        targeted: Minimise the loss towards ``targets`` instead of maximising it on ``labels``.
        budget: ``"within"`` or ``"exact"``; ``None`` takes the method's paper default.
        seed: Seed of the random initialisation (superpixel attacks), used for every sample
            unless per-sample ``seeds`` are passed to :meth:`run`.
        norm: ``"l2"`` (the paper) or ``"linf"`` (sign steps, projection into the box).
    """

    name = "attack"
    title = "Attack"  # display name in tables
    default_budget = "within"
    uses_superpixels = False
    fixed_steps: int | None = None
    momentum: float | None = None

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
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(loss, str):
            loss = options.check("loss", loss)
        elif not callable(loss):
            raise TypeError("loss must be a name or a callable (logits, labels) -> per-sample loss")
        budget = options.check("budget", budget)
        self.model = model
        self.delta = options.check("delta", delta)
        self.steps = options.check(
            "steps", self.fixed_steps if self.fixed_steps is not None else steps
        )
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn: LossFn = LOSSES[loss] if isinstance(loss, str) else loss
        self.targeted = options.check("targeted", bool(targeted))
        self.budget = budget if budget is not None else self.default_budget
        self.seed = options.check("seed", int(seed))
        self.norm = options.check("norm", norm)
        self.autocast: torch.dtype | None = None  # mixed precision for the model's passes
        self.last: AttackResult | None = None

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
            superpixels: (B, H, W) int64 precomputed templates (superpixel attacks).
            attention: (B, 1, H, W) precomputed attention maps in [0, 1].
            mask: (B, 1, H, W) binary mask to use instead of one made from attention.
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

    # -- helpers for subclasses ----------------------------------------------------------------

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

    def direction(self, grad: torch.Tensor, state: dict) -> torch.Tensor:
        """The update direction from a gradient: Eq. 4, or Eq. 5 with momentum.

        Unit L2 norm for ``l2``; the sign (of the momentum accumulator) for ``linf``.
        """
        unit = torch.sign if self.norm == "linf" else l2_normalize
        if self.momentum is None:
            return unit(grad)
        state["g"] = self.momentum * state.get("g", 0.0) + l1_normalize(grad)
        return unit(state["g"])

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
        raise NotImplementedError

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
        }
        if self.momentum is not None:
            described["momentum"] = self.momentum
        return described

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "method")
        return f"{type(self).__name__}({args})"


class MomentumMixin:
    """Adds the momentum decay factor mu (paper Eq. 5) to an attack: mix in before the attack.

    With ``momentum`` set, :meth:`Attack.direction` accumulates L1-normalised gradients.
    """

    def __init__(
        self, model: torch.nn.Module, *, momentum: float = options.default("momentum"), **kwargs
    ) -> None:
        super().__init__(model, **kwargs)  # type: ignore[call-arg]
        self.momentum = options.check("momentum", momentum)
