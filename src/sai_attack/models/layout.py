"""Which memory layout a classifier's network runs in: ``memory_format`` auto, measured.

``contiguous`` is PyTorch's default layout (the exact computation of versions before the option
existed); ``channels_last`` runs the convolutions on NHWC tensors. On this project's CPU a
forward+backward pass of EfficientNet-Lite0 takes about 0.55-0.75 x the time channels-last
(oneDNN's depthwise and 1x1 kernels are written for NHWC), with gradients equal up to float
reordering. ``auto`` takes a built-in model's measured CPU layout, and otherwise times a few
forward+backward passes of the model in both layouts and keeps channels-last only when it is
clearly faster and gives the same logits (up to rounding); every decision is logged.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from sai_attack import options
from sai_attack.models.wrapper import MEMORY_FORMATS, ImageClassifier

logger = logging.getLogger(__name__)

AUTO = "auto"
options.register_choices("memory_format", (AUTO, *MEMORY_FORMATS))

PROBE_BATCH = 2
"""Largest batch of the ``auto`` measurement: 3 passes in each layout, so that loading a model
costs little (about 1 s for a ResNet-18 on this project's CPU); the run's batch when smaller."""
MIN_GFLOP = 0.1
"""Models whose forward pass costs less per image (counted, not timed) stay in the default layout
without a measurement: the layout cannot save much there, and timing such short passes on a busy
machine decides at random (and the choice changes the results by rounding)."""
MIN_SPEEDUP = 0.9
"""Channels-last is kept only below this fraction of the default layout's time, so that machine
noise does not decide between two layouts of about equal speed."""
LOGIT_TOLERANCE = 1e-3
"""Largest logit difference between the layouts, relative to the largest logit, that counts as
rounding; a network whose outputs change more (a custom op that assumes the default layout) stays
in the default layout."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(model: ImageClassifier) -> torch.device:
    return model.mean.device


FLOOR_PASSES = 7
"""Passes timed for a floor of ``bench`` (its median is the floor; single passes spread widely)."""


def forward_backward_times(
    model: ImageClassifier, images: torch.Tensor, reps: int = 2
) -> tuple[list[float], torch.Tensor]:
    """The seconds of ``reps`` forward+backward passes after a warm-up pass, and its logits.

    The gradient is taken w.r.t. the input only, as in an attack.

    Args:
        model: The classifier, in the layout to time.
        images: (B, 3, H, W) in [0, 1].
        reps: Timed passes.

    Returns:
        ``(seconds, logits)``: one time per timed pass; logits (B, num_classes), detached.
    """
    device = images.device
    labels = torch.zeros(images.shape[0], dtype=torch.long, device=device)
    times: list[float] = []
    logits = None
    for i in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        x = images.clone().requires_grad_(True)
        out = model(x)
        torch.autograd.grad(F.cross_entropy(out, labels, reduction="sum"), x)
        _sync(device)
        if i == 0:
            logits = out.detach()
        else:
            times.append(time.perf_counter() - t0)
    assert logits is not None
    return times, logits


def forward_backward_seconds(
    model: ImageClassifier, images: torch.Tensor, reps: int = 2
) -> tuple[float, torch.Tensor]:
    """The fastest of ``reps`` forward+backward passes after a warm-up pass, and its logits.

    See :func:`forward_backward_times`; the fastest pass compares layouts least noisily.
    """
    times, logits = forward_backward_times(model, images, reps)
    return min(times), logits


def measure_memory_formats(
    model: ImageClassifier,
    batch_size: int = PROBE_BATCH,
    image_size: int | None = None,
) -> dict[str, float]:
    """Seconds per forward+backward pass of a batch in each layout (model left in its layout).

    Args:
        model: The classifier.
        batch_size: Images per pass.
        image_size: Side of the square test images (default: the model's, else 224).

    Returns:
        Seconds by layout name, for the layouts timed; a layout whose logits differ from the
        default layout's by more than :data:`LOGIT_TOLERANCE` is left out (with a warning).

    Raises:
        RuntimeError: The network fails in a layout.
    """
    size = image_size or model.input_size or 224
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, size, size, generator=generator).to(_device(model))
    original = model.memory_format
    seconds, reference = {}, None
    try:
        for name in MEMORY_FORMATS:  # the default layout first: the reference
            model.to_memory_format(name)
            seconds[name], logits = forward_backward_seconds(model, images)
            if reference is None:
                reference = logits
            elif (logits - reference).abs().max() > LOGIT_TOLERANCE * reference.abs().max():
                logger.warning(
                    "memory_format %s changes the logits of %s by %.3g; not using it",
                    name, model.name, float((logits - reference).abs().max()),
                )  # fmt: skip
                del seconds[name]
    finally:
        model.to_memory_format(original)
    return seconds


