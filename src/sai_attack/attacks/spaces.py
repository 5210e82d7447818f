"""Perturbation spaces: what an attack optimises and how it becomes a perturbation.

A space maps the attack variable ``v`` to a perturbation ``r`` (B, 3, H, W) inside the budget.
:class:`PixelSpace` optimises ``r`` itself (the pixel-wise baselines); :class:`SuperpixelSpace`
optimises a noise vector ``n`` (B, 3, K), one value per channel and superpixel, painted onto a
template and cropped by the mask (the paper's ``Scale_eps(Crop_m(f(n; t)))``, Eq. 3), so the
perturbation is constant inside every superpixel and zero outside the mask. A space knows
nothing of the update rule (``attacks/optimizers.py``): any optimiser drives any space.

Each space is configured once (:class:`Space`) and bound to a batch (:meth:`Space.bind`), which
returns a :class:`Bound` with the four operations the attack loop uses: ``init``, ``gradient``,
``step`` and ``finish``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.attacks.norms import apply_budget, apply_budget_painted, project
from sai_attack.texture_cost import texture_weights

GRAD_MODES = ("noise", "mean", "max")
"""How a superpixel's gradient is obtained: w.r.t. the noise vector n (the paper's method), or the
mean / largest-magnitude pixel gradient inside it (the paper's AVG and MAX ablations)."""
options.register_choices("grad_mode", GRAD_MODES)

Objective = Callable[[torch.Tensor], torch.Tensor]
"""The scalar to ascend, from adversarial images (B, 3, H, W)."""


class Bound:
    """A space bound to one batch: the operations of the attack loop.

    Attributes:
        images: (B, 3, H, W) clean images in [0, 1].
        mask: (B, 1, H, W) binary mask, or None (no mask).
        eps: The budget in [0, 1] units.
        budget: ``within`` or ``exact``.
        norm: ``l2`` or ``linf``.
        sizes: (B,) the number of free values of each sample's variable (C*H*W pixels, or
            3*K superpixel values); padding of a batched variable does not count.
    """

    def __init__(
        self, images: torch.Tensor, mask: torch.Tensor | None, eps: float, budget: str, norm: str
    ) -> None:
        self.images, self.mask, self.eps, self.budget, self.norm = images, mask, eps, budget, norm
        self.sizes = torch.full((images.shape[0],), images[0].numel(), dtype=torch.float64)

    def init(self, seeds: list[int], alpha: float, random_start: bool) -> torch.Tensor:
        """The initial variable."""
        raise NotImplementedError

    def gradient(self, v: torch.Tensor, objective: Objective) -> torch.Tensor:
        """The gradient of ``objective`` w.r.t. the variable at ``v``."""
        raise NotImplementedError

    def step(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The variable after moving ``v`` by ``delta``, projected into the budget."""
        raise NotImplementedError

    def finish(self, v: torch.Tensor) -> torch.Tensor:
        """The adversarial images (B, 3, H, W) in [0, 1] from the final variable."""
        raise NotImplementedError


class Space:
    """A perturbation space (configuration); :meth:`bind` makes the per-batch :class:`Bound`."""

    name = "space"
    uses_superpixels = False

    @classmethod
    def from_settings(
        cls,
        config: sp.SuperpixelConfig,
        grad_mode: str,
        init_scale: float,
        texture_weight: float = options.default("texture_weight"),
    ) -> Space:
        """The space from a run's superpixel settings (ignoring those it does not use)."""
        return cls()

    def templates(self, images: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor | None:
        """The batch's (B, H, W) superpixel labels: ``given`` (checked) or computed; None here."""
        return None

    def bind(
        self,
        images: torch.Tensor,
        templates: torch.Tensor | None,
        mask: torch.Tensor | None,
        eps: float,
        budget: str,
        norm: str,
    ) -> Bound:
        """The space bound to a batch."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The parameters that define the space, for summaries."""
        return {}


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _PixelBound(Bound):
    def init(self, seeds: list[int], alpha: float, random_start: bool) -> torch.Tensor:
        r = torch.zeros_like(self.images)
        if not random_start:
            return r
        shape = self.images.shape[1:]
        for i, seed in enumerate(seeds):  # one generator per image: batch-size independent
            u = torch.rand(shape, generator=_seeded(seed), dtype=torch.float64)
            if self.norm == "linf":
                r[i] = ((2 * u - 1) * self.eps).to(r)
            else:  # a random direction at a uniformly random radius (torchattacks' PGDL2)
                g = torch.randn(shape, generator=_seeded(seed), dtype=torch.float64)
                r[i] = (g / g.norm().clamp_min(1e-12) * (u.flatten()[0] * self.eps)).to(r)
        if self.mask is not None:
            r = r * self.mask
        return (self.images + r).clamp(0, 1) - self.images

    def gradient(self, v: torch.Tensor, objective: Objective) -> torch.Tensor:
        x = (self.images + v).clamp(0, 1).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(x), x)
        return grad if self.mask is None else grad * self.mask

    def step(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        x = (self.images + v).clamp(0, 1)
        return project(x - self.images + delta, self.eps, self.norm)

    def finish(self, v: torch.Tensor) -> torch.Tensor:
        if self.budget == "exact":
            v = apply_budget(v, self.eps, "exact", self.norm)
        return (self.images + v).clamp(0, 1)


class PixelSpace(Space):
    """Every pixel and channel is free: the variable is the perturbation ``r`` itself.

    The gradient is taken on the clipped image ``clip(x + r)``, cut by the mask when there is
    one. Steps are projected into the ball (or box); the ``exact`` budget rescales the final
    perturbation to the sphere (or puts every non-zero value at ``+-eps``). A random start is
    uniform in the box (L-infinity) or a random direction at a uniform radius (L2), as in
    torchattacks' ``PGD`` / ``PGDL2``.
    """

    name = "pixels"

    def bind(self, images, templates, mask, eps, budget, norm) -> Bound:
        """The pixel space bound to a batch (``templates`` is ignored)."""
        return _PixelBound(images, mask, eps, budget, norm)


class _SuperpixelBound(Bound):
    def __init__(self, space: SuperpixelSpace, images, templates, mask, eps, budget, norm):
        super().__init__(images, mask, eps, budget, norm)
        self.space = space
        self.templates = templates  # (B, H, W) int64
        self.counts = [int(k) + 1 for k in templates.flatten(1).amax(dim=1).tolist()]
        self.sizes = 3 * torch.tensor(self.counts, dtype=torch.float64)
        # (B, 1, K) texture weights in (0, 1], or None: W = 0 leaves the paper's method untouched.
        weight = space.texture_weight
        self.weights = texture_weights(images, templates, weight) if weight > 0 else None
        self.cropped = _cropped_templates(templates, mask, max(self.counts), images.dtype)

    def weighted(self, n: torch.Tensor) -> torch.Tensor:
        """The noise (B, 3, K) scaled by the texture weights, when there are any."""
        return n if self.weights is None else n * self.weights

    def paint(self, n: torch.Tensor) -> torch.Tensor:
        """``f(n; t)``: (B, 3, H, W) from noise (B, 3, K), scaled by the texture weights."""
        return sp.fill(self.weighted(n), self.templates)

    def render(self, n: torch.Tensor) -> torch.Tensor:
        """``Scale_eps(Crop_m(f(n; t)))``: (B, 3, H, W) from noise (B, 3, K)."""
        if self.cropped is None:  # a mask with values other than 0 and 1: crop the painting
            painted = self.paint(n)
            if self.mask is not None:
                painted = painted * self.mask
            return apply_budget(painted, self.eps, self.budget, self.norm)
        # The budget is applied to n and the crop is in the template, so that the per-pixel work
        # of a step is one gather and its scatter: 12 ms instead of 23 ms for the render and its
        # gradient on a batch of 16 at 224 x 224 (benchmarks/attack_stage.py, 2-core CPU).
        labels, counts = self.cropped
        v = apply_budget_painted(self.weighted(n), counts, self.eps, self.budget, self.norm)
        return sp.fill(F.pad(v, (0, 1)), labels)  # slot K: the pixels outside the mask

    def init(self, seeds: list[int], alpha: float, random_start: bool) -> torch.Tensor:
        scale = self.eps if random_start else self.space.init_scale * alpha
        n0 = torch.zeros(len(self.counts), 3, max(self.counts), dtype=torch.float64)
        for i, (k, seed) in enumerate(zip(self.counts, seeds, strict=True)):
            g = _seeded(seed)
            if self.norm == "linf":  # never exactly +-alpha, so one sign step cannot zero it
                u = torch.rand(3, k, generator=g, dtype=torch.float64)
                n0[i, :, :k] = (2 * u - 1) * scale
                continue
            u = torch.randn(3, k, generator=g, dtype=torch.float64)
            n0[i, :, :k] = u * (scale / u.norm().clamp_min(1e-12))
        return n0.to(self.images)

    def gradient(self, v: torch.Tensor, objective: Objective) -> torch.Tensor:
        n = v.detach().requires_grad_(True)
        with torch.enable_grad():
            x = (self.images + self.render(n)).clamp(0, 1)
            if self.space.grad_mode == "noise":
                (grad,) = torch.autograd.grad(objective(x), n)
                return grad
            (pixel_grad,) = torch.autograd.grad(objective(x), x)
        if self.mask is not None:
            pixel_grad = pixel_grad * self.mask
        how = "mean" if self.space.grad_mode == "mean" else "absmax"
        return sp.reduce(pixel_grad, self.templates, n.shape[2], how)

    def step(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        n = v.detach() + delta
        if self.norm == "linf":  # the box is per value, so projecting n projects Crop_m(f(n))
            n = n.clamp(-self.eps, self.eps)
        return n

    def finish(self, v: torch.Tensor) -> torch.Tensor:
        return (self.images + self.render(v)).clamp(0, 1)


def _cropped_templates(
    templates: torch.Tensor, mask: torch.Tensor | None, k: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Templates with the masked-out pixels in an extra slot ``k``, and the regions' sizes.

    Returns:
        ``(labels, counts)``: (B, H, W) labels, ``k`` where the binary ``mask`` is 0, and
        (B, 1, k) the number of pixels of every superpixel inside the mask; None when the mask
        has other values (it cannot be folded into the template).
    """
    labels = templates
    if mask is not None:
        if not bool(((mask == 0) | (mask == 1)).all()):
            return None
        labels = torch.where(mask[:, 0] != 0, templates, k)
    ones = torch.ones(labels.shape[0], 1, *labels.shape[1:], dtype=dtype, device=labels.device)
    return labels, sp.reduce(ones, labels, k + 1, "sum")[:, :, :k]  # (B, 1, K)


class SuperpixelSpace(Space):
    """One value per channel and superpixel: the paper's perturbation space (Eq. 3).

    The variable is the noise vector ``n`` (B, 3, K); the perturbation is
    ``Scale_eps(Crop_m(f(n; t)))``, where ``f`` paints ``n`` onto the template ``t``, ``Crop_m``
    multiplies by the mask and ``Scale_eps`` applies the budget protocol: rescaling to
    ``||r|| = eps`` (``exact``) or projecting into the ball (``within``). In L-infinity the box
    is per value, so ``n`` itself is clipped into ``[-eps, eps]`` after every step and
    ``exact`` puts every perturbed superpixel at ``+-eps`` (gradients passed straight through).

    Args:
        config: The template settings (algorithm, size or count, compactness, merging).
        grad_mode: ``noise`` (gradient w.r.t. n, the paper), ``mean`` or ``max`` (ablations).
        init_scale: Size of the random n_0 in units of the step alpha: its L2 norm (L2), or the
            half-width of its uniform range (L-infinity). A random start uses the whole budget.
        texture_weight: Stego-aware SAI: W > 0 paints ``w_k * n_k`` instead of ``n_k``, with
            ``w_k = (c_k / c_min)^-W`` from each superpixel's HILL cost ``c_k``
            (:func:`~sai_attack.texture_cost.texture_weights`), so the perturbation moves to
            textured superpixels. The weights are in (0, 1], so the L-infinity box on ``n`` still
            holds for the painted values; with the ``exact`` L-infinity budget every perturbed
            value is at ``+-eps`` whatever its weight, so W changes nothing there. 0: the paper.
    """

    name = "superpixels"
    uses_superpixels = True

    def __init__(
        self,
        config: sp.SuperpixelConfig | None = None,
        grad_mode: str = options.default("grad_mode"),
        init_scale: float = 1.0,
        texture_weight: float = options.default("texture_weight"),
    ) -> None:
        if not init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale}")
        self.config = config if config is not None else sp.SuperpixelConfig()
        self.grad_mode = options.check("grad_mode", grad_mode)
        self.init_scale = float(init_scale)
        self.texture_weight = options.check("texture_weight", texture_weight)

    @classmethod
    def from_settings(
        cls,
        config: sp.SuperpixelConfig,
        grad_mode: str,
        init_scale: float,
        texture_weight: float = options.default("texture_weight"),
    ) -> SuperpixelSpace:
        """The space with these template settings, gradient mode, scale and texture weight."""
        return cls(config, grad_mode, init_scale, texture_weight)

    def templates(self, images: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor:
        """``given`` on the images' device (checked), or the templates of ``config``."""
        labels = sp.segment_batch(images, self.config) if given is None else given
        labels = labels.to(images.device)
        expected = (images.shape[0], *images.shape[-2:])
        if labels.shape != expected:
            raise ValueError(f"superpixels must have shape {expected}, got {tuple(labels.shape)}")
        return labels

    def bind(self, images, templates, mask, eps, budget, norm) -> Bound:
        """The superpixel space bound to a batch and its templates (B, H, W)."""
        if templates is None:
            raise ValueError("the superpixel space needs templates; call templates() first")
        return _SuperpixelBound(self, images, templates, mask, eps, budget, norm)

    def describe(self) -> dict[str, Any]:
        """The template settings, gradient mode and initial scale."""
        c = self.config
        return {
            "superpixel": c.algorithm,
            "superpixel_size": c.size if c.n_segments is None else None,
            "n_segments": c.n_segments,
            "compactness": c.compactness,
            "merge_beta": c.merge_beta,
            "grad_mode": self.grad_mode,
            "init_scale": self.init_scale,
            "texture_weight": self.texture_weight,
        }


SPACES: dict[str, type[Space]] = {"pixels": PixelSpace, "superpixels": SuperpixelSpace}
"""Perturbation spaces by name."""
options.register_choices("space", SPACES)


def make_space(
    space: str | Space,
    config: sp.SuperpixelConfig | None = None,
    grad_mode: str = options.default("grad_mode"),
    init_scale: float = 1.0,
    texture_weight: float = options.default("texture_weight"),
) -> Space:
    """A :class:`Space` from a name of ``SPACES`` and the superpixel settings, or an instance.

    Raises:
        ValueError: ``space`` is not a registered name.
        TypeError: ``space`` is neither a name nor a :class:`Space`.
    """
    if isinstance(space, Space):
        return space
    if not isinstance(space, str):
        raise TypeError(f"space must be a name or a Space, got {type(space).__name__}")
    cls = SPACES[options.check("space", space)]
    settings = config or sp.SuperpixelConfig()
    return cls.from_settings(settings, grad_mode, init_scale, texture_weight=texture_weight)
