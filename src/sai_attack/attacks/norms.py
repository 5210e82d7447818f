"""Threat models and budgets: per-sample norms, projections and the budget protocols.

The budget follows the paper (Sec. 4): an L2 ball of radius ``eps = delta * sqrt(N)`` in 0-255
pixel units, ``N = C*H*W`` at the attack resolution. With ``norm="linf"`` it is the L-infinity
box of half-width ``eps = delta``. Images are (B, 3, H, W) tensors in [0, 1], so internally
``eps`` is divided by 255. All norms are per sample, so results do not depend on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sai_attack import options

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


def apply_budget_painted(
    values: torch.Tensor, counts: torch.Tensor, eps: float, budget: str, norm: str = "l2"
) -> torch.Tensor:
    """:func:`apply_budget` of an image painted from per-region values, applied to the values.

    Painting ``values`` (B, C, K) onto regions of ``counts`` (B, 1, K) pixels (0 for a region
    outside the mask) and then applying the budget gives, up to float rounding, the painting of
    this function's result: the L-infinity budget acts value by value and keeps 0 at 0, and the
    L2 norm of the painted image is ``sqrt(sum_k counts_k * values_k^2)``. The work is that of K
    values instead of H*W pixels.
    """
    if norm == "linf" or budget not in BUDGETS:
        return apply_budget(values, eps, budget, norm)
    length = (values.square() * counts).flatten(1).sum(dim=1).sqrt()  # (B,)
    factor = eps / length.clamp_min(1e-12)
    if budget == "within":
        factor = factor.clamp(max=1.0)
    return values * _per_sample(factor, values)


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


def unit(x: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit steepest-ascent direction in ``norm``: the sign (L-inf) or the L2-normalised x."""
    return torch.sign(x) if norm == "linf" else l2_normalize(x)
