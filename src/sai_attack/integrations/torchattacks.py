"""The superpixel attacks as ``torchattacks.Attack`` subclasses.

One class per superpixel method of :data:`sai_attack.attacks.ATTACKS` (``SAFGM``, ``SAIFGM``,
``MSAIFGM``), each taking the native class's keyword arguments and delegating to it, so the output
equals the native attack's for the same seed. The torchattacks protocol is kept: the call
``atk(images, labels)``, ``set_normalization_used`` (the attacked model then sees normalised
images, exactly as ``get_logits`` builds them), ``set_model_training_mode`` (the model's mode
during the attack is torchattacks' choice, not the native eval()), the ``set_mode_targeted_*``
modes, and use inside ``torchattacks.MultiAttack``.

Example:
    >>> import torchattacks  # doctest: +SKIP
    >>> from sai_attack.integrations.torchattacks import SAIFGM, MSAIFGM  # doctest: +SKIP
    >>> atk = SAIFGM(model, delta=4, steps=10, merge_beta=2)  # doctest: +SKIP
    >>> atk.set_normalization_used(mean=IMAGENET_MEAN, std=IMAGENET_STD)  # doctest: +SKIP
    >>> adv = atk(images, labels)  # doctest: +SKIP
    >>> both = torchattacks.MultiAttack([atk, MSAIFGM(model, delta=4)])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sai_attack import options
from sai_attack.attacks import Attack, AttackResult
from sai_attack.integrations import _adapter

try:
    from torchattacks.attack import Attack as TorchAttack
except ImportError as error:  # an optional extra: say which one
    raise _adapter.missing_extra(__name__, "torchattacks", "torchattacks") from error


class SuperpixelAttack(TorchAttack):
    """A superpixel attack of this library behind the torchattacks interface.

    Images are (B, 3, H, W) in [0, 1] (or normalised, after ``set_normalization_used``, as in
    torchattacks). The native attack's ``AttackResult`` of the last call (superpixels, mask) is
    :attr:`last`.

    Args:
        model: The classifier (any ``nn.Module`` torchattacks accepts).
        method: The superpixel method's name in :data:`~sai_attack.attacks.ATTACKS`; the
            per-method subclasses fix it.
        **kwargs: The native class's keyword arguments (``delta``, ``steps``, ``superpixel``,
            ``phi``, ``seed``, ...), except ``targeted``: use the ``set_mode_targeted_*``
            methods.
    """

    method: str = options.default("method")

    def __init__(self, model: nn.Module, method: str | None = None, **kwargs: Any) -> None:
        method = method if method is not None else type(self).method
        native_class = _adapter.superpixel_method(method)
        if "targeted" in kwargs:
            raise TypeError("targeted is not an argument here; use atk.set_mode_targeted_*()")
        super().__init__(native_class.title, model)
        self.method = method
        self.kwargs = dict(kwargs)
        self.supported_mode = ["default", "targeted"]
        self._native_class = native_class
        self._last: AttackResult | None = None
        self._native(targeted=False)  # check the arguments now, not at the first call

    @property
    def last(self) -> AttackResult | None:
        """The native ``AttackResult`` of the last call (``None`` before the first)."""
        return self._last

    def _model_input(self, images: torch.Tensor) -> torch.Tensor:
        # Exactly what ``get_logits`` feeds the model: normalised while __call__ has undone the
        # user's normalisation (``_normalization_applied is False``), else the images as given.
        if self._normalization_applied is False:
            return self.normalize(images)
        return images

    def _native(self, targeted: bool) -> Attack:
        # follow_mode=False: torchattacks already set the mode (set_model_training_mode).
        model = _adapter.InputAdapter(self.model, self._model_input, follow_mode=False)
        return self._native_class(model, targeted=targeted, **self.kwargs)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Adversarial images in [0, 1] for (B, 3, H, W) images in [0, 1].

        Args:
            images: The images (torchattacks' ``__call__`` has undone any normalisation).
            labels: (B,) true classes (the targets in ``targeted(label)`` mode); ``None`` attacks
                the model's predictions.
            **kwargs: Passed to the native ``run`` (``superpixels``, ``attention``, ``mask``,
                ``seeds``).

        Returns:
            The adversarial images, on the attack's device.
        """
        if self.device is not None:
            images = images.to(self.device)
        images = images.clone().detach()
        if self._normalization_applied is False:
            # Undoing the normalisation can round a hair outside [0, 1].
            images = images.clamp(0, 1)
        if labels is None:
            with torch.no_grad():
                labels = self.get_logits(images).argmax(dim=1)
        labels = labels.clone().detach().to(images.device)
        targets = self.get_target_label(images, labels) if self.targeted else None
        self._last = self._native(self.targeted).run(images, labels, targets, **kwargs)
        return self._last.adv


ATTACK_CLASSES: dict[str, type[SuperpixelAttack]] = _adapter.method_classes(
    SuperpixelAttack, __name__, "a ``torchattacks.Attack``"
)
"""The torchattacks classes by method name."""
globals().update({cls.__name__: cls for cls in ATTACK_CLASSES.values()})

__all__ = ["ATTACK_CLASSES", "SuperpixelAttack", *(c.__name__ for c in ATTACK_CLASSES.values())]
