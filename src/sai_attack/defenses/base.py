"""The :class:`Defense` base class, :class:`NoDefense`, and the checks every defense shares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch


def _check_images(images: torch.Tensor) -> None:
    """Raise unless ``images`` is a (B, 3, H, W) tensor."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected (B, 3, H, W) images, got shape {shape}")


def _is_int(value: float | int) -> bool:
    """Whether ``value`` is an integer, possibly written as a float (``3.0``, from a spec)."""
    return isinstance(value, (int, np.integer)) or (
        isinstance(value, float) and math.isfinite(value) and value == int(value)
    )


def _is_real(value: object) -> bool:
    """Whether ``value`` is a finite Python number; ``bool`` is refused although it is an int."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_int_range(what: str, value: float | int, low: int, high: int) -> int:
    """Return ``value`` as an int, or raise ``"{what} must be an integer in low..high"``.

    Args:
        what: The parameter as the message names it (``"jpeg quality q"``).
        value: The value to check; integral floats pass, ``bool`` does not.
        low: Smallest allowed value.
        high: Largest allowed value.

    Returns:
        ``int(value)``.
    """
    if isinstance(value, bool) or not _is_int(value) or not low <= int(value) <= high:
        raise ValueError(f"{what} must be an integer in {low}..{high}, got {value}")
    return int(value)


def _check_odd_kernel(name: str, k: float | int) -> int:
    """Return the window size ``k`` as an int, or raise unless it is an odd integer >= 1."""
    if isinstance(k, bool) or not _is_int(k) or int(k) < 1 or int(k) % 2 == 0:
        raise ValueError(f"{name} kernel size k must be an odd integer >= 1, got {k}")
    return int(k)


GRADIENTS = {
    "true": "the defense's own gradient (it is differentiable)",
    "approximate": "the defended image in the forward pass, the gradient of a differentiable "
    "approximation in the backward pass",
    "bpda": "the defended image in the forward pass, the identity in the backward pass "
    "(BPDA, Athalye et al., ICML 2018)",
}
"""What :meth:`Defense.with_gradient` passes back, by the value of :attr:`Defense.gradient`."""


def substitute_gradient(value: torch.Tensor, stand_in: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``stand_in`` in the backward pass.

    ``stand_in - stand_in.detach()`` is exactly zero, so the result equals ``value`` bit for bit;
    with ``stand_in`` the input itself this is BPDA's straight-through estimator.
    """
    return value.detach() + (stand_in - stand_in.detach())


def _format_param(value: float | int) -> str:
    """A parameter as it appears in a spec: ints as they are, floats without trailing zeros."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:g}"


class Defense:
    """A parameterised image transformation on (B, 3, H, W) tensors in [0, 1].

    Subclasses set the class attributes and implement :meth:`apply`. Calling the object checks the
    shape and applies it; ``seeds`` matter only to randomised defenses.

    Attributes:
        name: Registry name, used in specs (``name:param``).
        param_name: Name of the single swept parameter, or ``None``.
        param_type: ``int`` or ``float``.
        differentiable: Whether gradients through the defense are meaningful.
        gradient: What :meth:`with_gradient` passes back (a key of :data:`GRADIENTS`): ``true``
            for differentiable defenses, else ``approximate`` or ``bpda``.
        randomized: Whether the output depends on ``seeds``.
        description: One line for listings.
        example: A valid spec, quoted by the error for a missing parameter.
    """

    name: ClassVar[str] = ""
    param_name: ClassVar[str | None] = None
    param_type: ClassVar[type] = float
    differentiable: ClassVar[bool] = False
    gradient: ClassVar[str] = "bpda"
    randomized: ClassVar[bool] = False
    description: ClassVar[str] = ""
    example: ClassVar[str] = ""

    @property
    def param(self) -> float | int | None:
        """The value of the swept parameter."""
        return getattr(self, self.param_name) if self.param_name else None

    @property
    def spec(self) -> str:
        """The canonical ``name:param`` string."""
        p = self.param
        return self.name if p is None else f"{self.name}:{_format_param(p)}"

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Transform checked images (subclasses implement this)."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Apply the defense to (B, 3, H, W) images in [0, 1]."""
        _check_images(images)
        if self.differentiable:
            return self.apply(images, seeds)
        with torch.no_grad():
            return self.apply(images, seeds)

    def surrogate(self, images: torch.Tensor) -> torch.Tensor:
        """The differentiable approximation behind ``gradient = "approximate"``."""
        raise NotImplementedError(f"defense {self.name!r} has no differentiable approximation")

    def with_gradient(
        self, images: torch.Tensor, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """The defended images, with the gradient :attr:`gradient` names (for attacks: EoT).

        The forward value is always the defense's own output (what a defended classifier sees);
        only the backward pass differs: the true gradient, the approximation's, or the identity.
        """
        _check_images(images)
        if self.gradient == "true":
            return self.apply(images, seeds)
        with torch.no_grad():
            value = self.apply(images.detach(), seeds)
        stand_in = images if self.gradient == "bpda" else self.surrogate(images)
        return substitute_gradient(value, stand_in)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self.__dict__) == repr(other.__dict__)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self.__dict__)))


class NoDefense(Defense):
    """The identity: no defense (white-box and black-box settings)."""

    name = "none"
    differentiable = True
    gradient = "true"
    description = "no defense"
    example = "none"

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Return the images unchanged."""
        return images
