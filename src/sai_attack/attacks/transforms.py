"""Transforms inside the attack objective: defenses seen through (EoT), DI and TI.

An attack with transforms ascends the loss of ``model(T(x_adv))`` instead of ``model(x_adv)``,
where ``T`` is a chain of :class:`InputTransform` objects; every step's gradient is the mean
over ``samples`` (K) draws of the random ones (Expectation over Transformation, Athalye et al.,
ICML 2018). The gradient w.r.t. the attack variable follows from the pixel gradient as always,
so the transforms act on the noise vector of a superpixel space as on the pixels of a pixel
space, for every optimiser and norm. Three transforms:

- :class:`DefenseSampler`: a defense drawn per image (EoT against a preprocessing defense).
  The defenses are injected objects (``attacks`` does not import ``defenses``) with the
  :class:`DefenseLike` protocol; each passes the gradient it states (true, approximate, BPDA).
- :class:`InputDiversity` (DI, Xie et al., CVPR 2019): random resize and pad.
- :class:`TranslationInvariance` (TI, Dong et al., CVPR 2019): identity forward, the pixel
  gradient smoothed with a Gaussian kernel backward.

Draws come from one generator per image, seeded from that image's seed, and every image draws
the same numbers however the images are batched: results do not depend on the batch size.
Without transforms the attack is exactly the plain attack (the chain is not even entered).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from sai_attack import options
from sai_attack.attacks.spaces import Bound, Objective
from sai_attack.runtime import image_seed

Generators = Sequence[torch.Generator]
"""One random generator per image of the batch."""


class DefenseLike(Protocol):
    """What :class:`DefenseSampler` needs of a defense (``sai_attack.defenses.Defense`` has it)."""

    spec: str
    gradient: str
    randomized: bool

    def with_gradient(
        self, images: torch.Tensor, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """The defended (B, 3, H, W) images, differentiable with the gradient it states."""
        ...


def _draw(generator: torch.Generator, high: int) -> int:
    """A uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=generator))


class InputTransform:
    """A transformation of the adversarial images (B, 3, H, W) before the model.

    Subclasses implement :meth:`__call__`; it must be differentiable and treat every image on
    its own, drawing its randomness only from that image's generator.
    """

    name = "transform"
    randomized = False
    """Whether the output depends on the generators (then K samples differ)."""

    def __call__(self, x: torch.Tensor, generators: Generators) -> torch.Tensor:
        """The transformed images (B, 3, H, W)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The settings under their option names, for summaries."""
        return {}

    def text(self) -> str:
        """One phrase for ``summary.json``'s protocol."""
        return self.name


class DefenseSampler(InputTransform):
    """EoT over defenses: each image goes through a defense drawn at random.

    A draw picks a group uniformly, then one of its defenses uniformly (``resize:1..3`` and
    ``jpeg:30..90`` are equally likely although the second has 61 values), and a seed for
    randomised defenses (TVM's dropout). The defense's forward value is exact; its gradient is
    the one it states (:attr:`DefenseLike.gradient`).

    Args:
        groups: Non-empty groups of defenses (one group per spec).
        spec: The specs as written (``"resize:1..3 jpeg:30..90"``), for the run record.
    """

    name = "eot"
    randomized = True

    def __init__(self, groups: Sequence[Sequence[DefenseLike]], spec: str | None = None) -> None:
        self.groups = [list(g) for g in groups]
        if not self.groups or not all(self.groups):
            raise ValueError("eot needs at least one defense in every group")
        self.spec = spec or " ".join(d.spec for g in self.groups for d in g)
        single = len(self.groups) == 1 and len(self.groups[0]) == 1
        self.randomized = not single or self.groups[0][0].randomized

    def __call__(self, x: torch.Tensor, generators: Generators) -> torch.Tensor:
        """Apply each image's drawn defense (images drawing the same one in one call)."""
        picks = []
        for g in generators:
            group = _draw(g, len(self.groups))
            picks.append((group, _draw(g, len(self.groups[group])), _draw(g, 2**62)))
        chosen = list(dict.fromkeys((group, k) for group, k, _ in picks))
        if len(chosen) == 1:  # the common case: no gathering, the batch as it is
            group, k = chosen[0]
            return self.groups[group][k].with_gradient(x, [s for _, _, s in picks])
        out: list[torch.Tensor | None] = [None] * x.shape[0]
        for group, k in chosen:
            index = [i for i, p in enumerate(picks) if p[:2] == (group, k)]
            defended = self.groups[group][k].with_gradient(x[index], [picks[i][2] for i in index])
            for j, i in enumerate(index):
                out[i] = defended[j]
        return torch.stack(out)  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        """``eot``: the specs."""
        return {"eot": self.spec}

    def text(self) -> str:
        """The defenses and the gradient each passes."""
        kinds = dict.fromkeys(f"{d.spec.partition(':')[0]}: {d.gradient}"
                              for g in self.groups for d in g)  # fmt: skip
        return f"EoT over {self.spec} ({', '.join(kinds)})"


