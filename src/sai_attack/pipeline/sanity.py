"""The first labelled images of a run check that the model is fed what it expects.

A model wrapped with the wrong input normalisation, or labels in another class numbering, make
every success rate of a run meaningless, and nothing fails: the attack still runs. So once per
run, on the first :data:`CHECK_IMAGES` labelled images (within the first batch at the default
batch size), :func:`check_first_labelled` runs the network, without gradients, on the same
images under each input convention of :data:`CONVENTIONS` (the ones the built-in and deployed
models use) and warns, naming the likely cause:

- **Clean accuracy below 50%** (:func:`clean_accuracy_problem`; a working ImageNet model gets
  70-90%): labels offset by one against the model's classes (the predictions equal label + 1 or
  - 1), an input convention under which the network does get most images right, labels beyond
  the model's classes, else the things to check.
- **A convention that fits clearly better** (:func:`better_convention`), even when the accuracy
  as given looks fine: EfficientNet-Lite0 fed [0, 1] input instead of its ``(255 x - 127) / 128``
  still gets 78% of the first 32 nips17-dev images right (against 91%), so accuracy alone cannot
  tell. On 16 images the gain is 2 or 3 images (12-19 points), within the noise of 16 outcomes,
  while the probability the network gives the true class rises on 13 to 15 of them. A convention
  is named when, on the checked images, it

  1. gets strictly more images right than the model as given (never point to one that gets
     fewer right, and a convention that only sharpens the logits, like a contrast change, gets
     no more right);
  2. raises the log-probability of the true class on significantly more images than it lowers
     it: exact one-sided sign test, p below :data:`ALPHA` divided by the number of conventions
     tried (Bonferroni: at most a 5% chance per run that an equally good convention is named);
  3. raises the mean log-probability of the true class by at least :data:`MIN_GAIN` nats per
     image (the effect is not negligible).

  For Lite0 fed [0, 1] input, [-1, 1] input does all three on every 16-image block of the first
  64 nips17-dev images (+0.30 to +0.62 nats; sign test p = 2.6e-4 to 0.011 against a threshold of
  0.017); for Lite0 as built, no convention raises the true class on more than 6 of 16 images.

Conventions within :data:`SAME_TOLERANCE` of the model's own normalisation are not tried (the
Lite models' ``(255 x - 127) / 128`` is [-1, 1] input to 0.4%). The check costs one forward pass
of the network per convention on the checked images (4 for a Lite model: as many as the clean
pass of 4 batches), once per run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sai_attack.models import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from sai_attack.report import mcnemar_exact

logger = logging.getLogger(__name__)

CHECK_IMAGES = 8
"""Labelled images the check waits for (within the first batch at the default batch size); a run
with fewer labelled images is too small to tell and is not checked."""
LOW_ACCURACY = 0.5
"""Below this clean accuracy a run warns whatever the cause."""
ALPHA = 0.05
"""Family-wise level of the sign tests over the conventions tried."""
MIN_GAIN = 0.1
"""Least mean gain in the true class's log-probability (nats per image) worth a warning."""
UNREACHABLE = -1e4
"""The log-probability of a class the network cannot output (finite, so that gains subtract)."""
SAME_TOLERANCE = (0.02, 0.05)
"""A convention counts as the model's own when every channel's mean differs by at most 0.02 and
every std by at most 5% (log ratio)."""


