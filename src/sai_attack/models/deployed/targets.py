"""Target specs: ``NAME[@key=value,...]`` parsed and loaded as a PyTorch or deployed model."""

from __future__ import annotations

import logging
import math
import os

import torch
from torch import nn

from sai_attack.models.deployed.onnx import ONNXModel
from sai_attack.models.deployed.tflite import TFLiteModel
from sai_attack.models.zoo import MODEL_PREFIXES, MODELS, load_model
from sai_attack.options import OPTIONS

logger = logging.getLogger(__name__)

DEPLOYED_PREFIXES = ("tflite:", "onnx:")
TARGET_OPTIONS = ("label-offset", "mean", "std", "size", "weights")


def split_target_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME[@key=value,...]`` into the name and its options.

    The part after the last ``@`` is read as options only when every comma-separated item is
    ``key=value`` with a known key, so paths containing ``@`` still work.

    Returns:
        ``(name, options)``.

    Raises:
        ValueError: An options part with an unknown key.
    """
    head, sep, tail = spec.rpartition("@")
    if not sep or not head:
        return spec, {}
    items = [item.strip() for item in tail.split(",")]
    if not all("=" in item for item in items):
        return spec, {}
    options: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip().lower().replace("_", "-")
        if key not in TARGET_OPTIONS:
            raise ValueError(
                f"unknown option {key!r} in target {spec!r}; options: {', '.join(TARGET_OPTIONS)}"
            )
        options[key] = value.strip()
    return head, options


def _parse_offset(value: str | int, spec: str) -> int | str:
    if value == "auto":
        return value
    try:
        offset = int(value)
    except ValueError:
        offset = -1
    if offset < 0:  # its upper bound is the model's output count, checked when it is read
        raise ValueError(
            f"label-offset of target {spec!r} must be 'auto' or an integer >= 0, got {value!r}"
        )
    return offset


def _parse_floats(value: str, key: str, spec: str) -> list[float]:
    try:
        values = [float(v) for v in value.split("/")]
    except ValueError:
        values = []
    if not all(math.isfinite(v) for v in values) or not values:
        raise ValueError(
            f"{key} of target {spec!r} must be a finite number or three separated by '/', "
            f"got {value!r}"
        )
    if len(values) not in (1, 3):
        raise ValueError(f"{key} of target {spec!r} must be one number or three, got {value!r}")
    return values


def _parse_size(value: str, spec: str) -> int:
    """The ``size`` option: an integer within the bounds of ``image_size`` (8..4096)."""
    low, high = int(OPTIONS["image_size"].low), int(OPTIONS["image_size"].high)
    try:
        size = int(value)
    except ValueError:
        size = None
    if size is None or not low <= size <= high:
        # Bounded like every image size: a huge one would allocate its input tensor.
        raise ValueError(
            f"size of target {spec!r} must be an integer in {low}..{high}, got {value!r}"
        )
    return size


def load_target(
    spec: str,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    label_offset: int | str = "auto",
) -> nn.Module:
    """Load a classifier to evaluate, by spec.

    Args:
        spec: A built-in model name, ``torchvision:<arch>`` / ``timm:<name>``, ``tflite:PATH`` or
            ``onnx:PATH``, optionally followed by ``@key=value,...`` options: ``label-offset``
            (``auto`` or an integer), ``mean`` and ``std`` (one number or three separated by
            ``/``, on the [0, 1] scale), ``size`` (ONNX files with a dynamic input size) and
            ``weights`` (PyTorch models).
        weights: Weights for a PyTorch model (the ``weights`` option takes precedence).
        device: Where PyTorch models run; deployed models run on the CPU and return scores on
            the device of their input.
        label_offset: Default label offset of deployed models (a ``label-offset`` option wins).

    Returns:
        An :class:`~sai_attack.models.ImageClassifier` or a
        :class:`~sai_attack.models.DeployedModel`, in eval mode.

    Raises:
        ValueError: Unknown spec or bad option.
        FileNotFoundError: A missing model file.
        ImportError: The optional interpreter is not installed.
    """
    name, options = split_target_spec(spec.strip())
    if name in MODELS or name.startswith(MODEL_PREFIXES):
        bad = sorted(set(options) - {"weights"})
        if bad:
            raise ValueError(
                f"option(s) {', '.join(bad)} of target {spec!r} apply to tflite:/onnx: targets only"
            )
        return load_model(name, options.get("weights", weights), device)
    if name.startswith(DEPLOYED_PREFIXES):
        kind, _, path = name.partition(":")
        if not path:
            raise ValueError(f"target {spec!r} lacks a file path after '{kind}:'")
        if "weights" in options:
            raise ValueError(f"option weights of target {spec!r} applies to PyTorch models only")
        kwargs: dict = {
            "label_offset": _parse_offset(options.get("label-offset", label_offset), spec)
        }
        for key in ("mean", "std"):
            if key in options:
                kwargs[key] = _parse_floats(options[key], key, spec)
        if "size" in options:
            if kind != "onnx":
                raise ValueError(
                    f"option size of target {spec!r} applies to onnx: targets only (TFLite files "
                    "fix their input size)"
                )
            kwargs["size"] = _parse_size(options["size"], spec)
        model = TFLiteModel(path, **kwargs) if kind == "tflite" else ONNXModel(path, **kwargs)
        logger.info(
            "loaded %s: input %s %s, label offset %d",
            model.name,
            model.input_size,
            model.input_dtype,
            model.label_offset,
        )
        return model.eval()
    raise ValueError(
        f"unknown target {name!r}; choose one of {', '.join(MODELS)}, torchvision:<arch> / "
        "timm:<name> with weights, tflite:PATH or onnx:PATH"
    )