class InputDiversity(InputTransform):
    """Input diversity: with probability ``p`` an image is resized to a random size and padded.

    Xie et al., "Improving Transferability of Adversarial Examples with Input Diversity", CVPR
    2019. As TransferAttack's DIM: a side ``r`` uniform in ``[S, ratio * S)`` (bilinear),
    zero padding at a random offset to ``ratio * S``, then bilinear resizing back to ``S`` so
    that the batch keeps its size. The coin is per image (Xie et al. toss one per batch), so
    results do not depend on the batch. ``p = 0`` leaves every image untouched.

    Args:
        p: Probability of transforming an image, in [0, 1].
        ratio: The padded size as a multiple of the image size, in (1, 2] (Xie et al.:
            330 / 299, about 1.1).
    """

    name = "input_diversity"
    randomized = True

    def __init__(
        self,
        p: float = 0.5,
        ratio: float = options.default("diversity_ratio"),
    ) -> None:
        self.p = options.check("input_diversity", p)
        self.ratio = options.check("diversity_ratio", ratio)

    def _one(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        big_h, big_w = (max(n + 1, math.floor(n * self.ratio)) for n in (h, w))
        apply = float(torch.rand((), generator=g)) < self.p
        side_h = h + _draw(g, big_h - h)
        side_w = side_h if h == w else w + _draw(g, big_w - w)  # square images stay square
        top, left = _draw(g, big_h - side_h + 1), _draw(g, big_w - side_w + 1)
        if not apply:
            return x
        small = F.interpolate(x, size=(side_h, side_w), mode="bilinear", align_corners=False)
        padded = F.pad(small, (left, big_w - side_w - left, top, big_h - side_h - top))
        return F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False)

    def __call__(self, x: torch.Tensor, generators: Generators) -> torch.Tensor:
        """Each image resized and padded with probability ``p``."""
        if self.p == 0:
            return x
        return torch.cat([self._one(x[i : i + 1], g) for i, g in enumerate(generators)])

    def describe(self) -> dict[str, Any]:
        """``input_diversity`` and ``diversity_ratio``."""
        return {"input_diversity": self.p, "diversity_ratio": self.ratio}

    def text(self) -> str:
        """DI with its probability and ratio."""
        return f"DI (p {self.p:g}, ratio {self.ratio:g})"


def gaussian_kernel(size: int) -> torch.Tensor:
    """TI's (size, size) float64 kernel, summing to 1.

    The outer product of the normal density on ``linspace(-3, 3, size)``, normalised: Dong et
    al.'s ``gkern(kernlen, nsig=3)``.
    """
    t = torch.linspace(-3.0, 3.0, size, dtype=torch.float64)
    k1 = torch.exp(-0.5 * t * t)
    k2 = torch.outer(k1, k1)
    return k2 / k2.sum()