@dataclass(frozen=True)
class Convention:
    """An input convention: the network is fed ``(x - mean) / std`` for ``x`` in [0, 1]."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _triplet(value: float | Sequence[float]) -> tuple[float, float, float]:
    values = (value,) * 3 if isinstance(value, int | float) else tuple(value)
    return tuple(float(v) for v in values)  # type: ignore[return-value]


CONVENTIONS = (
    # torchvision and timm models
    Convention("ImageNet mean/std", _triplet(IMAGENET_MEAN), _triplet(IMAGENET_STD)),
    # EfficientNet-Lite ((255 x - 127) / 128), TensorFlow/Keras "tf" preprocessing
    Convention("[-1, 1] input (mean 0.5, std 0.5)", _triplet(0.5), _triplet(0.5)),
    Convention("[0, 1] input (no normalisation)", _triplet(0.0), _triplet(1.0)),
    # models fed 8-bit pixel values (integer TFLite models, some Caffe ports)
    Convention("[0, 255] input (mean 0, std 1/255)", _triplet(0.0), _triplet(1.0 / 255.0)),
)
"""The input conventions the check tries."""

LABEL_OFFSETS = (
    (1, "the labels are 1-based (a 1001-class list with background at 0?)"),
    (-1, "the model has an extra class 0 (background) the labels lack"),
)
"""Label shifts the low-accuracy check tries: prediction = label - shift."""


@dataclass(frozen=True)
class Probe:
    """The network's outcome on the checked images under one convention.

    Attributes:
        convention: The convention (the model's own for the model as given).
        hits: Images whose true class is the top prediction.
        log_p: (n,) log-probability of each image's true class.
    """

    convention: Convention
    hits: int
    log_p: torch.Tensor

    def against(self, given: Probe) -> tuple[int, int, float, float]:
        """``(up, down, one-sided sign-test p, mean gain in nats)`` of this probe over ``given``."""
        gain = self.log_p - given.log_p  # (n,)
        up, down = int((gain > 0).sum()), int((gain < 0).sum())
        # The sign test is the exact paired binomial test of report.mcnemar_exact, one-sided.
        p = mcnemar_exact(up, down) / 2 if up > down else 1.0
        return up, down, p, float(gain.mean())


def _same(a: Convention, b: Convention) -> bool:
    mean_tol, std_tol = SAME_TOLERANCE
    return all(abs(x - y) <= mean_tol for x, y in zip(a.mean, b.mean, strict=True)) and all(
        abs(math.log(x / y)) <= std_tol for x, y in zip(a.std, b.std, strict=True)
    )


def _own(model: ImageClassifier) -> Convention:
    mean, std = (_triplet(t.flatten().tolist()) for t in (model.mean, model.std))
    return Convention("as given", mean, std)


def probe_conventions(
    model: ImageClassifier, x: torch.Tensor, labels: Sequence[int]
) -> tuple[Probe, list[Probe]]:
    """The model as given and under each other convention of :data:`CONVENTIONS`.

    One forward pass of the network per convention on the checked images, without gradients.

    Args:
        model: The attacked model.
        x: (n, 3, H, W) images in [0, 1].
        labels: Their true classes.

    Returns:
        ``(given, probes)``: the model's own normalisation, and the conventions that differ from
        it (:data:`SAME_TOLERANCE`).
    """
    own = _own(model)
    y = torch.as_tensor(list(labels), dtype=torch.long, device=x.device)
    rows = torch.arange(len(y), device=x.device)
    with torch.no_grad():
        resized = model.preprocess(x) * model.std + model.mean  # (n, 3, S, S) in [0, 1]

        def probe(convention: Convention) -> Probe:
            m, s = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                    for v in (convention.mean, convention.std))  # fmt: skip
            logits = model.net((resized - m) / s).float()  # (n, K)
            # A label beyond the classes is never right: it gets the lowest log-probability.
            valid = (y >= 0) & (y < logits.shape[1])
            log_p = torch.full((len(y),), UNREACHABLE, device=x.device)
            log_p[valid] = torch.log_softmax(logits, dim=1)[rows[valid], y[valid]]
            hits = int((logits.argmax(dim=1) == y).sum())
            return Probe(convention, hits, log_p.clamp(min=UNREACHABLE).cpu())

        given = probe(own)
        probes = [probe(c) for c in CONVENTIONS if not _same(c, own)]
    return given, probes


def _normalisation_text(model: ImageClassifier) -> str:
    own = _own(model)
    mean, std = (", ".join(f"{v:.3g}" for v in values) for values in (own.mean, own.std))
    return f"the model normalises with mean ({mean}), std ({std})"


def better_convention(given: Probe, probes: Sequence[Probe]) -> str | None:
    """The convention that fits the labels clearly better than the model as given, if any.

    See the module docstring for the three conditions and why.

    Returns:
        What it found, for a warning, or None.
    """
    n = len(given.log_p)
    threshold = ALPHA / max(1, len(probes))
    fits = []
    for probe in probes:
        up, _, p, gain = probe.against(given)
        if probe.hits > given.hits and p < threshold and gain >= MIN_GAIN:
            fits.append((gain, up, p, probe))
    if not fits:
        return None
    gain, up, p, probe = max(fits, key=lambda f: f[0])  # the largest gain
    return (
        f"with {probe.convention.name} the network gets {probe.hits}/{n} of these images right "
        f"(clean accuracy as given: {given.hits}/{n}) and gives the true class a higher "
        f"probability on {up}/{n} of them (sign test p = {p:.2g} < {threshold:.2g}; "
        f"+{gain:.2f} nats per image)"
    )


def _hits(pred: Sequence[int], labels: Sequence[int], shift: int = 0) -> int:
    return sum(p == t - shift for p, t in zip(pred, labels, strict=True))


def clean_accuracy_problem(
    model: ImageClassifier,
    x: torch.Tensor,
    pred: list[int],
    labels: list[int],
    probes: tuple[Probe, list[Probe]] | None = None,
) -> str | None:
    """Why a model's clean accuracy on labelled images is below 50%, or None when it is not.

    Args:
        model: The attacked model.
        x: The (B, 3, H, W) images in [0, 1].
        pred: The model's clean predictions of ``x``.
        labels: Their labels.
        probes: :func:`probe_conventions` of these images, when already computed.

    Returns:
        A warning naming the likely cause: labels offset by one against the model's classes,
        an input convention (range, mean/std) under which the network does get them right, or
        labels outside the model's classes; else the things to check.
    """
    n, hits = len(labels), _hits(pred, labels)
    if n == 0 or hits >= LOW_ACCURACY * n:
        return None
    cause = None
    for shift, meaning in LABEL_OFFSETS:
        shifted = _hits(pred, labels, shift)
        if shifted >= LOW_ACCURACY * n:
            cause = f"label offset: {shifted}/{n} predictions equal label {-shift:+d}; {meaning}"
            break
    if cause is None:
        _, others = probes if probes is not None else probe_conventions(model, x, labels)
        best = max(others, key=lambda p: p.hits, default=None)
        if best is not None and best.hits >= LOW_ACCURACY * n:
            cause = (
                f"input normalisation: with {best.convention.name} the network gets "
                f"{best.hits}/{n} of these images right; {_normalisation_text(model)}"
            )
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    if cause is None and max(labels) >= classes:
        cause = f"labels up to {max(labels)} for a model with {classes} classes: another label set"
    if cause is None:
        cause = (
            "the input range or normalisation (the model takes RGB in [0, 1] and normalises it "
            "itself), or labels that are not the model's 0-based class indices"
        )
    return (
        f"clean accuracy on the first {n} labelled images is {hits / n:.0%} ({hits}/{n}), "
        f"below {LOW_ACCURACY:.0%}: success rates will rest on few images. "
        f"Likely cause: {cause}"
    )


def check_first_labelled(
    model: ImageClassifier, x: torch.Tensor, pred: list[int], labels: list[int]
) -> list[str]:
    """Check a run's first labelled images and log a warning for each problem found.

    Args:
        model: The attacked model.
        x: (n, 3, H, W) images in [0, 1], n >= :data:`CHECK_IMAGES` (fewer are not checked).
        pred: The model's clean predictions of ``x``.
        labels: Their labels.

    Returns:
        The warnings logged (at most one: a clean accuracy below 50% with its cause, else a
        better-fitting input convention).
    """
    if len(labels) < CHECK_IMAGES:
        return []
    probes = probe_conventions(model, x, labels)
    problem = clean_accuracy_problem(model, x, pred, labels, probes)
    if problem is None:
        better = better_convention(*probes)
        if better is not None:
            problem = (
                f"input normalisation looks wrong: {better}; {_normalisation_text(model)}. "
                "Success rates measured with the wrong normalisation describe another model"
            )
    if problem is None:
        return []
    logger.warning("model %s: %s", model.name, problem)
    return [problem]
