"""What both adapters share: the attacked model seen from [0, 1] images, and the method list."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from sai_attack import options
from sai_attack.attacks import ATTACKS, Attack

SUPERPIXEL_METHODS: dict[str, type[Attack]] = {
    name: cls for name, cls in ATTACKS.items() if cls.uses_superpixels
}
"""The superpixel attack classes by name: the methods the adapters offer."""

AdapterT = TypeVar("AdapterT", bound=type)


def method_classes(base: AdapterT, module: str, harness: str) -> dict[str, AdapterT]:
    """One subclass of an adapter ``base`` per superpixel method, by method name.

    Each is named like the native class (``SAIFGM``) and sets the class attribute ``method``,
    the default of ``base``'s ``method`` argument.
    """
    return {
        name: type(
            cls.__name__,
            (base,),
            {
                "method": name,
                "__module__": module,
                "__doc__": f"{cls.title} as {harness}; see :class:`{base.__name__}`.",
            },
        )
        for name, cls in SUPERPIXEL_METHODS.items()
    }


def missing_extra(module: str, package: str, extra: str) -> ImportError:
    """The error for an adapter ``module`` whose optional ``package`` is not installed."""
    return ImportError(
        f"{module} needs {package}; install it with: pip install 'sai-attack[{extra}]'"
    )


def superpixel_method(method: str) -> type[Attack]:
    """The native class of a superpixel ``method`` name.

    Raises:
        ValueError: ``method`` is unknown or not a superpixel method.
    """
    options.check("method", method)
    if method not in SUPERPIXEL_METHODS:
        raise ValueError(
            f"method must be a superpixel method ({', '.join(SUPERPIXEL_METHODS)}), got {method!r}"
        )
    return SUPERPIXEL_METHODS[method]


class InputAdapter(nn.Module):
    """A classifier taking [0, 1] images: ``net(transform(images))``.

    The adapters hand this to the native attacks, whose images are always in [0, 1], while the
    harness's model expects normalised or rescaled inputs. ``net`` is a registered submodule so
    Grad-CAM finds its last convolution; CAM is offered when ``net`` offers it, computed on the
    transformed images as ``net`` would see them.

    Args:
        net: The harness's model.
        transform: Maps [0, 1] images to ``net``'s inputs (differentiably).
        follow_mode: Whether ``train()``/``eval()`` reach ``net``. ``False`` leaves the model's
            mode to the harness (torchattacks' ``set_model_training_mode``).
    """

    def __init__(
        self,
        net: nn.Module,
        transform: Callable[[torch.Tensor], torch.Tensor],
        *,
        follow_mode: bool = True,
    ) -> None:
        super().__init__()
        self.net = net
        self.transform = transform
        self.follow_mode = follow_mode
        self.name = getattr(net, "name", type(net).__name__)
        # The native attacks restore ``training`` after a call: start from the net's state.
        self.training = net.training

    def train(self, mode: bool = True) -> InputAdapter:
        """Set the mode; it reaches ``net`` only with ``follow_mode``."""
        if self.follow_mode:
            return super().train(mode)
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of (B, 3, H, W) images in [0, 1]."""
        return self.net(self.transform(images))

    @property
    def supports_cam(self) -> bool:
        """Whether ``net`` offers exact CAM."""
        return bool(getattr(self.net, "supports_cam", False))

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``net``'s logits and last convolutional features for [0, 1] images."""
        return self.net.forward_features(self.transform(images))

    def cam_weights(self) -> torch.Tensor:
        """``net``'s (num_classes, C) final linear weights."""
        return self.net.cam_weights()
