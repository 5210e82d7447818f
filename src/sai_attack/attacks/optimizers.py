"""Update rules: how an attack turns the gradient of its variable into a step.

An optimiser sees only the gradient w.r.t. the attack variable ``v`` (the pixels of the
perturbation, or the noise vector ``n`` of a superpixel space) and a per-batch ``state``; it never
knows which perturbation space it drives, so every optimiser works with every space and norm.
Each step is ``v <- project(v + alpha * direction(grad))`` with ``alpha = eps / T``; the
direction has unit size in the attack's norm (L2-normalised, or the sign for L-infinity).

``OPTIMIZERS`` maps names to classes; the attacks take a name or an instance.
"""

from __future__ import annotations

from typing import Any

import torch

from sai_attack import options
from sai_attack.attacks.norms import l1_normalize, l2_normalize, unit


class Optimizer:
    """The plain iterative rule (I-FGM, Kurakin et al., 2016): step along ``unit(grad)``.

    Subclasses override :meth:`direction` (how the gradient becomes a direction) and
    :meth:`lookahead` (where the gradient is taken).
    """

    name = "iterative"
    one_step = False
    """Whether the rule always takes a single step of size eps (FGM / FGSM)."""
    uses_momentum = False
    """Whether the rule takes the decay factor ``momentum``."""

    def __init__(self, momentum: float = options.default("momentum")) -> None:
        self.momentum = options.check("momentum", momentum)

    def lookahead(
        self, v: torch.Tensor, state: dict, alpha: float, norm: str, sizes: torch.Tensor
    ) -> torch.Tensor:
        """The point whose gradient drives the next step (``v`` itself).

        ``sizes`` (B,) holds the number of free values of each sample of ``v``.
        """
        return v

    def direction(self, grad: torch.Tensor, state: dict, norm: str) -> torch.Tensor:
        """The unit step direction from the gradient at the look-ahead point."""
        return unit(grad, norm)

    def describe(self) -> dict[str, Any]:
        """The parameters that define the rule, for summaries."""
        described: dict[str, Any] = {"optimizer": self.name}
        if self.uses_momentum:
            described["momentum"] = self.momentum
        return described

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "optimizer")
        return f"{type(self).__name__}({args})"


class OneStep(Optimizer):
    """One step of size eps along ``unit(grad)`` (FGM; FGSM in L-infinity)."""

    name = "one-step"
    one_step = True


class Momentum(Optimizer):
    """Momentum (MI-FGSM, Dong et al., CVPR 2018; the paper's Eq. 5).

    ``g <- mu * g + grad / ||grad||_1``, step along ``unit(g)``.
    """

    name = "momentum"
    uses_momentum = True

    def direction(self, grad: torch.Tensor, state: dict, norm: str) -> torch.Tensor:
        """Accumulate the L1-normalised gradient and step along the accumulator."""
        state["g"] = self.momentum * state.get("g", 0.0) + l1_normalize(grad)
        return unit(state["g"], norm)


class Nesterov(Momentum):
    """Nesterov momentum (NI-FGSM, Lin et al., ICLR 2020).

    The gradient is taken at the look-ahead point ``v + alpha * mu * g`` and accumulated as in
    :class:`Momentum`. The reference accumulates gradients divided by their mean absolute
    value; the accumulator here divides by the L1 norm, a factor ``N`` (the number of free
    values of the sample) smaller, so the L-infinity look-ahead is ``v + alpha * mu * N * g``:
    exactly the published rule. In L2 the look-ahead moves the same number of steps,
    ``||N g||_mean = ||g||_1``, along the L2-normalised accumulator.
    """

    name = "nesterov"

    def lookahead(
        self, v: torch.Tensor, state: dict, alpha: float, norm: str, sizes: torch.Tensor
    ) -> torch.Tensor:
        """``v + alpha * mu * g`` in the reference's scale (``v`` before the first step)."""
        if "g" not in state:
            return v
        g = state["g"]
        if norm == "linf":
            scaled = g * sizes.to(g).view(-1, *([1] * (g.ndim - 1)))
        else:
            steps = g.flatten(1).abs().sum(dim=1).view(-1, *([1] * (g.ndim - 1)))
            scaled = l2_normalize(g) * steps
        return v + alpha * self.momentum * scaled


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "one-step": OneStep,
    "iterative": Optimizer,
    "momentum": Momentum,
    "nesterov": Nesterov,
}
"""Update rules by name."""
options.register_choices("optimizer", OPTIMIZERS)


def make_optimizer(optimizer: str | Optimizer, momentum: float) -> Optimizer:
    """An :class:`Optimizer` from a name (with ``momentum``) or an instance (kept as is).

    Raises:
        ValueError: ``optimizer`` is not a registered name.
        TypeError: ``optimizer`` is neither a name nor an :class:`Optimizer`.
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a name or an Optimizer, got {type(optimizer).__name__}")
    return OPTIMIZERS[options.check("optimizer", optimizer)](momentum)
