"""Where an attack may perturb: no mask, the attention mask m*, or a mask the user passes.

A mask part turns a batch (and its attention maps and templates, when there are any) into a
(B, 1, H, W) binary mask, or None for "everywhere". A mask passed to
:meth:`~sai_attack.attacks.base.Attack.run` always takes precedence over the part.
"""

from __future__ import annotations

from typing import Any

import torch

from sai_attack import options
from sai_attack.attention import AttentionConfig, attention_map


class Mask:
    """No mask: the perturbation may go anywhere."""

    name = "none"
    uses_attention = False

    def resolve(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        attention: torch.Tensor | None,
        templates: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The batch's mask (B, 1, H, W) or None, and its attention maps (or None)."""
        return None, attention

    def describe(self) -> dict[str, Any]:
        """The parameters that define the mask, for summaries."""
        return {}


class AttentionMask(Mask):
    """The paper's m*: the class activation map binarised at ``phi`` (Eq. 2).

    With ``align`` and a superpixel template the mask keeps or drops whole superpixels (by
    their mean attention), so the perturbation stays constant inside every superpixel. With
    ``phi = 0`` the mask is all ones.

    Args:
        phi: Binarisation threshold in [0, 1]; 0 disables attention.
        method: ``auto``, ``cam`` or ``gradcam``.
        align: Keep whole superpixels (when there is a template) instead of cutting per pixel.
    """

    name = "attention"

    def __init__(
        self,
        phi: float = options.default("phi"),
        method: str = options.default("attention"),
        align: bool = options.default("align_mask"),
    ) -> None:
        self.config = AttentionConfig(phi, method, align)

    @property
    def uses_attention(self) -> bool:  # type: ignore[override]
        """Whether attention maps are needed (``phi > 0``)."""
        return self.config.phi > 0

    def resolve(self, model, images, labels, attention, templates):
        """m* from the given attention maps, computed for ``labels`` when none are given."""
        if self.uses_attention and attention is None:
            attention = attention_map(model, images, labels, method=self.config.method)
        if attention is None:
            return torch.ones_like(images[:, :1]), None
        return self.config.mask(attention, templates), attention

    def describe(self) -> dict[str, Any]:
        """The threshold, attention method and alignment."""
        c = self.config
        return {"phi": c.phi, "attention": c.method, "align_mask": c.align}


MASKS: dict[str, type[Mask]] = {"none": Mask, "attention": AttentionMask}
"""Mask parts by name."""
options.register_choices("mask", MASKS)


def make_mask(
    mask: str | Mask,
    phi: float = options.default("phi"),
    method: str = options.default("attention"),
    align: bool = options.default("align_mask"),
) -> Mask:
    """A :class:`Mask` from a name of ``MASKS`` and the attention settings, or an instance.

    Raises:
        ValueError: ``mask`` is not a registered name.
        TypeError: ``mask`` is neither a name nor a :class:`Mask`.
    """
    if isinstance(mask, Mask):
        return mask
    if not isinstance(mask, str):
        raise TypeError(f"mask must be a name or a Mask, got {type(mask).__name__}")
    if options.check("mask", mask) == "none":
        return Mask()
    return AttentionMask(phi, method, align)
