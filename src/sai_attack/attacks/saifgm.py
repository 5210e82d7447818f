"""SAI-FGM: superpixel-guided attentional iterative FGM (Dong et al., CVPR 2020, Sec. 3.3)."""

from __future__ import annotations

import torch

from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.attacks.base import Attack
from sai_attack.attacks.masks import make_mask
from sai_attack.attacks.spaces import make_space


class SAIFGM(Attack):
    """Superpixel-guided attentional I-FGM.

    Preset: the superpixel space (:class:`~sai_attack.attacks.spaces.SuperpixelSpace`), the
    attention mask m* (:class:`~sai_attack.attacks.masks.AttentionMask`) and the iterative
    rule. The perturbation is parametrised by a noise vector ``n`` of shape (3, K), one value per
    channel and superpixel. Each iteration (paper Eq. 3-4)::

        x_i = clip(x + Scale_eps(Crop_m(f(n_i; t))))
        n_{i+1} = n_i + alpha * grad_n L(x_i) / ||grad_n L(x_i)||_2

    where ``f`` paints ``n`` onto the superpixel template ``t``, ``Crop_m`` multiplies by the
    binarised attention mask m*, and ``Scale_eps`` rescales to ||r|| = eps (budget ``exact``,
    the default) or projects into the ball (budget ``within``). The perturbation is therefore
    constant inside every superpixel and zero outside the attended foreground.

    With ``norm="linf"`` the steps are sign steps ``n_{i+1} = clamp(n_i + alpha * sign(g), -eps,
    eps)`` and ``Scale_eps`` clips into the box (``within``) or puts every perturbed superpixel
    at ``+-eps`` (``exact``, gradients passed straight through). Another update rule is one
    argument away: ``optimizer="nesterov"`` gives NI-SAI-FGM.

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
        **kwargs: ``delta``, ``steps``, ``loss``, ``targeted``, ``budget``, ``seed``, ``norm``,
            ``space``, ``mask`` (names are built with the settings above), ``optimizer``,
            ``momentum``, ``random_start`` as in
            :class:`~sai_attack.attacks.base.Attack`.

    Example:
        >>> atk = SAIFGM(model, delta=4, steps=10, merge_beta=2)  # doctest: +SKIP
        >>> adv = atk(images, labels)  # doctest: +SKIP
        >>> atk.last.superpixels.shape, atk.last.mask.shape  # doctest: +SKIP
    """

    name = "sai-fgm"
    title = "SAI-FGM"
    default_budget = "exact"
    space_name = "superpixels"
    mask_name = "attention"

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
        config = sp.SuperpixelConfig(
            superpixel, superpixel_size, n_segments, compactness, merge_beta
        )
        space = kwargs.pop("space", None) or self.space_name
        mask = kwargs.pop("mask", None) or self.mask_name
        super().__init__(
            model,
            space=make_space(space, config, grad_mode, init_scale),
            mask=make_mask(mask, phi, attention, align_mask),
            **kwargs,
        )
