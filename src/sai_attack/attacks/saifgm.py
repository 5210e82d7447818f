"""SAI-FGM: superpixel-guided attentional iterative FGM (Dong et al., CVPR 2020, Sec. 3.3)."""

from __future__ import annotations

import torch

from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.attacks.base import Attack, AttackResult, apply_budget
from sai_attack.attention import AttentionConfig, attention_map

GRAD_MODES = ("noise", "mean", "max")
"""How a superpixel's gradient is obtained: w.r.t. the noise vector n (the paper's method), or the
mean / largest-magnitude pixel gradient inside it (the paper's AVG and MAX ablations)."""
options.register_choices("grad_mode", GRAD_MODES)


class SAIFGM(Attack):
    """Superpixel-guided attentional I-FGM.

    The perturbation is parametrised by a noise vector ``n`` of shape (3, K), one value per
    channel and superpixel. Each iteration (paper Eq. 3-4)::

        x_i = clip(x + Scale_eps(Crop_m(f(n_i; t))))
        n_{i+1} = n_i + alpha * grad_n L(x_i) / ||grad_n L(x_i)||_2

    where ``f`` paints ``n`` onto the superpixel template ``t``, ``Crop_m`` multiplies by the
    binarised attention mask m*, and ``Scale_eps`` rescales to ||r|| = eps (budget ``exact``,
    the default) or projects into the ball (budget ``within``). The perturbation is therefore
    constant inside every superpixel and zero outside the attended foreground.

    With ``norm="linf"`` the steps are sign steps ``n_{i+1} = clamp(n_i + alpha * sign(g), -eps,
    eps)`` and ``Scale_eps`` clips into the box (``within``) or puts every perturbed superpixel
    at ``+-eps`` (``exact``, gradients passed straight through), so the perturbation stays
    constant per superpixel and zero outside the mask.

    Args:
        model: The white-box classifier.
        superpixel: Algorithm name (``slic``, ``lsc``, ``seeds``, ``grid``).
        superpixel_size: Superpixel size S in pixels (K = H*W / S^2).
        n_segments: Superpixel count K, overriding ``superpixel_size``.
        compactness: SLIC compactness.
        merge_beta: Adaptive merging threshold beta (Delta E 76); 0 disables merging.
        phi: Attention binarisation threshold; 0 disables attention.
        attention: ``auto``, ``cam`` or ``gradcam``.
        align_mask: Keep whole superpixels by mean attention (constant per superpixel) instead
            of cutting the mask per pixel.
        grad_mode: ``noise`` (gradient w.r.t. n, default), ``mean`` or ``max`` (ablations).
        init_scale: L2 norm of the random initial noise n_0 in units of the step alpha; with
            ``norm="linf"`` n_0 is uniform in ``[-init_scale * alpha, init_scale * alpha]``.
        **kwargs: ``delta``, ``steps``, ``loss``, ``targeted``, ``budget``, ``seed`` as in
            :class:`~sai_attack.attacks.base.Attack`.

    Example:
        >>> atk = SAIFGM(model, delta=4, steps=10, merge_beta=2)  # doctest: +SKIP
        >>> adv = atk(images, labels)  # doctest: +SKIP
        >>> atk.last.superpixels.shape, atk.last.mask.shape  # doctest: +SKIP
    """

    name = "sai-fgm"
    title = "SAI-FGM"
    default_budget = "exact"
    uses_superpixels = True

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        superpixel: str = options.default("superpixel"),
        superpixel_size: float | None = options.default("superpixel_size"),
        n_segments: int | None = options.default("n_segments"),
        compactness: float = options.default("compactness"),
        merge_beta: float = options.default("merge_beta"),
        phi: float = options.default("phi"),
        attention: str = options.default("attention"),
        align_mask: bool = options.default("align_mask"),
        grad_mode: str = options.default("grad_mode"),
        init_scale: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(model, **kwargs)
        self.superpixel_config = sp.SuperpixelConfig(
            superpixel, superpixel_size, n_segments, compactness, merge_beta
        )
        self.attention_config = AttentionConfig(phi, attention, align_mask)
        grad_mode = options.check("grad_mode", grad_mode)
        if not init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale}")
        self.grad_mode = grad_mode
        self.init_scale = float(init_scale)

    def initial_noise(self, counts: list[int], seeds: list[int], alpha: float) -> torch.Tensor:
        """Random n_0 of shape (B, 3, K_max), zero beyond each sample's K; one seed per sample."""
        n0 = torch.zeros(len(counts), 3, max(counts), dtype=torch.float64)
        for i, (k, seed) in enumerate(zip(counts, seeds, strict=True)):
            g = torch.Generator().manual_seed(seed)
            if self.norm == "linf":  # PGD's random start; never exactly +-alpha, so one sign
                u = torch.rand(3, k, generator=g, dtype=torch.float64)  # step cannot zero it
                n0[i, :, :k] = (2 * u - 1) * (self.init_scale * alpha)
                continue
            u = torch.randn(3, k, generator=g, dtype=torch.float64)
            n0[i, :, :k] = u * (self.init_scale * alpha / u.norm().clamp_min(1e-12))
        return n0

    def perturbation(
        self, n: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """``Scale_eps(Crop_m(f(n; t)))``: (B, 3, H, W) from noise (B, 3, K)."""
        return apply_budget(sp.fill(n, labels) * mask, eps, self.budget, self.norm)

    def _run(self, images, labels, targets, superpixels, attention, mask, seeds) -> AttackResult:
        eps = self.eps_for(images)
        alpha = eps / self.steps
        if superpixels is None:
            superpixels = sp.segment_batch(images, self.superpixel_config)
        superpixels = superpixels.to(images.device)
        if superpixels.shape != (images.shape[0], *images.shape[-2:]):
            raise ValueError(
                f"superpixels must have shape {(images.shape[0], *images.shape[-2:])}, "
                f"got {tuple(superpixels.shape)}"
            )
        if mask is None:
            if self.attention_config.phi > 0 and attention is None:
                attention = attention_map(
                    self.model, images, labels, method=self.attention_config.method
                )
            mask = (
                torch.ones_like(images[:, :1])
                if attention is None
                else self.attention_config.mask(attention, superpixels)
            )
        counts = [int(k) + 1 for k in superpixels.flatten(1).amax(dim=1).tolist()]
        n = self.initial_noise(counts, seeds, alpha).to(images)
        state: dict = {}
        for _ in range(self.steps):
            n.requires_grad_(True)
            with torch.enable_grad():
                x_adv = (images + self.perturbation(n, superpixels, mask, eps)).clamp(0, 1)
                objective = self.objective(x_adv, labels, targets)
                if self.grad_mode == "noise":
                    (grad,) = torch.autograd.grad(objective, n)
                else:
                    (pixel_grad,) = torch.autograd.grad(objective, x_adv)
                    how = "mean" if self.grad_mode == "mean" else "absmax"
                    grad = sp.reduce(pixel_grad * mask, superpixels, n.shape[2], how)
            n = n.detach() + alpha * self.direction(grad, state)
            if self.norm == "linf":  # the box is per value, so projecting n projects Crop_m(f(n))
                n = n.clamp(-eps, eps)
        adv = (images + self.perturbation(n, superpixels, mask, eps)).clamp(0, 1)
        return AttackResult(
            adv=adv,
            perturbation=adv - images,
            eps=eps,
            superpixels=superpixels,
            attention=attention,
            mask=mask,
        )

    def describe(self) -> dict:
        """The parameters, including the superpixel and attention settings."""
        c, a = self.superpixel_config, self.attention_config
        return {
            **super().describe(),
            "superpixel": c.algorithm,
            "superpixel_size": c.size if c.n_segments is None else None,
            "n_segments": c.n_segments,
            "compactness": c.compactness,
            "merge_beta": c.merge_beta,
            "phi": a.phi,
            "attention": a.method,
            "align_mask": a.align,
            "grad_mode": self.grad_mode,
            "init_scale": self.init_scale,
        }
