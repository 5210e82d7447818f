"""The superpixel attacks as an ART ``EvasionAttack`` on a ``PyTorchClassifier``.

``generate(x, y)`` takes NCHW float arrays in the estimator's ``clip_values`` range, maps them to
the [0, 1] images the native attacks use, attacks the estimator's model behind its own
(differentiable) preprocessing, and maps the result back, so the output equals the native attack
on the same model for the same seed.

Example:
    >>> from art.estimators.classification import PyTorchClassifier  # doctest: +SKIP
    >>> from sai_attack.integrations.art import SuperpixelEvasion  # doctest: +SKIP
    >>> classifier = PyTorchClassifier(
    ...     model, loss, input_shape=(3, 224, 224), nb_classes=1000,
    ...     clip_values=(0, 255), preprocessing=(0, 255))  # doctest: +SKIP
    >>> attack = SuperpixelEvasion(classifier, "sai-fgm", delta=4, steps=10)  # doctest: +SKIP
    >>> x_adv = attack.generate(x, y)  # x: (N, 3, H, W) float32 in [0, 255]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sai_attack import options
from sai_attack.attacks import Attack
from sai_attack.integrations._adapter import (
    InputAdapter,
    method_classes,
    missing_extra,
    superpixel_method,
)

try:
    from art.attacks import EvasionAttack
    from art.estimators.classification import PyTorchClassifier
except ImportError as error:  # an optional extra: say which one
    raise missing_extra(__name__, "adversarial-robustness-toolbox", "art") from error


class SuperpixelEvasion(EvasionAttack):
    """A superpixel attack of this library as an ART evasion attack.

    Args:
        estimator: A channels-first ``PyTorchClassifier`` with ``clip_values`` and only
            PyTorch (differentiable) preprocessing.
        method: The superpixel method's name in :data:`~sai_attack.attacks.ATTACKS`; the
            per-method subclasses fix it.
        targeted: ``y`` holds target classes (required) instead of true classes.
        batch_size: Images attacked at once (the results do not depend on it).
        **kwargs: The native class's keyword arguments (``delta`` in 0-255 units of the [0, 1]
            image, ``steps``, ``superpixel``, ``phi``, ``seed``, ...).
    """

    attack_params = [*EvasionAttack.attack_params, "method", "targeted", "batch_size"]  # noqa: RUF012
    _estimator_requirements = (PyTorchClassifier,)
    method: str = options.default("method")

    def __init__(
        self,
        estimator: PyTorchClassifier,
        method: str | None = None,
        targeted: bool = False,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(estimator=estimator)
        self.method = method if method is not None else type(self).method
        self.targeted = bool(targeted)
        self.batch_size = batch_size
        self.attack_kwargs = dict(kwargs)
        self._check_params()

    def _check_params(self) -> None:
        super()._check_params()
        superpixel_method(self.method)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise TypeError("batch_size must be an integer")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        estimator = self.estimator
        if estimator.clip_values is None:
            raise ValueError("estimator.clip_values must be set (the range of x)")
        if not estimator.channels_first:
            raise ValueError("estimator must be channels_first (x is NCHW)")
        if estimator.preprocessing_operations and not estimator.all_framework_preprocessing:
            raise ValueError("estimator preprocessing must be PyTorch (differentiable)")
        # Build once so bad keyword arguments fail here, not at the first generate().
        self._native()

    @property
    def clip_range(self) -> tuple[float, float]:
        """The estimator's ``(low, high)`` input range."""
        low, high = self.estimator.clip_values
        return float(low), float(high)

    def _model_input(self, images: torch.Tensor) -> torch.Tensor:
        # [0, 1] images -> the estimator's range -> its own preprocessing, as predict() does.
        low, high = self.clip_range
        x = low + images * (high - low)
        if self.estimator.preprocessing_operations:
            x, _ = self.estimator._apply_preprocessing(x, y=None, fit=False, no_grad=False)
        return x

    def _native(self) -> Attack:
        model = InputAdapter(self.estimator.model, self._model_input)
        return superpixel_method(self.method)(model, targeted=self.targeted, **self.attack_kwargs)

    def _classes(self, y: np.ndarray | None, n: int) -> np.ndarray | None:
        if y is None:
            return None
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == self.estimator.nb_classes:
            y = y.argmax(axis=1)
        if y.ndim != 1 or y.shape[0] != n or not np.issubdtype(y.dtype, np.number):
            raise ValueError(
                f"y must be {n} class indices or a ({n}, {self.estimator.nb_classes}) one-hot "
                f"array, got shape {y.shape}"
            )
        return y.astype(np.int64)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial examples for ``x``.

        Args:
            x: (N, 3, H, W) float array in the estimator's clip range.
            y: True classes (untargeted; default: the estimator's predictions) or target
                classes (targeted; required), as indices (N,) or one-hot (N, classes).
            **kwargs: Passed to the native ``run`` (``seeds``: one per image, ...).

        Returns:
            (N, 3, H, W) float32 adversarial examples in the clip range.
        """
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be (N, 3, H, W), got shape {x.shape}")
        low, high = self.clip_range
        if x.size and (x.min() < low or x.max() > high):
            raise ValueError(f"x must lie in the estimator's clip range [{low}, {high}]")
        classes = self._classes(y, x.shape[0])
        if classes is None and self.targeted:
            raise ValueError("y (the target classes) is required for a targeted attack")
        predicted = None
        if classes is None or self.targeted:
            # CAM maps the class the model sees; untargeted without y attacks the prediction.
            predicted = self.estimator.predict(x, batch_size=self.batch_size).argmax(axis=1)
        labels = predicted if predicted is not None else classes
        targets = classes if self.targeted else None
        seeds = kwargs.pop("seeds", None)
        native = self._native()
        device = self.estimator.device
        out = np.empty(x.shape, dtype=np.float32)
        for start in range(0, x.shape[0], self.batch_size):
            part = slice(start, start + self.batch_size)
            images = torch.as_tensor(x[part], dtype=torch.float32, device=device)
            images = ((images - low) / (high - low)).clamp(0, 1)
            adv = native.run(
                images,
                torch.as_tensor(labels[part], device=device),
                None if targets is None else torch.as_tensor(targets[part], device=device),
                seeds=None if seeds is None else list(seeds)[part],
                **kwargs,
            ).adv
            out[part] = (low + adv.detach() * (high - low)).cpu().numpy()
        return out


ATTACK_CLASSES: dict[str, type[SuperpixelEvasion]] = method_classes(
    SuperpixelEvasion, __name__, "an ART evasion attack"
)
"""The ART attack classes by method name."""
globals().update({cls.__name__: cls for cls in ATTACK_CLASSES.values()})

__all__ = ["ATTACK_CLASSES", "SuperpixelEvasion", *(c.__name__ for c in ATTACK_CLASSES.values())]