class _SmoothGradient(torch.autograd.Function):
    """Identity forward; backward convolves the gradient with a kernel, per channel."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (kernel,) = ctx.saved_tensors
        c, k = grad.shape[1], kernel.shape[-1]
        weight = kernel.to(grad).expand(c, 1, k, k)
        return F.conv2d(grad, weight, padding=k // 2, groups=c), None


class TranslationInvariance(InputTransform):
    """Translation invariance: the pixel gradient convolved with a Gaussian kernel.

    Dong et al., "Evading Defenses to Transferable Adversarial Examples by Translation-Invariant
    Attacks", CVPR 2019. The forward pass is the identity; the backward pass smooths the
    gradient w.r.t. the adversarial image channel by channel (zero padding, as
    ``tf.nn.depthwise_conv2d`` with ``SAME``), before it reaches the attack variable: the noise
    vector of a superpixel space gets the sums of smoothed pixel gradients. Put it first in a
    chain, so that it smooths the gradient through the other transforms.

    Args:
        kernel_size: Odd kernel side >= 1 (Dong et al.: 15 on 299 x 299 images; 1 is the
            identity).
    """

    name = "translation_invariance"

    def __init__(self, kernel_size: int = 15) -> None:
        size = options.check("translation_invariance", kernel_size)
        if size % 2 == 0:
            raise ValueError(
                f"translation_invariance must be an odd kernel size (0 turns TI off), got {size}"
            )
        self.kernel_size = size
        self.kernel = gaussian_kernel(size).view(1, 1, size, size)

    def __call__(self, x: torch.Tensor, generators: Generators) -> torch.Tensor:
        """``x`` itself, with the smoothing backward."""
        return _SmoothGradient.apply(x, self.kernel)

    def describe(self) -> dict[str, Any]:
        """``translation_invariance``: the kernel size."""
        return {"translation_invariance": self.kernel_size}

    def text(self) -> str:
        """TI with its kernel size."""
        return f"TI (Gaussian kernel {self.kernel_size}, gradient smoothed)"


class Transforms:
    """The chain an attack applies before its model, and the samples K per step.

    Args:
        transforms: Applied in order (TI first, then defenses, then DI is the usual chain).
        samples: K, the number of draws averaged per step (``eot_samples``); a chain without
            random transforms is evaluated once whatever K is.
    """

    def __init__(
        self,
        transforms: Sequence[InputTransform] = (),
        samples: int = options.default("eot_samples"),
    ) -> None:
        for t in transforms:
            if not isinstance(t, InputTransform):
                raise TypeError(
                    f"transforms must be InputTransform objects, got {type(t).__name__}"
                )
        self.chain = list(transforms)
        self.samples = options.check("eot_samples", samples)

    @property
    def draws(self) -> int:
        """The forward and backward passes per step: K, or 1 for a deterministic chain."""
        return self.samples if any(t.randomized for t in self.chain) else 1

    def bind(self, seeds: Sequence[int]) -> BoundTransforms:
        """The chain for a batch whose images have these seeds."""
        generators = [torch.Generator().manual_seed(image_seed(s, "input transforms"))
                      for s in seeds] if self.chain else []  # fmt: skip
        return BoundTransforms(self, generators)

    def describe(self) -> dict[str, Any]:
        """The transforms' settings under their option names ({} without transforms)."""
        if not self.chain:
            return {}
        described: dict[str, Any] = {"eot_samples": self.samples}
        for t in self.chain:
            described.update(t.describe())
        return described

    def text(self) -> str:
        """The chain in words, for ``summary.json``'s protocol."""
        if not self.chain:
            return "none: the gradient of the model on the adversarial image"
        where = " -> ".join(t.text() for t in self.chain)
        return (f"{where} -> model; each step's gradient is the mean over {self.draws} "
                "draw(s); the saved PNG is evaluated without them")  # fmt: skip


class BoundTransforms:
    """A chain bound to a batch's generators: the gradient of the attack loop."""

    def __init__(self, transforms: Transforms, generators: list[torch.Generator]) -> None:
        self.transforms, self.generators = transforms, generators

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """One draw of the chain on (B, 3, H, W) images."""
        for t in self.transforms.chain:
            x = t(x, self.generators)
        return x

    def gradient(self, space: Bound, v: torch.Tensor, objective: Objective) -> torch.Tensor:
        """``space``'s gradient at ``v`` of ``objective`` after the chain, averaged over K draws.

        Without transforms this is ``space.gradient(v, objective)`` itself. The draws are
        separate backward passes (memory of one), summed and divided by K once.
        """
        if not self.transforms.chain:
            return space.gradient(v, objective)
        total: torch.Tensor | None = None
        draws = self.transforms.draws
        for _ in range(draws):
            grad = space.gradient(v, lambda x: objective(self.apply(x)))
            total = grad if total is None else total + grad
        assert total is not None
        return total if draws == 1 else total / draws
