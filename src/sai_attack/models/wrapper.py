"""The classifier wrapper every attack and evaluation talks to.

An :class:`ImageClassifier` takes RGB images in [0, 1] of any size, resizes them (differentiably)
to the network's input size when it has one, normalises them, and returns logits. When the network
ends in global average pooling followed by a linear layer, it also exposes the last convolutional
features and the linear weights, so that the class activation map (CAM) comes out of the very
forward pass that gives the clean prediction.

The network runs in one memory layout (:data:`MEMORY_FORMATS`): the default PyTorch layout, or
channels-last (NHWC), which PyTorch's CPU convolutions (oneDNN) run much faster for depthwise
networks. The layout is converted here, at the wrapper boundary, so callers always pass and get
back ordinary (B, 3, H, W) tensors: the input is copied to the network's layout inside the
forward pass and its gradient is returned in the default layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
HeadFn = Callable[[torch.Tensor], torch.Tensor]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
}
"""The memory layouts a network can run in, by name (``memory_format`` option)."""


class _ToChannelsLast(torch.autograd.Function):
    """Copy (B, C, H, W) to channels-last; the gradient comes back in the default layout.

    Returning the default layout keeps everything outside the network layout-agnostic (attacks
    reshape and combine gradients with their own tensors) at the cost of one input-sized copy.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _as_triplet(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{name} must be a number or 3 numbers, got {len(values)} values")
    return values  # type: ignore[return-value]


class ImageClassifier(nn.Module):
    """A classifier on RGB images in [0, 1].

    Args:
        net: The network, fed normalised (B, 3, S, S) tensors, returning (B, num_classes) logits.
        mean: Per-channel mean subtracted after scaling to [0, 1] (one number or three).
        std: Per-channel standard deviation divided by (one number or three).
        input_size: The network's input side length; inputs of another size are resized with
            antialiased bilinear interpolation inside the forward pass. ``None`` means any size.
        name: A display name.
        features: Optional function from normalised input to the last convolutional feature map
            (B, C, h, w), for exact CAM. Must be given together with ``head``.
        head: Optional function from that feature map to logits; must be global average pooling
            followed by the linear layer ``fc``.
        fc: The final ``nn.Linear`` whose weights CAM uses.
        cpu_memory_format: The layout measured fastest for this network on the CPU (a key of
            :data:`MEMORY_FORMATS`; the built-in models: ``channels_last``), which
            ``memory_format="auto"`` then uses on the CPU instead of measuring. The model starts
            in the default layout either way (:meth:`to_memory_format` changes it).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> model = ImageClassifier(net, input_size=8)
        >>> model(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        net: nn.Module,
        mean: float | Sequence[float] = IMAGENET_MEAN,
        std: float | Sequence[float] = IMAGENET_STD,
        input_size: int | None = None,
        name: str = "custom",
        features: FeatureFn | None = None,
        head: HeadFn | None = None,
        fc: nn.Linear | None = None,
        cpu_memory_format: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if input_size is not None and input_size < 1:
            raise ValueError(f"input_size must be a positive integer or None, got {input_size}")
        std3 = _as_triplet(std, "std")
        if any(s <= 0 for s in std3):
            raise ValueError(f"std must be positive, got {std3}")
        if (features is None) != (head is None) or (features is not None and fc is None):
            raise ValueError("features, head and fc must be given together (for exact CAM)")
        if cpu_memory_format is not None and cpu_memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"cpu_memory_format must be one of {', '.join(MEMORY_FORMATS)} or None, "
                f"got {cpu_memory_format!r}"
            )
        self.net = net
        self.name = name
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(_as_triplet(mean, "mean")).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std3).view(1, 3, 1, 1))
        self._features = features
        self._head = head
        self.fc = fc
        self.cpu_memory_format = cpu_memory_format
        self._memory_format = "contiguous"
        self.memory_format_decisions: dict[str, str] = {}
        """What ``memory_format="auto"`` decided for this model, by device type."""

    @property
    def memory_format(self) -> str:
        """The layout the network runs in (a key of :data:`MEMORY_FORMATS`)."""
        return self._memory_format

    def to_memory_format(self, memory_format: str) -> ImageClassifier:
        """Run the network in ``memory_format`` (``contiguous`` or ``channels_last``).

        Converts the network's 4-D parameters and buffers (a copy: converting back restores
        them bit for bit). Returns the model itself.

        Raises:
            ValueError: An unknown layout.
        """
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}"
            )
        if memory_format != self._memory_format:
            self.net.to(memory_format=MEMORY_FORMATS[memory_format])
            self._memory_format = memory_format
        return self

    def _to_network_layout(self, x: torch.Tensor) -> torch.Tensor:
        # In the default layout nothing is copied: the exact computation of earlier versions.
        return _ToChannelsLast.apply(x) if self._memory_format == "channels_last" else x

    @property
    def supports_cam(self) -> bool:
        """Whether exact CAM is available (global average pooling + linear head)."""
        return self._features is not None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (if needed) and normalise (B, 3, H, W) images in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
        s = self.input_size
        if s is not None and tuple(images.shape[-2:]) != (s, s):
            images = F.interpolate(
                images, size=(s, s), mode="bilinear", align_corners=False, antialias=True
            )
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return (B, num_classes) logits for (B, 3, H, W) images in [0, 1]."""
        return self.net(self._to_network_layout(self.preprocess(images)))

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return logits and the last convolutional features from one forward pass.

        Returns:
            ``(logits, features)`` of shapes (B, num_classes) and (B, C, h, w).

        Raises:
            NotImplementedError: When the model does not support exact CAM.
        """
        if self._features is None or self._head is None:
            raise NotImplementedError(f"model {self.name!r} does not expose CAM features")
        feats = self._features(self._to_network_layout(self.preprocess(images)))
        return self._head(feats), feats

    def cam_weights(self) -> torch.Tensor:
        """The (num_classes, C) weights of the final linear layer."""
        if self.fc is None:
            raise NotImplementedError(f"model {self.name!r} does not expose CAM weights")
        return self.fc.weight

    def extra_repr(self) -> str:
        """Name, input size, CAM support and memory layout, for ``repr``."""
        return (
            f"name={self.name!r}, input_size={self.input_size}, cam={self.supports_cam}, "
            f"memory_format={self._memory_format}"
        )


def gap_linear_head(fc: nn.Linear, dropout: nn.Module | None = None) -> HeadFn:
    """Global average pooling, optional dropout, then ``fc``: the head CAM is exact for."""

    def head(features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))  # (B, C)
        if dropout is not None:
            pooled = dropout(pooled)
        return fc(pooled)

    return head
