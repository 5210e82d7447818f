"""Attention masks: class activation maps, their binarisation, and superpixel alignment.

CAM (Zhou et al., CVPR 2016) is computed exactly for models that end in global average pooling
and a linear layer: ``M_c(x, y) = sum_k w_{c,k} F_k(x, y)``. Other models fall back to Grad-CAM
(Selvaraju et al., ICCV 2017) on their last convolution. Maps are min-max normalised per image to
[0, 1], upsampled bilinearly to the image size and binarised at ``phi`` (paper Eq. 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.models import ImageClassifier

ATTENTION_METHODS = ("auto", "cam", "gradcam")
"""Attention methods by name; ``auto`` resolves to one of the others (:func:`resolve_method`)."""
options.register_choices("attention", ATTENTION_METHODS)


def resolve_method(method: str, model: nn.Module) -> str:
    """The attention method that ``method`` means for ``model``: ``cam`` or ``gradcam``.

    ``auto`` is CAM where the model has a GAP + linear head (``supports_cam``), else Grad-CAM.
    This is the one place that decides it: the attacks and the pipeline both ask here.

    Raises:
        ValueError: ``method`` is unknown, or ``cam`` for a model without a GAP + linear head.
    """
    method = options.check("attention", method)
    supports_cam = bool(getattr(model, "supports_cam", False))
    if method == "auto":
        return "cam" if supports_cam else "gradcam"
    if method == "cam" and not supports_cam:
        name = getattr(model, "name", type(model).__name__)
        raise ValueError(f"model {name!r} has no GAP + linear head; use attention='gradcam'")
    return method


def normalize_minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (h, w) map of a (B, h, w) or (B, 1, h, w) tensor to [0, 1].

    A constant map becomes all ones: nothing distinguishes its pixels, so none is dropped.
    """
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.ones_like(flat))
    return out.view_as(maps)


def cam_from_features(
    features: torch.Tensor, weights: torch.Tensor, classes: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Class activation maps from features (B, C, h, w) and linear weights (num_classes, C).

    Returns:
        (B, 1, H, W) maps in [0, 1] at ``size``.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(features.shape)}")
    w = weights.detach()[classes.to(weights.device)].to(features.dtype)  # (B, C)
    cam = torch.einsum("bchw,bc->bhw", features.detach(), w).unsqueeze(1)  # (B, 1, h, w)
    cam = F.interpolate(normalize_minmax(cam), size=size, mode="bilinear", align_corners=False)
    return cam.clamp(0, 1)


def _last_conv(net: nn.Module) -> nn.Module:
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a model with at least one nn.Conv2d layer")
    return convs[-1]


def grad_cam(
    model: ImageClassifier,
    images: torch.Tensor,
    classes: torch.Tensor,
    layer: nn.Module | None = None,
) -> torch.Tensor:
    """Grad-CAM maps for any classifier, on ``layer`` (default: its last ``nn.Conv2d``).

    Returns:
        (B, 1, H, W) maps in [0, 1] at the image size.
    """
    layer = layer or _last_conv(model)
    stash: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        stash["act"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = images.detach().requires_grad_(True)
            logits = model(x)
            score = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
            act = stash["act"]
            (grads,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * act.detach()).sum(dim=1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(
        normalize_minmax(cam), size=images.shape[-2:], mode="bilinear", align_corners=False
    )
    return cam.clamp(0, 1)


def attention_map(
    model: ImageClassifier, images: torch.Tensor, classes: torch.Tensor, method: str = "auto"
) -> torch.Tensor:
    """The attention map of ``classes`` on ``images``.

    Args:
        model: The classifier.
        images: (B, 3, H, W) in [0, 1].
        classes: (B,) class indices whose evidence is mapped (the class being attacked).
        method: ``cam`` (exact, needs a GAP + linear head), ``gradcam``, or ``auto`` (CAM when
            available, else Grad-CAM).

    Returns:
        (B, 1, H, W) maps in [0, 1].
    """
    method = resolve_method(method, model)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
    if method == "gradcam":
        return grad_cam(model, images, classes)
    with torch.no_grad():
        _, feats = model.forward_features(images)
    return cam_from_features(feats, model.cam_weights(), classes, tuple(images.shape[-2:]))


def binarize(attention: torch.Tensor, phi: float) -> torch.Tensor:
    """Binarise attention maps at ``phi`` (paper Eq. 2): 1 where ``m >= phi``, else 0."""
    options.check("phi", phi)
    return (attention >= phi).to(attention.dtype)


def superpixel_mask(attention: torch.Tensor, labels: torch.Tensor, phi: float) -> torch.Tensor:
    """A mask aligned to superpixels: a superpixel is kept when its mean attention >= ``phi``.

    Args:
        attention: (B, 1, H, W) maps in [0, 1].
        labels: (B, H, W) int64 superpixel labels.
        phi: Binarisation threshold.

    Returns:
        (B, 1, H, W) mask in {0, 1}, constant inside every superpixel.
    """
    options.check("phi", phi)
    num = int(labels.max()) + 1
    mean = sp.reduce(attention, labels, num, "mean")  # (B, 1, K)
    keep = (mean >= phi).to(attention.dtype)
    return sp.fill(keep, labels)


@dataclass(frozen=True)
class AttentionConfig:
    """How the attention mask m* is made.

    Args:
        phi: Binarisation threshold in [0, 1]; 0 disables attention (a mask of ones).
        method: ``auto``, ``cam`` or ``gradcam``.
        align: Keep or drop whole superpixels (by mean attention) so that the perturbation stays
            constant inside every superpixel; otherwise the mask is cut per pixel as in Eq. 2.
    """

    phi: float = options.default("phi")
    method: str = options.default("attention")
    align: bool = options.default("align_mask")

    def __post_init__(self) -> None:
        object.__setattr__(self, "phi", options.check("phi", self.phi))
        object.__setattr__(self, "method", options.check("attention", self.method))
        object.__setattr__(self, "align", options.check("align_mask", self.align))

    def mask(self, attention: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Binarise (and align, when labels are given and ``align`` is set) attention maps."""
        if self.phi == 0:
            return torch.ones_like(attention)
        if self.align and labels is not None:
            return superpixel_mask(attention, labels, self.phi)
        return binarize(attention, self.phi)
