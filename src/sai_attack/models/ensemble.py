"""An ensemble of white-box surrogates: one classifier whose logits are the members' mean.

Attacking several models at once is the ensemble transfer booster of Liu et al. ("Delving into
Transferable Adversarial Examples and Black-box Attacks", ICLR 2017) and Dong et al. (MI-FGSM,
CVPR 2018, "ensemble in logits"). The model name is the members' names joined by commas
(``efficientnet-lite0,efficientnet-lite1``); :func:`~sai_attack.models.zoo.load_model` builds
it. Every member resizes the images to its own input size, so members of different resolutions
combine; the attack resolution is the first member's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from sai_attack.models.wrapper import ImageClassifier

ENSEMBLE_SEPARATOR = ","


def ensemble_members(name: str) -> list[str] | None:
    """The member names of an ensemble name, or None for a single model.

    Raises:
        ValueError: An empty member (``a,,b``) or fewer than two members.
    """
    if ENSEMBLE_SEPARATOR not in name:
        return None
    members = [m.strip() for m in name.split(ENSEMBLE_SEPARATOR)]
    if len(members) < 2 or not all(members):
        raise ValueError(f"model ensemble {name!r} needs two or more names separated by commas")
    return members


def mean_logits(logits: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the members' (B, classes) logits.

    Raises:
        ValueError: The members' outputs differ in shape (other classes).
    """
    shapes = {tuple(t.shape) for t in logits}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members disagree on the output shape: {sorted(shapes)}")
    return torch.stack(logits).mean(dim=0)  # (B, classes)


class _MeanOfMembers(nn.Module):
    """The ensemble's network: [0, 1] images in, the members' mean logits out.

    The wrapper's normalisation is the identity (mean 0, std 1), so code that feeds the network
    directly (the normalisation probe of ``pipeline.sanity``) sees the members' own conventions.
    """

    def __init__(self, members: Sequence[ImageClassifier]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return mean_logits([m(images) for m in self.members])


class EnsembleClassifier(ImageClassifier):
    """Classifiers on [0, 1] images whose logits are averaged.

    The attention of the superpixel methods (CAM) is the first member's: its features and
    linear weights, with the ensemble's logits (:meth:`forward_features`), so the mask is the one
    the first model alone gives and only the gradient comes from the ensemble.

    Args:
        members: Two or more classifiers with the same classes.

    Raises:
        ValueError: Fewer than two members.
    """

    def __init__(self, members: Sequence[ImageClassifier]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more models, got {len(members)}")
        first = members[0]
        super().__init__(
            _MeanOfMembers(members),
            mean=0.0,
            std=1.0,
            input_size=first.input_size,
            name=ENSEMBLE_SEPARATOR.join(m.name for m in members),
            cpu_memory_format=first.cpu_memory_format,
        )
        self.members = list(members)

    @property
    def supports_cam(self) -> bool:
        """Whether the first member has exact CAM."""
        return self.members[0].supports_cam

    def to_memory_format(self, memory_format: str) -> EnsembleClassifier:
        """Run every member in ``memory_format``; returns the ensemble."""
        for m in self.members:
            m.to_memory_format(memory_format)
        self._memory_format = memory_format
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The mean of the members' (B, classes) logits (each resizes to its own size)."""
        return self.net(images)

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ensemble's logits and the first member's last convolutional features."""
        logits, features = self.members[0].forward_features(images)
        return mean_logits([logits, *(m(images) for m in self.members[1:])]), features

    def cam_weights(self) -> torch.Tensor:
        """The first member's (classes, C) linear weights."""
        return self.members[0].cam_weights()

    def extra_repr(self) -> str:
        """The members and the layout."""
        return f"members={self.name!r}, memory_format={self._memory_format}"


def load_ensemble(name: str, load: Callable[[str], ImageClassifier]) -> EnsembleClassifier:
    """The ensemble ``name`` (comma-separated), each member loaded with ``load``.

    Raises:
        ValueError: ``name`` is not an ensemble name (see :func:`ensemble_members`).
    """
    members = ensemble_members(name)
    if members is None:
        raise ValueError(f"model {name!r} is not an ensemble (names separated by commas)")
    return EnsembleClassifier([load(m) for m in members])