def forward_gflop(model: ImageClassifier, image_size: int | None = None) -> float:
    """GFLOP of one image's forward pass (``torch.utils.flop_counter``: convolutions, matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = image_size or model.input_size or 224
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=_device(model)))
    return counter.get_total_flops() / 1e9


def _measured_choice(model: ImageClassifier, batch_size: int, image_size: int | None) -> str:
    gflop = forward_gflop(model, image_size)
    if gflop < MIN_GFLOP:
        logger.info(
            "memory_format auto: contiguous for %s (%.3f GFLOP per image, too small to matter)",
            model.name, gflop,
        )  # fmt: skip
        return "contiguous"
    batch = min(batch_size, PROBE_BATCH)
    try:
        seconds = measure_memory_formats(model, batch, image_size)
    except RuntimeError as exc:  # an op of the network that refuses the other layout
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.warning("memory_format auto: contiguous for %s (channels_last failed: %s)",
                       model.name, first)  # fmt: skip
        return "contiguous"
    fast = seconds.get("channels_last", float("inf")) < MIN_SPEEDUP * seconds["contiguous"]
    choice = "channels_last" if fast else "contiguous"
    measured = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in seconds.items())
    logger.info(
        "memory_format auto: %s for %s on %s (%s; forward+backward of %d images: %s)",
        choice, model.name, _device(model).type,
        "faster" if fast else f"channels_last not below {MIN_SPEEDUP:g} x", batch, measured,
    )  # fmt: skip
    return choice


def resolve_memory_format(
    model: ImageClassifier,
    memory_format: str = AUTO,
    batch_size: int = PROBE_BATCH,
    image_size: int | None = None,
) -> str:
    """The layout ``memory_format`` means for ``model`` on its current device.

    ``auto`` is the model's :attr:`~ImageClassifier.cpu_memory_format` on the CPU when it has
    one; otherwise a measurement (:func:`measure_memory_formats` on up to :data:`PROBE_BATCH`
    images). The decision is logged and remembered per device type in
    :attr:`~ImageClassifier.memory_format_decisions`, so a model is measured (and the decision
    logged) once.

    Raises:
        ValueError: An unknown ``memory_format``.
    """
    options.check("memory_format", memory_format)
    if memory_format != AUTO:
        return memory_format
    device = _device(model).type
    if device in model.memory_format_decisions:
        return model.memory_format_decisions[device]
    if device == "cpu" and model.cpu_memory_format is not None:
        logger.info(
            "memory_format auto: %s for %s on the CPU (measured for this model)",
            model.cpu_memory_format, model.name,
        )  # fmt: skip
        model.memory_format_decisions[device] = model.cpu_memory_format
    else:
        original = model.memory_format
        try:
            model.memory_format_decisions[device] = _measured_choice(model, batch_size, image_size)
        finally:
            model.to_memory_format(original)
    return model.memory_format_decisions[device]


def use_memory_format(
    model: ImageClassifier,
    memory_format: str = AUTO,
    batch_size: int = PROBE_BATCH,
    image_size: int | None = None,
) -> ImageClassifier:
    """Put ``model`` (already on its device) in the layout ``memory_format`` resolves to.

    Args:
        model: The classifier.
        memory_format: ``auto``, ``contiguous`` or ``channels_last``.
        batch_size: The run's batch size (the ``auto`` measurement uses up to
            :data:`PROBE_BATCH` images).
        image_size: The run's image size (default: the model's input size, else 224).

    Returns:
        The model itself.
    """
    return model.to_memory_format(
        resolve_memory_format(model, memory_format, batch_size, image_size)
    )
